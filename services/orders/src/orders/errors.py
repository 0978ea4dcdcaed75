"""Every problem the orders service answers with, one class per ``code`` (RFC 9457 bodies are
built from them by ``ticketing_shared.errors``)."""

from __future__ import annotations

from ticketing_shared.errors import Conflict, DomainError, Unprocessable


class IllegalTransition(Conflict):
    code, title = "illegal_transition", "Illegal state transition"

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(
            f"{entity} cannot go from {current} to {target}", current=current, target=target
        )
        self.entity, self.current, self.target = entity, current, target


# --------------------------------------------------------------------------------- the catalog
class InvalidPolicy(Unprocessable):
    code, title = "invalid_policy", "This cancellation policy is not valid"


class UnpaidLimitBelowLargestTier(Unprocessable):
    code, title = "unpaid_limit_below_largest_tier", "The unpaid limit must allow the largest tier"


class MaxQuantityBelowTaken(Conflict):
    code, title = "max_quantity_below_taken", "More seats are taken than this would allow"


# ---------------------------------------------------------------------------------- purchasing
class QuantityNotAllowed(Unprocessable):
    code, title = "quantity_not_allowed", "No price for this quantity"


class InventoryExhausted(Conflict):
    code, title = "inventory_exhausted", "Not enough seats left"


class UnpaidLimitReached(Conflict):
    code, title = "unpaid_limit_reached", "Too many unpaid seats"


class AlreadyRegistered(Conflict):
    code, title = "already_registered", "Already registered"


class CatalogChanged(Conflict):
    code, title = "catalog_changed", "The ticket type is being changed: try again"


# ------------------------------------------------------------------------- orders, concurrency
class OrderChanged(Conflict):
    code, title = "order_changed", "The order changed concurrently"


class RegistrationChanged(Conflict):
    code, title = "registration_changed", "The registration changed concurrently"


class OrderNotPending(Conflict):
    code, title = "order_not_pending", "Only a pending order can be cancelled"


# -------------------------------------------------------------------------------------- invites
class InviteNotOpen(Conflict):
    code, title = "invite_not_open", "This invite opens when its order is paid"


class InviteAlreadyRedeemed(Conflict):
    code, title = "invite_already_redeemed", "This invite has already been used"


class InviteVoid(Conflict):
    code, title = "invite_void", "This invite is no longer valid"


class InviteBeingReturned(Conflict):
    code, title = "invite_being_returned", "The buyer is giving this seat back"


class OwnInvite(Conflict):
    code, title = "own_invite", "Invites are for guests"


# ------------------------------------------------- cancellations and seat returns: why not now
class RefundRequired(Conflict):
    code, title = "refund_required", "A paid seat is released only by a refund"


class CancellationWindowClosed(Conflict):
    code, title = "cancellation_window_closed", "The cancellation window has closed"


class CancellationNotAllowed(Conflict):
    code, title = "cancellation_not_allowed", "Cancellation is not allowed"


class OrderNotPaid(Conflict):
    code, title = "order_not_paid", "The order is not paid"


class RefundInProgress(Conflict):
    code, title = "refund_in_progress", "A refund of this order is in progress"


class OrderNotRefundable(Conflict):
    code, title = "order_not_refundable", "This order can no longer be refunded"


class CancellationRequested(Conflict):
    code, title = "cancellation_requested", "A cancellation is already on its way"


class RegistrationNotActive(Conflict):
    code, title = "registration_not_active", "This registration is no longer active"


class SeatHasRegistration(Conflict):
    code, title = "seat_has_registration", "This seat holds the buyer's own registration"


class SeatNotActive(Conflict):
    code, title = "seat_not_active", "This seat is no longer part of the order"


class SeatHeldByGuest(Conflict):
    code, title = "invite_redeemed", "A guest holds this seat"


class ReturnRequested(Conflict):
    code, title = "return_requested", "This seat is already being given back"


# why a cancellation or a seat return cannot happen now (``cancel_outlook`` and
# ``return_outlook`` name the reason): its problem
NOT_NOW: dict[str, type[DomainError]] = {
    cls.code: cls
    for cls in (
        CancellationWindowClosed,
        CancellationNotAllowed,
        OrderNotPaid,
        RefundInProgress,
        OrderNotRefundable,
        CancellationRequested,
        RegistrationNotActive,
        SeatHasRegistration,
        SeatNotActive,
        SeatHeldByGuest,
        ReturnRequested,
    )
}


def not_now(reason: str | None, detail: str) -> DomainError:
    """The problem for a cancellation (or seat return) refused for ``reason``."""
    return NOT_NOW.get(reason or "", Conflict)(detail)
