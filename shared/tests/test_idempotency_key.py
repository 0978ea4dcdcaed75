"""The Idempotency-Key header: sent once, 1-255 printable ASCII characters, else ``400``; an empty
key is a malformed key, not "no key"."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from ticketing_shared.errors import BadRequest
from ticketing_shared.idempotency import for_request


def _request(*keys: bytes) -> Request:
    headers = [(b"content-type", b"application/json")]
    headers += [(b"idempotency-key", k) for k in keys]
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/v1/orders/o-1/refunds",
            "query_string": b"",
            "headers": headers,
        }
    )


def _key(*keys: bytes, required: bool = False) -> str | None:
    request = _request(*keys)
    # what FastAPI hands the endpoint: the first value, if any
    first = request.headers.get("idempotency-key")
    idem = for_request(request, "alice", first, None, required=required)
    return None if idem is None else idem.key


def _refused(*keys: bytes, required: bool = False) -> str:
    with pytest.raises(BadRequest) as caught:
        _key(*keys, required=required)
    assert caught.value.status == 400
    return caught.value.code


def test_a_well_formed_key_is_taken() -> None:
    for key in (b"3f2b9c1e-5d7a-4b7e-9d35-0f1f7c0e8a11", b"k", b"order 42/retry~1", b"x" * 255):
        assert _key(key) == key.decode()
        assert _key(key, required=True) == key.decode()


def test_no_key_is_none_unless_one_is_required() -> None:
    assert _key() is None
    assert _refused(required=True) == "idempotency_key_required"


@pytest.mark.parametrize(
    "key",
    [
        b"",  # an empty key is not "no key"
        b"x" * 256,
        b"k\tk",
        b"k\x01k",
        b"k\x7fk",
        "clé".encode("latin-1"),
        "键".encode(),
    ],
)
def test_a_malformed_key_is_refused(key: bytes) -> None:
    assert _refused(key) == "bad_idempotency_key"
    assert _refused(key, required=True) == "bad_idempotency_key"


def test_a_repeated_key_is_refused_even_when_both_are_the_same() -> None:
    assert _refused(b"k1", b"k2") == "idempotency_key_repeated"
    assert _refused(b"k1", b"k1", required=True) == "idempotency_key_repeated"
    assert _refused(b"", b"k1") == "idempotency_key_repeated"
