"""Invite tokens: derived from the invite's id with a keyed HMAC, never stored.

A token is ``base64url(invite id ‖ HMAC-SHA256(secret, id)[:16])`` (43 characters): 128 bits
nobody can forge without the secret. It is computed again whenever the buyer lists their invites
or the e-mail carries them, checked in constant time on redemption, and the invite is then found
by its id. The database keeps only a SHA-256 digest of each token (``invites.token``), which
reveals nothing; tokens issued before this scheme (random, 32 characters) are found by that
digest, so links already sent keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from uuid import UUID

_CONTEXT = b"ticketing.invite.v1:"
_TAG_BYTES = 16
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_LEGACY = re.compile(r"[A-Za-z0-9_-]{16,64}")
MIN_SECRET_BYTES = 32


class InviteLinks:
    """Issues and checks the invite tokens of one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the invite secret must have at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def _tag(self, invite_id: UUID) -> bytes:
        return hmac.new(self._secret, _CONTEXT + invite_id.bytes, hashlib.sha256).digest()[
            :_TAG_BYTES
        ]

    def token(self, invite_id: UUID) -> str:
        """The invite's token (the same every time)."""
        raw = invite_id.bytes + self._tag(invite_id)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def invite_id(self, token: str) -> UUID | None:
        """The id a token of ours names; None for anything else (a forgery, a legacy token)."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except (binascii.Error, ValueError):
            return None
        invite_id = UUID(bytes=raw[:16])
        if not hmac.compare_digest(raw[16:], self._tag(invite_id)):
            return None
        return invite_id


def digest(token: str) -> str:
    """What the database keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def legacy_shape(token: str) -> bool:
    """Could this be a token issued before HMAC tokens (found by its digest)?"""
    return bool(_LEGACY.fullmatch(token))
