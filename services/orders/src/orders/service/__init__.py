"""Use cases of the orders service. Each takes the connection and never commits."""

from . import catalog, invites, lifecycle, purchase, registrations, views

__all__ = ["catalog", "invites", "lifecycle", "purchase", "registrations", "views"]
