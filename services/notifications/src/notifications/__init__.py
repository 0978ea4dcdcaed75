"""The notifications service: e-mails to buyers, driven by the other services' events."""
