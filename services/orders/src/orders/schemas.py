"""HTTP models of the orders API (``XCreate`` in, ``XPublic`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from ticketing_shared.inputs import Amount, EventTime, FreeText, Line, StrictInput

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR", "CNY"])]
# a cut-off beyond ten years would close every cancellation window there is
MAX_CUTOFF_DAYS = 3650
MAX_PRICE_TIERS = 100
MAX_TICKET_TYPES = 100
Strict = StrictInput


class CancellationPolicyIn(Strict):
    allow_cancellation: StrictBool
    include_transaction_fees: StrictBool = False
    include_app_fees: StrictBool = False
    cutoff_days: StrictInt = Field(0, ge=0, le=MAX_CUTOFF_DAYS)
    cutoff_hours: StrictInt = Field(0, ge=0, le=23)


class CancellationPoliciesIn(Strict):
    """Up to four variants; a missing variant means cancellation is not allowed."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "paid-regular": {"allow_cancellation": True, "cutoff_days": 2},
                    "free-regular": {"allow_cancellation": True, "cutoff_hours": 1},
                }
            ]
        },
    )

    paid_regular: CancellationPolicyIn | None = Field(None, alias="paid-regular")
    paid_organizer: CancellationPolicyIn | None = Field(None, alias="paid-organizer")
    free_regular: CancellationPolicyIn | None = Field(None, alias="free-regular")
    free_organizer: CancellationPolicyIn | None = Field(None, alias="free-organizer")

    def variants(self) -> dict[str, dict[str, Any]]:
        return {
            alias: value.model_dump()
            for alias, value in (
                ("paid-regular", self.paid_regular),
                ("paid-organizer", self.paid_organizer),
                ("free-regular", self.free_regular),
                ("free-organizer", self.free_organizer),
            )
            if value is not None
        }


class PriceTier(Strict):
    quantity: StrictInt = Field(ge=1, le=1000)
    total_amount: Amount


def _check_tiers(tiers: list[PriceTier]) -> list[PriceTier]:
    if not tiers:
        raise ValueError("at least one price tier is required")
    quantities = [t.quantity for t in tiers]
    if len(set(quantities)) != len(quantities):
        raise ValueError("price tiers must have distinct quantities")
    free = [t.total_amount == 0 for t in tiers]
    if any(free) and not all(free):
        raise ValueError("a ticket type is either free (all tiers 0) or paid (all tiers > 0)")
    return sorted(tiers, key=lambda t: t.quantity)


class TicketTypeCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Standing",
                    "max_quantity": 500,
                    "price_tiers": [
                        {"quantity": 1, "total_amount": 5000},
                        {"quantity": 2, "total_amount": 9000},
                    ],
                },
                {
                    "name": "Guest list",
                    "max_quantity": 20,
                    "price_tiers": [{"quantity": 1, "total_amount": 0}],
                },
            ]
        }
    )

    name: Line = Field(min_length=1, max_length=200)
    max_quantity: StrictInt = Field(ge=0, le=1_000_000)
    price_tiers: list[PriceTier] = Field(max_length=MAX_PRICE_TIERS)
    # how many seats of this ticket type one buyer may hold unpaid at once (abuse limit): by
    # default 10, or the largest tier's quantity when that is more (one order of it must pass)
    max_unpaid_per_buyer: StrictInt | None = Field(None, ge=1, le=10_000)
    organizer_registration: StrictBool = False
    use_tenant_cancellation_policy: StrictBool = True
    cancellation_policy: CancellationPolicyIn | None = None

    _tiers = field_validator("price_tiers")(_check_tiers)


class TicketTypeUpdate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"max_quantity": 600}]})

    name: Line | None = Field(None, min_length=1, max_length=200)
    max_quantity: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_unpaid_per_buyer: StrictInt | None = Field(None, ge=1, le=10_000)
    price_tiers: list[PriceTier] | None = Field(None, max_length=MAX_PRICE_TIERS)
    organizer_registration: StrictBool | None = None
    use_tenant_cancellation_policy: StrictBool | None = None
    cancellation_policy: CancellationPolicyIn | None = None

    @field_validator("price_tiers")
    @classmethod
    def _tiers(cls, v: list[PriceTier] | None) -> list[PriceTier] | None:
        return None if v is None else _check_tiers(v)


class TicketTypePublic(BaseModel):
    id: UUID
    event_id: UUID
    name: str
    max_quantity: int
    current_quantity: int
    available: int
    price_tiers: list[PriceTier]
    max_unpaid_per_buyer: int
    organizer_registration: bool
    use_tenant_cancellation_policy: bool
    cancellation_policy: CancellationPolicyIn | None


class EventCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Spring concert",
                    "starts_at": "2027-04-18T19:30:00+02:00",
                    "currency": "EUR",
                }
            ]
        }
    )

    title: Line = Field(min_length=1, max_length=300)
    starts_at: EventTime
    require_approval: StrictBool = False
    currency: Currency


class EventUpdate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"starts_at": "2027-04-18T20:00:00+02:00"}]}
    )

    title: Line | None = Field(None, min_length=1, max_length=300)
    starts_at: EventTime | None = None
    require_approval: StrictBool | None = None


