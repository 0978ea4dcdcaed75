"""Use cases of the orders service. Each takes the connection and never commits."""

from . import (
    catalog,
    invites,
    lifecycle,
    payment_outcome,
    purchase,
    refund_outcome,
    registrations,
    views,
)

__all__ = [
    "catalog",
    "invites",
    "lifecycle",
    "payment_outcome",
    "purchase",
    "refund_outcome",
    "registrations",
    "views",
]
