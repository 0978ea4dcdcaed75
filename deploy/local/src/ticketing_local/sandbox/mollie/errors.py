"""Every error answer of the sandbox: Mollie's HAL error object (B5) and the control API's."""

from __future__ import annotations

from .wire import Json, link

DOCS_URL = "https://docs.mollie.com/overview/handling-errors"

#: ``title`` per HTTP status, as Mollie writes it (401's is Mollie's own wording)
TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

#: ``detail`` of injected faults and generic answers, per status
DEFAULT_DETAILS: dict[int, str] = {
    400: "The request is invalid",
    401: "Missing authentication, or failed to authenticate",
    403: "You do not have access to this resource",
    404: "The requested resource does not exist",
    405: "The requested method is not allowed for this resource",
    409: "The request conflicts with the current state of the resource",
    410: "The requested resource is no longer available",
    415: "The request body has an unsupported content type",
    422: "The request cannot be processed",
    429: "Too many requests, please slow down and retry later",
    500: "An internal server error occurred while processing your request",
    502: "The upstream service failed to answer, please retry later",
    503: "The service is temporarily unavailable, please retry later",
    504: "The upstream service timed out, please retry later",
}

UNAUTHORIZED_DETAIL = DEFAULT_DETAILS[401]
IDEMPOTENCY_IN_FLIGHT = "Another request with this Idempotency-Key is already being processed."
IDEMPOTENCY_MISMATCH = (
    "The Idempotency-Key was already used for a request to another endpoint or with other "
    "parameters"
)
CANNOT_REFUND = "The specified amount cannot be refunded"
DUPLICATE_REFUND = "A duplicate refund has been detected"


class ApiError(Exception):
    """A Mollie error answer raised inside a handler."""

    def __init__(
        self, status: int, detail: str | None = None, *, field: str | None = None, title: str = ""
    ) -> None:
        self.status = status
        self.detail = detail or DEFAULT_DETAILS.get(status, "An error occurred")
        self.field = field
        self.title = title or TITLES.get(status, "Error")
        super().__init__(f"{status} {self.detail}")

    def body(self) -> Json:
        """``{"status", "title", "detail", "field"?, "_links": {"documentation"}}``; ``status`` is
        always present and numeric (``molpy`` raises ``ResponseHandlingError`` without it)."""
        payload: Json = {"status": self.status, "title": self.title, "detail": self.detail}
        if self.field is not None:
            payload["field"] = self.field
        payload["_links"] = {"documentation": link(DOCS_URL, "text/html")}
        return payload


def not_found(kind: str, token: str) -> ApiError:
    """``404 "No payment exists with token tr_….``" (and its refund analog)."""
    return ApiError(404, f"No {kind} exists with token {token}.")


def unprocessable(detail: str, field: str | None = None) -> ApiError:
    return ApiError(422, detail, field=field)
