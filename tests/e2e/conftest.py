"""The end-to-end tests run against the whole local stack: the ``stack`` fixture and the shop
helpers live in ``tests/conftest.py``, shared with the security suite."""

from tests.conftest import RefundShop, Shop, Stack

__all__ = ["RefundShop", "Shop", "Stack"]
