"""Provider adapters (WeChat Pay v3, Mollie v2) and the set of them a process uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from .base import ProviderError
from .mollie import MollieClient
from .wechatpay import WeChatPayClient

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["ProviderError", "Providers"]


@dataclass(frozen=True)
class Providers:
    wechat: WeChatPayClient
    mollie: MollieClient

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> Providers:
        budget = settings.provider_retry_budget_s
        return cls(
            wechat=WeChatPayClient(settings.wechat_config(), http, budget_s=budget),
            mollie=MollieClient(settings.mollie_config(), http, budget_s=budget),
        )
