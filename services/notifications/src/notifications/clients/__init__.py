"""External systems the notifications service talks to."""
