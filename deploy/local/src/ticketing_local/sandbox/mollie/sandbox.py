"""The assembled sandbox: one emulated Mollie account (one profile, test and live mode).

Its layers stack, each in its own module and each using the ones below it: :mod:`.state`
(stores, background tasks, faults, idempotency keys, balance) → :mod:`.webhooks` (deliveries) →
:mod:`.payments` → :mod:`.refunds`. The HTTP layer is :mod:`.app`.
"""

from __future__ import annotations

from .refunds import Refunds


class MollieSandbox(Refunds):
    """State, protocol and background deliveries of one emulated Mollie account."""
