"""What the providers tell us about the payer is not kept."""

from __future__ import annotations

from payments.domain import REDACTED, redact


def test_wechat_payer_and_refund_account_are_redacted_the_rest_kept() -> None:
    tx = {
        "out_trade_no": "abc",
        "trade_state": "SUCCESS",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "scene_info": {"device_id": "013467007045764", "payer_client_ip": "14.23.150.211"},
        "amount": {"total": 100, "payer_total": 100, "currency": "CNY"},
    }
    assert redact(tx) == {
        "out_trade_no": "abc",
        "trade_state": "SUCCESS",
        "payer": {"openid": REDACTED},
        "scene_info": {"device_id": REDACTED, "payer_client_ip": REDACTED},
        "amount": {"total": 100, "payer_total": 100, "currency": "CNY"},
    }
    refund = {"refund_status": "SUCCESS", "user_received_account": "招商银行信用卡0403"}
    assert redact(refund) == {"refund_status": "SUCCESS", "user_received_account": REDACTED}


def test_mollie_consumer_and_card_details_are_redacted_at_any_depth() -> None:
    snapshot = {
        "payment": {
            "id": "tr_x",
            "status": "paid",
            "details": {
                "consumerName": "T. TEST",
                "consumerAccount": "NL72RABO0110438885",
                "consumerBic": "RABONL2U",
                "cardHolder": "T. TEST",
                "cardNumber": "6787",
                "cardLabel": "Mastercard",
            },
        },
        "refunds": [{"id": "re_1", "status": "refunded", "details": None}],
    }
    out = redact(snapshot)
    details = out["payment"]["details"]  # type: ignore[index]
    assert all(details[k] == REDACTED for k in ("consumerName", "consumerAccount", "consumerBic"))
    assert details["cardHolder"] == details["cardNumber"] == REDACTED
    assert details["cardLabel"] == "Mastercard"
    assert out["refunds"] == snapshot["refunds"]  # type: ignore[index]
    assert "NL72RABO0110438885" not in str(out) and "T. TEST" not in str(out)
