"""Mollie: checkout, the fetch-on-webhook receiver, and the provider tasks (close, refund,
cancel a refund).

Mollie's webhook says only *which* payment changed (``id=tr_…``). The receiver fetches the payment
and its refunds with our API key and compares them with what we recorded; only a real change is
applied, once (row locks plus state-guarded updates), so repeated, late or forged calls do
nothing. Provider calls are never made inside a database transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import db, outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import PaymentSucceeded
from ticketing_shared.writes import OutboxEvent

from .. import repository as repo
from ..domain import MOLLIE_REFUND_STATUS, PaymentMethod, PaymentStatus, fee, transition
from ..errors import OrderNotPayable, ProviderUnavailable
from ..providers.mollie import MollieClient, MollieError, from_value
from ..refunds import RefundChange, record
from ..service import NOTIFICATIONS, SOURCE, check_provider, payment_public, reject_amount_mismatch

log = logging.getLogger(__name__)
PROVIDER = "mollie"
# a Mollie payment that ended without money: our attempt becomes…
_ENDED = {
    "canceled": PaymentStatus.FAILED,
    "failed": PaymentStatus.FAILED,
    "expired": PaymentStatus.CLOSED,
}


class MollieFlow:
    """Paying in any other currency with Mollie: a hosted checkout, then its webhook."""

    provider = PROVIDER

    def __init__(
        self, client: MollieClient, *, fee_bps: int, fee_fixed: int, app_fee_bps: int
    ) -> None:
        self.client = client
        self.fee_bps = fee_bps
        self.fee_fixed = fee_fixed
        self.app_fee_bps = app_fee_bps

    # -------------------------------------------------------------------------------------- checkout
    async def checkout(
        self,
        pool: asyncpg.Pool,
        principal: Principal,
        order_id: UUID,
        *,
        openid: str | None = None,
        user_agent: str | None = None,
    ) -> dict[str, Any]:
        """Start (or resume) paying a PENDING order with Mollie: the buyer goes to ``checkout_url``.

        A Mollie payment is one attempt: once canceled, failed or expired the buyer starts a new one
        (a new attempt id, hence a new Idempotency-Key). An attempt still open is resumed, so a
        double click creates one Mollie payment."""
        async with db.transaction(pool) as conn:
            await repo.scope_to_order(conn, order_id)
            order = check_provider(
                await repo.get_order(conn, order_id, for_update=True), principal, PROVIDER
            )
            if await repo.order_paid(conn, order_id):
                raise OrderNotPayable("this order has already been paid")
            payment = await repo.current_attempt(conn, order_id, PROVIDER)
            if payment is None:
                attempt = outbox.new_event_id()
                payment = await repo.insert_payment(
                    conn,
                    {
                        "id": attempt,
                        "order_id": order_id,
                        "tenant_id": order["tenant_id"],
                        "provider": PROVIDER,
                        "payment_method": PaymentMethod.REDIRECT.value,
                        "out_trade_no": attempt.hex,
                        "amount": order["total_amount"],
                        "currency": order["currency"],
                    },
                )
        if payment["checkout_url"]:
            return payment_public(payment)
        try:
            created = await self.client.create_payment(
                amount=payment["amount"],
                currency=payment["currency"].strip(),
                description=(order["event_title"] or "Tickets"),
                order_id=str(order_id),
                payment_id=str(payment["id"]),
            )
        except MollieError as exc:
            log.warning(
                "payments.mollie_create_failed", extra={"order_id": str(order_id), "code": exc.code}
            )
            raise ProviderUnavailable(f"Mollie: {exc.message}") from exc
        href = ((created.get("_links") or {}).get("checkout") or {}).get("href")
        if not href:
            raise ProviderUnavailable("Mollie returned a payment without a checkout link")
        async with db.transaction(pool, tenant_id=order["tenant_id"]) as conn:
            stored = await repo.update_payment(
                conn,
                payment["id"],
                {"provider_payment_id": str(created["id"]), "checkout_url": str(href)},
            )
        assert stored is not None
        return payment_public(stored)

    # --------------------------------------------------------------------------------------- webhook
    async def known(self, pool: asyncpg.Pool, mollie_id: str) -> bool:
        """Whether one of our attempts is this Mollie payment: a webhook for any other id is
        answered without asking Mollie (nothing of ours can change)."""
        async with db.transaction(pool) as conn:
            found = await repo.get_payment(conn, provider=PROVIDER, provider_payment_id=mollie_id)
        if found is None:
            log.warning("payments.mollie_webhook_unknown", extra={"mollie_id": mollie_id})
            NOTIFICATIONS.labels(PROVIDER, "unknown_payment").inc()
        return found is not None

    async def on_webhook(self, pool: asyncpg.Pool, mollie_id: str) -> str:
        """``id=tr_…`` arrived: fetch the truth and apply what changed. Unknown ids are not even
        fetched (nothing of ours can change). Mollie errors propagate: the route answers non-200
        only when it could not learn the truth, so Mollie's retries bring the news again."""
        async with db.transaction(pool) as conn:
            known = await repo.get_payment(conn, provider=PROVIDER, provider_payment_id=mollie_id)
            open_refunds = (
                [] if known is None else await repo.open_refunds(conn, known["id"], lock=False)
            )
        if known is None:
            log.warning("payments.mollie_webhook_unknown", extra={"mollie_id": mollie_id})
            NOTIFICATIONS.labels(PROVIDER, "unknown_payment").inc()
            return "unknown_payment"
        obj = await self.client.get_payment(mollie_id)
        refunds = await self.client.list_refunds(mollie_id) if open_refunds else []
        missing = await self._missing_refunds(
            mollie_id, [r["provider_refund_id"] for r in open_refunds], refunds
        )
        async with db.transaction(pool) as conn:
            payment = await repo.get_payment(
                conn, provider=PROVIDER, provider_payment_id=mollie_id, for_update=True
            )
            assert payment is not None
            outcomes = [await self._apply_payment(conn, payment, obj)]
            by_id = {str(r.get("id")): r for r in refunds}
            for refund in await repo.open_refunds(conn, payment["id"]):
                ref = refund["provider_refund_id"]
                if ref in by_id:
                    outcomes.append(await self._apply_refund_object(conn, refund, by_id[ref]))
                elif ref in missing:
                    outcomes.append(
                        await self._apply_refund_object(
                            conn, refund, {"id": ref, "status": "canceled"}
                        )
                    )
            changed = [o for o in outcomes if o not in ("unchanged", "duplicate")]
            outcome = ",".join(changed) or "unchanged"
            snapshot = {"payment": obj, "refunds": refunds}
            digest = hashlib.sha256(
                json.dumps(
                    [
                        obj.get("status"),
                        sorted((str(r.get("id")), str(r.get("status"))) for r in refunds),
                    ]
                ).encode()
            ).hexdigest()[:16]
            fresh = await repo.record_notification(
                conn,
                provider=PROVIDER,
                notification_id=f"{mollie_id}:{digest}",
                event_type=f"payment.{obj.get('status')}",
                reference=mollie_id,
                payload=snapshot,
                outcome=outcome,
                tenant_id=payment["tenant_id"],
            )
        NOTIFICATIONS.labels(PROVIDER, outcome if fresh or changed else "redelivered").inc()
        return outcome

    async def reconcile(
        self, pool: asyncpg.Pool, *, after_s: float, every_s: float, limit: int = 20
    ) -> int:
        """Ask Mollie about attempts whose webhooks may have been lost (our endpoint down for longer
        than Mollie retries, a misconfigured webhook URL): exactly what a webhook would trigger."""
        async with db.transaction(pool) as conn:
            due = await repo.due_for_reconcile(
                conn, provider=PROVIDER, after_s=after_s, every_s=every_s, limit=limit
            )
        for mollie_id in due:
            try:
                outcome = await self.on_webhook(pool, mollie_id)
            except MollieError as exc:
                log.warning(
                    "payments.reconcile_failed", extra={"mollie_id": mollie_id, "code": exc.code}
                )
                if exc.status == 429:
                    # Mollie limits the whole API key: asking about the rest now would only push the
                    # checkout and the webhooks further back; they come again at their next turn
                    break
                continue
            if outcome != "unchanged":
                log.warning(
                    "payments.reconciled_missed_news",
                    extra={"mollie_id": mollie_id, "outcome": outcome},
                )
        return len(due)

    async def _missing_refunds(
        self, mollie_id: str, ours: list[str | None], listed: list[dict[str, Any]]
    ) -> set[str]:
        """Our open refunds Mollie no longer lists and answers 404 for: canceled (a canceled refund
        is gone from Mollie's API, e.g. when canceled from the dashboard)."""
        seen = {str(r.get("id")) for r in listed}
        gone = set()
        for ref in ours:
            if ref and ref not in seen:
                try:
                    await self.client.get_refund(mollie_id, ref)
                except MollieError as exc:
                    if exc.status != 404:
                        raise
                    gone.add(ref)
        return gone

    async def _apply_payment(
        self,
        conn: asyncpg.Connection,
        payment: asyncpg.Record,
        obj: dict[str, Any],
    ) -> str:
        """Mollie's payment status onto our attempt: paid (amount checked) → SUCCEEDED and
        ``payment.succeeded`` once; canceled/failed/expired → FAILED/CLOSED; open/pending → nothing."""
        status = str(obj.get("status", ""))
        current = PaymentStatus(payment["status"])
        metadata = obj.get("metadata") or {}
        if isinstance(metadata, dict) and metadata.get("payment_id") not in (
            None,
            str(payment["id"]),
        ):
            log.error("payments.alert_foreign_payment", extra={"mollie_id": obj.get("id")})
            return "foreign_payment"
        if status in _ENDED:
            if current is not PaymentStatus.CREATED:
                return "unchanged"
            await repo.update_payment(
                conn,
                payment["id"],
                {
                    "status": transition(current, _ENDED[status]).value,
                    "failure_reason": f"mollie: {status}",
                },
                expected=[PaymentStatus.CREATED.value],
            )
            return f"payment_{status}"
        if status != "paid":
            return "unchanged"
        if current in (PaymentStatus.SUCCEEDED, PaymentStatus.REJECTED):
            return "duplicate"
        amount = obj.get("amount") or {}
        currency = payment["currency"].strip()
        try:
            paid_amount = from_value(str(amount.get("value")), currency)
        except ValueError:
            paid_amount = -1
        if paid_amount != payment["amount"] or amount.get("currency") != currency:
            await reject_amount_mismatch(
                conn,
                payment,
                provider=PROVIDER,
                got=amount.get("value"),
                currency=amount.get("currency"),
                transaction_id=obj.get("id"),
            )
            return "amount_mismatch"
        transition(current, PaymentStatus.SUCCEEDED)
        paid_at = (
            datetime.fromisoformat(str(obj["paidAt"])) if obj.get("paidAt") else datetime.now(UTC)
        )
        method = str(obj.get("method") or PaymentMethod.REDIRECT.value)
        fields: dict[str, Any] = {
            "transaction_id": str(obj["id"]),
            "paid_at": paid_at,
            "transaction_fee": fee(payment["amount"], self.fee_bps) + self.fee_fixed,
            "app_fee": fee(payment["amount"], self.app_fee_bps),
            "payment_method": method,
        }
        event = PaymentSucceeded(
            order_id=payment["order_id"],
            tenant_id=payment["tenant_id"],
            payment_id=payment["id"],
            provider=PROVIDER,
            payment_method=method,
            transaction_id=fields["transaction_id"],
            amount=payment["amount"],
            currency=currency,
            paid_at=paid_at,
            transaction_fee=fields["transaction_fee"],
            app_fee=fields["app_fee"],
        )
        await repo.mark_paid(
            conn,
            payment_id=payment["id"],
            expected=payment["status"],
            fields=fields,
            notification={
                "provider": PROVIDER,
                "notification_id": f"{obj['id']}:paid",
                "event_type": "payment.paid",
                "reference": str(obj["id"]),
                "payload": obj,
                "tenant_id": payment["tenant_id"],
            },
            event=OutboxEvent.of(event, subject=payment["order_id"], source=SOURCE),
        )
        return "paid"

    async def _apply_refund_object(
        self, conn: asyncpg.Connection, refund: asyncpg.Record, obj: dict[str, Any]
    ) -> str:
        """Mollie's refund status, one to one onto ours; announced once per change."""
        change = refund_change(obj)
        if change is None or not await record(conn, refund, change):
            return "unchanged"
        return f"refund_{change.status}"

    # ------------------------------------------------------------------------------------------ tasks
    async def close(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """Cancel the open Mollie payment of a cancelled or expired order, so it cannot be paid late.
        Mollie allows that only while ``isCancelable``; a payment paid meanwhile is left to the
        webhook (the late-payment path)."""
        payment_id = UUID(task["payload"]["payment_id"])
        payment = await repo.lock_payment(conn, payment_id)
        if payment is None or payment["status"] != PaymentStatus.CREATED:
            return
        if payment["provider_payment_id"]:
            try:
                await self.client.cancel_payment(payment["provider_payment_id"])
            except MollieError as exc:
                if exc.retryable:
                    raise
                current = await self.client.get_payment(payment["provider_payment_id"])
                if current.get("status") == "paid":
                    log.warning("payments.close_found_paid", extra={"mollie_id": current.get("id")})
                    return
                if current.get("status") not in _ENDED:
                    log.warning(
                        "payments.mollie_not_cancelable",
                        extra={"mollie_id": current.get("id"), "status": current.get("status")},
                    )
                    return
        await repo.update_payment(
            conn, payment_id, {"status": PaymentStatus.CLOSED.value}, expected=["CREATED"]
        )

    async def refund(
        self, conn: asyncpg.Connection, task: asyncpg.Record, *, give_up: bool
    ) -> None:
        """Execute a refund at Mollie, keyed on our refund id. A refusal fails it with advice; a
        transient error is retried with the same key (raised to the task loop). Before a retry and
        before giving up, Mollie's refunds of the payment are searched for ours (Mollie forgets keys
        after an hour), so a refund Mollie did create is never created twice nor reported failed."""
        refund_row = await repo.get_refund(
            conn, refund_id=UUID(task["payload"]["refund_id"]), for_update=True
        )
        if (
            refund_row is None
            or refund_row["status"] != "pending"
            or refund_row["provider_refund_id"]
        ):
            return
        mollie_id = refund_row["provider_payment_id"]
        if not mollie_id:
            await record(conn, refund_row, RefundChange.failed("no_payment"))
            return
        answer = (
            await self._find_refund(mollie_id, refund_row["refund_id"])
            if task["attempts"]
            else None
        )
        if answer is None:
            try:
                answer = await self.client.create_refund(
                    mollie_id,
                    amount=refund_row["amount"],
                    currency=refund_row["currency"].strip(),
                    refund_id=str(refund_row["refund_id"]),
                    description=refund_row["note"],
                )
            except MollieError as exc:
                if exc.retryable and not give_up:
                    raise
                found = (
                    await self._find_refund(mollie_id, refund_row["refund_id"])
                    if exc.retryable
                    else None
                )
                if found is None:
                    log.warning(
                        "payments.refund_refused",
                        extra={"refund_id": str(refund_row["refund_id"]), "code": exc.code},
                    )
                    await record(
                        conn, refund_row, RefundChange.failed(exc.code, exc.message, PROVIDER)
                    )
                    return
                answer = found
        # Mollie took the refund: its re_… id is news even while it stays pending
        await record(
            conn,
            refund_row,
            refund_change(answer)
            or RefundChange(refund_row["status"], provider_refund_id=str(answer["id"])),
        )

    async def _find_refund(self, mollie_id: str, refund_id: UUID) -> dict[str, Any] | None:
        """Our refund among Mollie's refunds of the payment (found by its metadata)."""
        for candidate in await self.client.list_refunds(mollie_id):
            if (candidate.get("metadata") or {}).get("refund_id") == str(refund_id):
                return candidate
        return None

    async def cancel_refund(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """Withdraw a refund Mollie holds as ``queued``/``pending``. Once it is ``processing`` Mollie
        refuses, and the refund carries on (its webhook will tell how it ends)."""
        refund_row = await repo.get_refund(
            conn, refund_id=UUID(task["payload"]["refund_id"]), for_update=True
        )
        if (
            refund_row is None
            or refund_row["status"] not in ("pending", "queued")
            or not refund_row["provider_refund_id"]
        ):
            return
        try:
            await self.client.cancel_refund(
                refund_row["provider_payment_id"], refund_row["provider_refund_id"]
            )
        except MollieError as exc:
            if exc.retryable:
                raise
            if exc.status != 404:  # 404: canceled already (Mollie forgets canceled refunds)
                log.warning(
                    "payments.refund_not_cancelable",
                    extra={"refund_id": str(refund_row["refund_id"]), "code": exc.code},
                )
                return
        await record(conn, refund_row, RefundChange("canceled"))


def refund_change(obj: dict[str, Any]) -> RefundChange | None:
    """Mollie's refund object as our change; None for a status we do not know (logged)."""
    raw = str(obj.get("status", ""))
    status = MOLLIE_REFUND_STATUS.get(raw)
    if status is None:
        log.error("payments.unknown_refund_status", extra={"provider": PROVIDER, "status": raw})
        return None
    provider_refund_id = str(obj["id"]) if obj.get("id") else None
    if status == "failed":
        failed = RefundChange.failed("mollie_failed")
        return RefundChange(
            "failed",
            provider_refund_id=provider_refund_id,
            failure_code=failed.failure_code,
            failure_message=failed.failure_message,
        )
    return RefundChange(status, provider_refund_id=provider_refund_id)
