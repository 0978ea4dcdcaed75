"""Every problem the payments service answers with, one class per ``code`` (RFC 9457 bodies are
built from them by ``ticketing_shared.errors``). What the providers' clients raise
(``ProviderError`` and its kinds) are not problems of ours: the use cases turn them into these."""

from __future__ import annotations

from ticketing_shared.errors import BadRequest, Conflict, DomainError, Unprocessable


class IllegalPaymentTransition(Conflict):
    code, title = "illegal_transition", "Illegal payment state transition"


class OrderNotPayable(Conflict):
    code, title = "order_not_payable", "This order cannot be paid"


class PaymentMethodConflict(Conflict):
    code, title = "payment_method_conflict", "This order is being paid another way"


class ProviderNotSupported(Unprocessable):
    code, title = "provider_not_supported", "This order's currency is paid with another provider"


class OpenIdRequired(Unprocessable):
    code, title = "openid_required", "A WeChat openid is required to pay inside WeChat"


class MalformedWebhook(BadRequest):
    code, title = "malformed_webhook", "The notification is not one the provider sends"


class ProviderUnavailable(DomainError):
    status, code, title = 502, "provider_unavailable", "The payment provider could not be reached"


class ProviderNotAsked(DomainError):
    """A webhook whose news could not be fetched: the provider calls again later."""

    status, code, title = 503, "provider_not_asked", "The provider could not be asked; call again"
