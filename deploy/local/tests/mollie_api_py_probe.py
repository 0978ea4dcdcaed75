"""Drive the Mollie sandbox with ``mollie-api-py`` (the Speakeasy SDK), sync and async.

Runs in its own virtual environment (the SDK installs the same top-level ``mollie`` package as
``mollie-api-python``), started by ``test_mollie_sandbox.py``:
``python mollie_api_py_probe.py BASE_URL API_KEY``. Every call goes through the SDK's strict
response validation (a missing required key raises ``ResponseValidationError``). Prints one JSON
object with what each call returned and exits 0, or prints the error and exits 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from typing import Any

import httpx
from mollie import ClientSDK, Security, models


def payment_request(label: str) -> dict[str, Any]:
    return {
        "description": f"mollie-api-py probe ({label})",
        "amount": {"currency": "EUR", "value": "25.00"},
        "redirect_url": "https://shop.example.org/return",
        "webhook_url": "http://127.0.0.1:9/unreachable-webhook",
        "metadata": {"probe": label},
    }


def refund_request() -> dict[str, Any]:
    return {"description": "probe refund", "amount": {"currency": "EUR", "value": "5.00"}}


def pay(base_url: str, payment_id: str) -> None:
    """The buyer pays, through the sandbox control API (not part of Mollie's API)."""
    response = httpx.post(f"{base_url}/sandbox/payments/{payment_id}/pay", timeout=10)
    response.raise_for_status()


def run_sync(client: ClientSDK, base_url: str) -> dict[str, Any]:
    created = client.payments.create(payment_request=payment_request("sync"))
    fetched = client.payments.get(payment_id=created.id)
    pay(base_url, created.id)
    paid = client.payments.get(payment_id=created.id)
    refund = client.refunds.create(payment_id=created.id, refund_request=refund_request())
    got_refund = client.refunds.get(payment_id=created.id, refund_id=refund.id)
    listed = client.refunds.list(payment_id=created.id)
    assert listed is not None
    after = client.payments.get(payment_id=created.id)
    listed_payments = client.payments.list(limit=5)
    assert listed_payments is not None
    client.refunds.cancel(payment_id=created.id, refund_id=refund.id)
    try:
        client.refunds.get(payment_id=created.id, refund_id=refund.id)
        missing_status = None
    except models.ErrorResponse as err:
        missing_status = err.data.status
    return {
        "created": {
            "id": created.id,
            "status": created.status,
            "mode": created.mode,
            "checkout": created.links.checkout.href if created.links.checkout else None,
            "dashboard": created.links.dashboard.href,
            "is_cancelable": created.is_cancelable,
            "metadata": created.metadata,
        },
        "fetched_status": fetched.status,
        "paid": {
            "status": paid.status,
            "paid_at": paid.paid_at,
            "amount_remaining": paid.amount_remaining.value if paid.amount_remaining else None,
        },
        "refund": {
            "id": refund.id,
            "status": refund.status,
            "mode": refund.mode,
            "payment_id": refund.payment_id,
        },
        "got_refund_status": got_refund.status,
        "listed_refunds": [r.id for r in listed.result.embedded.refunds],
        "listed_count": listed.result.count,
        "after_refund_remaining": after.amount_remaining.value if after.amount_remaining else None,
        "listed_payment_ids": [p.id for p in listed_payments.result.embedded.payments or []],
        "canceled_refund_get_status": missing_status,
    }


async def run_async(client: ClientSDK, base_url: str) -> dict[str, Any]:
    created = await client.payments.create_async(payment_request=payment_request("async"))
    fetched = await client.payments.get_async(payment_id=created.id)
    await asyncio.to_thread(pay, base_url, created.id)
    paid = await client.payments.get_async(payment_id=created.id)
    refund = await client.refunds.create_async(
        payment_id=created.id, refund_request=refund_request()
    )
    got_refund = await client.refunds.get_async(payment_id=created.id, refund_id=refund.id)
    listed = await client.refunds.list_async(payment_id=created.id)
    assert listed is not None
    all_refunds = await client.refunds.all_async(limit=10)
    assert all_refunds is not None
    try:
        await client.refunds.create_async(
            payment_id=created.id,
            refund_request={"amount": {"currency": "EUR", "value": "500.00"}},
        )
        over_refund = None
    except models.ErrorResponse as err:
        over_refund = {
            "status": err.data.status,
            "field": err.data.field,
            "detail": err.data.detail,
        }
    return {
        "created": {"id": created.id, "status": created.status, "mode": created.mode},
        "fetched_status": fetched.status,
        "paid_status": paid.status,
        "refund": {"id": refund.id, "status": refund.status},
        "got_refund_status": got_refund.status,
        "listed_refunds": [r.id for r in listed.result.embedded.refunds],
        "all_refund_ids": [r.id for r in all_refunds.result.embedded.refunds],
        "over_refund": over_refund,
    }


def main() -> int:
    base_url, api_key = sys.argv[1], sys.argv[2]
    try:
        with ClientSDK(security=Security(api_key=api_key), server_url=base_url) as client:
            result = {"sync": run_sync(client, base_url)}
        async_client = ClientSDK(security=Security(api_key=api_key), server_url=base_url)

        async def go() -> dict[str, Any]:
            async with async_client:
                return await run_async(async_client, base_url)

        result["async"] = asyncio.run(go())
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
