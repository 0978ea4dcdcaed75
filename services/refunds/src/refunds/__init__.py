"""The refunds service."""
