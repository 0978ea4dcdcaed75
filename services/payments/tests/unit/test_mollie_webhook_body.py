"""Mollie's webhook body is form-encoded ``id=tr_…``: one well-formed payment id, known to us or
not, is taken; anything else is a ``400`` problem (and costs no lookup, no call to Mollie)."""

from __future__ import annotations

import pytest

from payments.providers.mollie import PAYMENT_ID
from payments.routes import _mollie_id
from ticketing_shared.errors import BadRequest


@pytest.mark.parametrize(
    ("body", "mollie_id"),
    [
        (b"id=tr_7UhSN1zuXS", "tr_7UhSN1zuXS"),
        (b"id=tr_Forged1234", "tr_Forged1234"),  # nobody's: still well-formed
        (b"id=tr_" + b"a" * 64, "tr_" + "a" * 64),
        (b"id=tr_%41bcd", "tr_Abcd"),
        (b"id=tr_abcd&testByMollie=1", "tr_abcd"),
    ],
)
def test_one_well_formed_id_is_taken(body: bytes, mollie_id: str) -> None:
    assert _mollie_id(body) == mollie_id


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"id=",
        b"id",
        b"nothing=here",
        b"id=tr_abcd&id=tr_abcd",  # repeated, even the same
        b"id=tr_abcd&id=tr_efgh",
        b"id=re_abcd1234",  # a refund's id
        b"id=TR_abcd1234",
        b"id=tr_abc",  # too short
        b"id=tr_" + b"a" * 65,  # too long
        b"id=tr_" + b"x" * 5000,
        b"id=tr_ab-cd",
        b"id=tr_abcd%0A",  # a trailing newline: `$` would have let it in
        b"id=tr_%00abc",
        b"id=tr_caf%C3%A9",
        b"id=tr_abcd\xff",
        b"\xff\xfe\x00",
        b'{"id": "tr_json1234"}',
        b"id=tr_abcd&",
        b"id=tr_abcd&" + b"&".join(b"x%d=1" % i for i in range(20)),
    ],
)
def test_anything_else_is_a_400(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        _mollie_id(body)
    assert (caught.value.status, caught.value.code) == (400, "malformed_webhook")


def test_a_payment_id_is_matched_whole() -> None:
    assert PAYMENT_ID.fullmatch("tr_abcd")
    assert not PAYMENT_ID.fullmatch("tr_abcd\n")