class EventPublic(BaseModel):
    id: UUID
    tenant_id: str
    title: str
    starts_at: datetime
    require_approval: bool
    currency: str
    status: str
    template_id: UUID | None = None
    ticket_types: list[TicketTypePublic] | None = None


class TemplateCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Monthly meetup",
                    "currency": "CNY",
                    "ticket_types": [
                        {
                            "name": "Seat",
                            "max_quantity": 80,
                            "price_tiers": [{"quantity": 1, "total_amount": 3000}],
                        }
                    ],
                }
            ]
        }
    )

    title: Line = Field(min_length=1, max_length=300)
    require_approval: StrictBool = False
    currency: Currency
    ticket_types: list[TicketTypeCreate] = Field([], max_length=MAX_TICKET_TYPES)


class TemplatePublic(BaseModel):
    id: UUID
    tenant_id: str
    title: str
    require_approval: bool
    currency: str
    ticket_types: list[TicketTypeCreate]


class EventFromTemplate(Strict):
    """Create an event from a template; any field of the template may be overridden."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"starts_at": "2027-05-06T19:00:00+08:00"}]}
    )

    starts_at: EventTime
    title: Line | None = Field(None, min_length=1, max_length=300)
    require_approval: StrictBool | None = None
    currency: Currency | None = None
    ticket_types: list[TicketTypeCreate] | None = Field(None, max_length=MAX_TICKET_TYPES)


class RegistrationCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"ticket_type_id": "0193a3c2-7d4e-7b1a-9f2e-3c4d5e6f7a8b", "quantity": 2}]
        }
    )

    ticket_type_id: UUID
    quantity: StrictInt = Field(1, ge=1, le=1000)


class RegistrationSummary(BaseModel):
    id: UUID
    status: str
    user_id: str
    seat_id: UUID | None


class Money(BaseModel):
    amount: int
    currency: str


class SeatPublic(BaseModel):
    id: UUID
    status: str
    position: int
    # a gift seat, in its buyer's view: whether it can be given back now, and for how much
    can_return: bool | None = None
    return_unavailable_reason: str | None = None
    return_quote: Money | None = None


class InviteSummary(BaseModel):
    status: str
    seat_id: UUID
    # the buyer is giving this seat back (its refund is on its way): nobody may redeem it
    return_requested: bool = False


class RefundSummary(BaseModel):
    refunded_amount: int
    refundable_amount: int


class OrderPublic(BaseModel):
    id: UUID
    event_id: UUID
    ticket_type_id: UUID
    status: str
    quantity: int
    total_amount: int
    refunded_amount: int
    currency: str
    expires_at: datetime
    paid_at: datetime | None
    transaction_id: str | None
    payment_provider: str | None
    payment_method: str | None
    created_at: datetime
    registrations: list[RegistrationSummary]
    seats: list[SeatPublic]
    invites: list[InviteSummary]
    refund: RefundSummary


class RegistrationPublic(BaseModel):
    id: UUID
    event_id: UUID
    ticket_type_id: UUID
    order_id: UUID | None
    # the order's own state (REFUND_PENDING while a refund is on its way), where there is one
    order_status: str | None = None
    seat_id: UUID | None
    user_id: str
    status: str
    cancellation_reason: str | None
    cancellation_reason_note: str | None
    cancelled_at: datetime | None
    # the refund whose settlement cancelled this registration, if one did
    refund_id: UUID | None = None
    cancellation_requested: bool
    can_cancel: bool
    cancel_unavailable_reason: str | None
    refund_quote: Money | None
    cancellation_policy: CancellationPolicyIn
    policy_source: str
    created_at: datetime


class RegistrationCreated(BaseModel):
    registration: RegistrationPublic
    order: OrderPublic | None


class OrganizerRegistration(BaseModel):
    id: UUID
    order_id: UUID | None
    order_status: str | None
    status: str
    user_id: str
    email: str
    name: str = ""
    ticket_type_id: UUID
    cancellation_reason: str | None
    cancellation_reason_note: str | None = None
    cancelled_at: datetime | None = None
    # the refund whose settlement cancelled this registration, if one did
    refund_id: UUID | None = None
    created_at: datetime


class RegistrationPage(BaseModel):
    items: list[OrganizerRegistration]
    next_cursor: str | None
    total: int = Field(description="how many registrations match the filters, on every page")


class EventPage(BaseModel):
    items: list[EventPublic]
    next_cursor: str | None


class TemplatePage(BaseModel):
    items: list[TemplatePublic]
    next_cursor: str | None


class OrderPage(BaseModel):
    items: list[OrderPublic]
    next_cursor: str | None


class InvitePublic(BaseModel):
    token: str
    status: str
    seat_id: UUID
    redeemed_by: str | None = None


class StaffAction(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"reason": "organizer"}, {"reason": "other", "note": "Duplicate sign-up"}]
        }
    )

    reason: str | None = Field(None, pattern=r"^(admin|organizer|other)$")
    note: FreeText | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _note_for_other(self) -> StaffAction:
        if self.reason == "other" and not self.note:
            raise ValueError("a note is required when the reason is 'other'")
        return self


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    from_status: str | None
    to_status: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None
