"""The embedded local stack: process runner, dev keys and tokens, SMTP sink."""
