"""Local emulator of the Mollie API v2 (payments, refunds, classic webhooks).

It follows Mollie's published API v2 protocol, with a control API for tests.
One process runs one asyncio loop with a Starlette app served by uvicorn; all state is in memory
and one asyncio lock guards every change. The real ``mollie-api-python`` (4.0) and, in its own
environment, ``mollie-api-py`` (1.10, strict response schema) run against it in the tests.

Provider API (``Authorization: Bearer live_…|test_…``; JSON or ``a[b]=c`` form bodies in,
``application/hal+json`` out):

* ``POST /v2/payments`` → ``201`` payment (``tr_`` + 10 alphanumerics, ``open``, ``isCancelable``,
  ``expiresAt`` +15 min, ``_links.checkout`` → this sandbox's ``/checkout/{id}``);
  ``GET /v2/payments/{id}`` (``?embed=refunds``); ``GET /v2/payments`` (newest first, ``from``/
  ``limit`` cursors, ``_embedded.payments``); ``DELETE /v2/payments/{id}`` cancels while
  ``isCancelable`` (``open``/``authorized``; the webhook is called as for any cancel), else
  ``422 "The payment cannot be cancelled"``.
* ``POST /v2/payments/{id}/refunds`` → ``201`` refund (``re_…``, ``pending``; ``queued`` while the
  balance is low); ``GET /v2/payments/{id}/refunds/{rid}`` (``?embed=payment``);
  ``GET /v2/payments/{id}/refunds``; ``DELETE /v2/payments/{id}/refunds/{rid}`` → ``204`` while
  ``queued``/``pending`` (then the refund is gone: ``404``), else ``422``;
  ``GET /v2/refunds``.
* Amounts are ``{"currency", "value"}`` with ``value`` a string of exactly the currency's decimals
  (JPY/ISK 0, others 2), else ``422 field amount.value``. Unknown body parameters → ``422
  'Non-existent body parameter "x" for this API call.'``. Payment fields appear only once they
  apply (``paidAt``…; ``amountRefunded``/``amountRemaining``/``settlementAmount`` once paid;
  ``_links.refunds`` once refunded). Refund rules: the payment must be ``paid`` and the new amount
  fit in ``amountRemaining`` (else ``422 "The specified amount cannot be refunded"``, field
  ``amount.value``); the same amount on the same payment within an hour (refunds neither failed
  nor canceled) → ``409 "A duplicate refund has been detected"`` (checked before the remaining
  amount). A fully refunded payment stays ``paid`` with ``amountRemaining`` ``0.00``.
* Errors: ``{"status", "title", "detail", "field"?, "_links": {"documentation"}}`` for every
  non-2xx (401 ``"Unauthorized Request"``/``"Missing authentication, or failed to
  authenticate"``, 404 ``"No payment exists with token tr_….``", unknown route 404, wrong method
  405, unexpected failure 500).
* ``Idempotency-Key`` on POST (per API key): the same key, method, path and parameters within
  ``idempotency_ttl_s`` (1 h) replay the first answer byte for byte with
  ``Idempotent-Replayed: true``; other parameters or endpoint → ``400``; while the first runs →
  ``409``. 2xx and 4xx (not 429) answers are kept; 5xx ones are not, so a retry runs again. Keys on
  GET and DELETE are ignored (``mollie-api-py`` sends one on every request).

Classic webhooks: ``POST {webhookUrl}`` with ``Content-Type: application/x-www-form-urlencoded``,
``User-Agent: Mollie HTTP client/1.0`` and the body exactly ``id=tr_…`` (no signature, no status)
when a payment becomes ``authorized``/``paid``/``failed``/``canceled``/``expired`` (never
``open``/``pending``) and when one of its refunds becomes ``processing``/``refunded``/``failed``
(the payment stays ``paid``). Only an HTTP 200 within 15 s counts; otherwise the call is retried
after 1m, 2m, 4m, 8m, 16m, 29m, 1h, 2h, 22h (10 attempts) times ``time_scale``
(``SANDBOX_TIME_SCALE``, default 0.001). With ``SANDBOX_AUTO_SETTLE_MS=n`` (default 200; ``-1`` =
off) refunds walk ``pending → processing → refunded`` by themselves, one step per n ms.

The buyer: ``GET /checkout/{id}`` is a small HTML page with Pay / Fail / Cancel buttons;
``POST /checkout/{id}`` (form ``action=paid|failed|canceled``) moves the payment (``authorized``
instead of ``paid`` for ``captureMode: manual``), fires the webhook and answers ``303`` to the
``redirectUrl`` (``cancelUrl`` first on cancel). Test payments also carry it as
``_links.changePaymentState``, Mollie's test-mode status page.

Control API (not Mollie's; Part F; plain JSON, errors ``{"code", "message"}``):
``POST /sandbox/payments/{id}/pay|fail|cancel|expire|authorize|pending`` (optional
``{"method": "creditcard"}``, and ``{"webhook": false}`` for a webhook that never arrives; a move
B1 does not allow → ``409``), ``GET /sandbox/payments/{id}``
(any mode, with ``refunds`` including canceled ones), ``GET /sandbox/refunds/{id}``,
``POST /sandbox/refunds/{id}/advance`` ``{"status": "pending"|"processing"|"refunded"|"failed"|
"canceled"}`` (valid moves only, else ``409``; ``canceled`` plays a cancel from the dashboard and
fires the webhook; a refund moved this way is left alone by the automatic walk from then on), ``GET|POST /sandbox/balance`` ``{"low": bool}``, ``GET|POST|DELETE
/sandbox/faults`` (``{"endpoint": "create_payment"|"get_payment"|"list_payments"|
"cancel_payment"|"create_refund"|"get_refund"|"list_refunds"|"cancel_refund", "status": 4xx|5xx,
"detail"?, "delay_ms"?, "retry_after"?, "times": n}``: the next n calls wait ``delay_ms`` and
answer that HAL error without applying anything, with a ``Retry-After`` header when
``retry_after`` is given (seconds 0..3600 or an HTTP date, as Mollie's 429s carry it), or with
only ``delay_ms`` are merely slow), ``GET /sandbox/requests`` (``?endpoint=&method=&payment_id=``:
the latest 10 000 API calls as received, with their arrival time and answer status, and their
``count``), ``GET /sandbox/webhooks`` (``?payment_id=&state=&trigger=``: every delivery with its
attempts),
``POST /sandbox/webhooks/redeliver`` ``{"payment_id", "times"}`` and ``GET /healthz``.

Deliberate deviations and choices where Mollie is silent: ``webhookUrl``/``redirectUrl`` may be
any http(s) URL, ``localhost`` included (Mollie refuses webhook URLs it cannot reach); one
profile, objects scoped by mode (test/live) only, not by key; open payments expire after
``payment_ttl_s`` (15 min, iDEAL's) whatever the method; ``isCancelable`` is true while ``open``
or ``authorized``; paid test payments get ``method`` ``ideal`` (EUR) or ``creditcard`` with
matching test ``details``; ``settlementAmount`` is in the payment's currency; refunds have no
€25 over-refund allowance and descriptions are cut at 140 characters; ``DELETE`` of a refund
past ``pending`` is a ``422`` (Mollie's status for state refusals; 409 stays for duplicates); an
API cancel of a refund does not call the webhook (the dashboard's does, ⚠ B2);
``_links.dashboard`` points at ``/sandbox/payments/{id}``; links use the address the request was
sent to (or ``--public-url``).

Run it with ``python -m ticketing_local.sandbox.mollie --host 127.0.0.1 --port 8102 --keys DIR``
(port also from ``MOLLIE_SANDBOX_PORT``, keys from ``TICKETING_KEYS_DIR``; with keys only
``DIR/mollie/mollie.json``'s ``api_key`` is accepted, made when missing; without, any key matching
``^(live|test)_\\w{30,}$``), or in-process with :func:`serve` (``app.state.sandbox`` is the
:class:`MollieSandbox`). SIGTERM and SIGINT shut it down gracefully.

Layout: :mod:`.config` (keys and knobs), :mod:`.wire` (JSON, times, ids, money), :mod:`.errors`
(HAL errors), :mod:`.validation` (request bodies), :mod:`.idempotency`, :mod:`.state` (records,
faults, background tasks), :mod:`.webhooks` (deliveries and retries), :mod:`.payments` and
:mod:`.refunds` (the state machines and their rules), :mod:`.sandbox` (the assembled
:class:`MollieSandbox`), :mod:`.app` (routes, checkout page, control API) and :mod:`.server`
(:func:`serve`, :func:`main`).
"""

from .app import create_app
from .config import RETRY_SCHEDULE_S, SandboxConfig
from .errors import ApiError
from .sandbox import MollieSandbox
from .server import main, serve

__all__ = [
    "RETRY_SCHEDULE_S",
    "ApiError",
    "MollieSandbox",
    "SandboxConfig",
    "create_app",
    "main",
    "serve",
]
