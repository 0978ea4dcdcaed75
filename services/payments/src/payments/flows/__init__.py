"""One flow per payment provider, behind one small protocol: how a checkout starts, and how the
provider tasks (close an unpaid payment, execute a refund, withdraw one) are carried out.

What each provider tells us back differs too much to share a signature (WeChat Pay pushes signed,
encrypted notifications; Mollie's webhook only names a payment we must fetch), so each flow has
its own receiver beside the protocol's methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from ..providers import Providers
from .mollie import MollieFlow
from .protocol import Flow, UnknownTask
from .wechatpay import WeChatPayFlow

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Flow", "Flows", "MollieFlow", "UnknownTask", "WeChatPayFlow"]


@dataclass(frozen=True)
class Flows:
    """The flows of one process, by provider."""

    wechatpay: WeChatPayFlow
    mollie: MollieFlow

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> Flows:
        providers = Providers.from_settings(settings, http)
        return cls(
            wechatpay=WeChatPayFlow(
                providers.wechat,
                fee_bps=settings.wechat_fee_bps,
                app_fee_bps=settings.app_fee_bps,
            ),
            mollie=MollieFlow(
                providers.mollie,
                fee_bps=settings.mollie_fee_bps,
                fee_fixed=settings.mollie_fee_fixed,
                app_fee_bps=settings.app_fee_bps,
            ),
        )

    def of(self, provider: str) -> Flow:
        """The flow of ``provider`` (:class:`UnknownTask` for a provider we do not have)."""
        by_provider: dict[str, Flow] = {"wechatpay": self.wechatpay, "mollie": self.mollie}
        flow = by_provider.get(provider)
        if flow is None:
            raise UnknownTask(f"no flow for the provider {provider!r}")
        return flow
