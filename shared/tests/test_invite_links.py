"""Invite tokens derived from the invite's id with a keyed HMAC: stable, unforgeable, checked in
constant time, and nothing stored reveals them."""

from __future__ import annotations

import base64
import secrets
import uuid

import pytest

from ticketing_shared.invite_links import InviteLinks, digest, legacy_shape, marker

LINKS = InviteLinks(secrets.token_bytes(32))


def test_a_token_names_its_invite_and_is_the_same_every_time() -> None:
    invite_id = uuid.uuid4()
    token = LINKS.token(invite_id)
    assert token == LINKS.token(invite_id)
    assert len(token) == 43 and token.isascii() and "=" not in token
    assert LINKS.invite_id(token) == invite_id


def test_a_token_of_another_secret_or_a_tampered_one_names_nothing() -> None:
    invite_id = uuid.uuid4()
    other = InviteLinks(secrets.token_bytes(32)).token(invite_id)
    assert LINKS.invite_id(other) is None
    raw = bytearray(base64.urlsafe_b64decode(LINKS.token(invite_id) + "="))
    raw[20] ^= 1  # one bit of the tag
    assert LINKS.invite_id(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None
    raw = bytearray(base64.urlsafe_b64decode(LINKS.token(invite_id) + "="))
    raw[3] ^= 1  # one bit of the id: another invite, whose tag it is not
    assert LINKS.invite_id(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None


@pytest.mark.parametrize("junk", ["", "x" * 43, "a" * 42, "é" * 43, "../../etc", "A" * 4000])
def test_junk_names_nothing(junk: str) -> None:
    assert LINKS.invite_id(junk) is None


def test_the_digest_reveals_nothing_of_the_token_and_legacy_tokens_are_recognised() -> None:
    token = LINKS.token(uuid.uuid4())
    assert token not in digest(token) and len(digest(token)) == 64
    assert legacy_shape(secrets.token_urlsafe(24))  # the tokens issued before
    assert not legacy_shape("a/b") and not legacy_shape("x" * 200)


def test_markers_are_filled_with_their_tokens_as_text_leaves() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    queued = f"links: https://x/invites/{marker(a)} and https://x/invites/{marker(b)}"
    assert LINKS.token(a) not in queued
    sent = LINKS.fill(queued)
    assert (
        sent == f"links: https://x/invites/{LINKS.token(a)} and https://x/invites/{LINKS.token(b)}"
    )
    assert (
        LINKS.fill("nothing to fill @@invite:not-a-uuid@@")
        == "nothing to fill @@invite:not-a-uuid@@"
    )


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        InviteLinks(b"too short")
