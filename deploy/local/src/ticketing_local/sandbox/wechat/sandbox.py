"""The assembled sandbox: one emulated merchant account.

Its layers stack, each in its own module and each using the ones below it: :mod:`.state`
(stores, clock, background tasks, faults) → :mod:`.notify` (deliveries) → :mod:`.orders` →
:mod:`.refunds`. Signatures and request verification are :mod:`.crypto`'s; the HTTP layer is
:mod:`.app`.
"""

from __future__ import annotations

from .refunds import Refunds


class WeChatSandbox(Refunds):
    """State, protocol and background deliveries of one emulated merchant account."""
