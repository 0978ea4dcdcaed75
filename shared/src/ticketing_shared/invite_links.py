"""Invite tokens: derived from the invite's id with a keyed HMAC, never stored.

A token is ``base64url(invite id ‖ HMAC-SHA256(secret, id)[:16])`` (43 characters): 128 bits
nobody can forge without the secret (``INVITE_SECRET``, which the orders service and the
notifications worker share). It is computed again whenever the buyer lists their invites or an
e-mail is sent, checked in constant time on redemption, and the invite is then found by its id.
Nothing at rest holds a token: the orders database keeps a SHA-256 digest of each
(``invites.token``), which reveals nothing; events name the invites by id; a queued e-mail holds
a marker per invite (:func:`marker`), replaced by the token only as the mail leaves
(:meth:`InviteLinks.fill`). Tokens issued before this scheme (random, 32 characters) are found
by their digest, so links already sent keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from uuid import UUID

# stands for an invite's token in text kept until it is sent (an e-mail's body)
_MARKER = re.compile(r"@@invite:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@@")

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

    def fill(self, text: str) -> str:
        """``text`` with every invite marker replaced by that invite's token."""
        return _MARKER.sub(lambda m: self.token(UUID(m.group(1))), text)


def marker(invite_id: UUID) -> str:
    """What stands for the invite's token until the text is sent (see :meth:`InviteLinks.fill`)."""
    return f"@@invite:{invite_id}@@"


def digest(token: str) -> str:
    """What the database keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def legacy_shape(token: str) -> bool:
    """Could this be a token issued before HMAC tokens (found by its digest)?"""
    return bool(_LEGACY.fullmatch(token))
