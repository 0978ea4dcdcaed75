"""The notifications recorded before redaction lose the payer's personal data when the
migration runs; everything else they say stays."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from ticketing_local.testing.plugin import Infra
from ticketing_shared import db

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def test_migration_0007_redacts_what_was_recorded_before(infra: Infra) -> None:
    everything = db.shared_migrations() + db.dir_migrations("payments", MIGRATIONS)
    before = [m for m in everything if not (m.track == "payments" and m.version >= 7)]
    dsn = await infra.fresh_database("payments_redact", before)
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    await db.init_connection(admin)  # json in and out
    try:
        rows = {
            "wx-pay": {
                "out_trade_no": "a",
                "payer": {"openid": "oSECRET123"},
                "trade_state": "SUCCESS",
            },
            "wx-refund": {
                "refund_status": "SUCCESS",
                "user_received_account": "招商银行信用卡0403",
            },
            "mollie": {
                "payment": {
                    "id": "tr_1",
                    "status": "paid",
                    "details": {
                        "consumerName": "T. TEST",
                        "consumerAccount": "NL72RABO0110438885",
                        "consumerBic": "RABONL2U",
                        "cardLabel": "Mastercard",
                    },
                },
                "refunds": [],
            },
            "mollie-empty": {"payment": {"id": "tr_2", "status": "open", "details": {}}},
            "deep": {
                "scene_info": {"device_id": "013467007045764", "payer_client_ip": "14.23.150.211"},
                "payment": {"billingAddress": {"streetAndNumber": "Keizersgracht 126"}},
                "refunds": [{"id": "re_1", "details": {"iban": "NL91ABNA0417164300"}}],
                "payer": None,
            },
        }
        for nid, payload in rows.items():
            await admin.execute(
                "INSERT INTO provider_notifications (provider, notification_id, event_type,"
                " reference, payload, outcome) VALUES ('p', $1, 'e', $2, $3, 'o')",
                nid,
                uuid.uuid4().hex,
                payload,
            )
        await db.migrate(infra.owner_dsn(dsn), everything, runtime_role=db.user_of(dsn))
        after = {
            r["notification_id"]: r["payload"]
            for r in await admin.fetch(
                "SELECT notification_id, payload FROM provider_notifications"
            )
        }
    finally:
        await admin.close()
    text = str(after)
    for secret in (
        "oSECRET123",
        "0403",
        "T. TEST",
        "NL72RABO",
        "RABONL2U",
        "013467007045764",
        "14.23.150.211",
        "Keizersgracht",
        "NL91ABNA",
    ):
        assert secret not in text
    # what says what happened is kept, and so are the keys' places
    assert after["deep"]["refunds"][0]["id"] == "re_1"
    assert after["deep"]["payer"] is None
    assert after["wx-pay"]["payer"] == {"openid": "[redacted]"}
    assert after["wx-pay"]["trade_state"] == "SUCCESS"
    assert after["mollie"]["payment"]["details"]["cardLabel"] == "Mastercard"
    assert after["mollie-empty"] == rows["mollie-empty"]


async def test_the_migration_redacts_every_field_the_code_redacts() -> None:
    from payments.domain import PERSONAL_FIELDS

    sql = (MIGRATIONS / "0007_redact_provider_payloads.sql").read_text()
    assert {f for f in PERSONAL_FIELDS if f"'{f}'" not in sql} == set()
