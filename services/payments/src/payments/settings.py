"""Settings of the payments service (environment variables prefixed ``PAYMENTS_``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings

from .providers.mollie import MollieConfig
from .providers.wechatpay import WeChatPayConfig


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "payments"
    # the runtime role (never a superuser nor the tables' owner: row-level security binds it)
    database_url: str = "postgresql://payments@127.0.0.1:55432/payments"
    api_port: int = 8002
    worker_port: int = 8012
    # where providers reach our webhooks (the gateway in front of this service)
    public_base_url: str = "http://127.0.0.1:8080"
    # WeChat Pay: base URL of the API (the local sandbox by default; https://api.mch.weixin.qq.com
    # in production) and its credentials, either as files in a keys folder laid out like the local
    # stack's (wechat/wechat.json + PEM files) or one by one
    wechat_base_url: str = "http://127.0.0.1:8101"
    wechat_keys_dir: Path | None = None
    wechat_mchid: str | None = None
    wechat_appid: str | None = None
    wechat_merchant_serial: str | None = None
    wechat_public_key_id: str | None = None
    wechat_merchant_key_file: Path | None = None
    wechat_platform_public_key_file: Path | None = None
    wechat_apiv3_key_file: Path | None = None
    # Mollie: base URL (the local sandbox by default; https://api.mollie.com in production) and
    # the API key, from the keys folder (mollie/mollie.json) or given directly; where the buyer
    # returns after checkout ({order_id} is replaced)
    mollie_base_url: str = "http://127.0.0.1:8102"
    mollie_keys_dir: Path | None = None
    mollie_api_key: str | None = None
    mollie_api_key_file: Path | None = None
    mollie_redirect_url: str = "http://127.0.0.1:8080/orders/{order_id}"
    # fees recorded with each payment, in basis points of the amount (plus a fixed part for Mollie)
    wechat_fee_bps: int = 60
    mollie_fee_bps: int = 0
    mollie_fee_fixed: int = 29
    app_fee_bps: int = 100
    # Mollie attempts (and open refunds) older than after_s are asked about every every_s, in
    # case their webhooks were lost; the worker looks for such attempts every interval_s (a draw
    # between half and all of it, so several workers do not look in step)
    mollie_reconcile_after_s: float = 120.0
    mollie_reconcile_every_s: float = 300.0
    reconcile_interval_s: float = 30.0
    # Mollie webhooks of one payment id start a fetch from Mollie at most once per interval (per
    # API process; the webhooks in between share the next fetch); at most max_ids ids are tracked
    mollie_webhook_min_interval_ms: int = 1000
    mollie_webhook_max_ids: int = 10_000
    provider_timeout_s: float = 10.0
    # the pauses between attempts of one provider call (a Retry-After included) stay within this;
    # a longer wait is left to the caller's own retry (the next task attempt, Mollie's next call)
    provider_retry_budget_s: float = 5.0
    task_interval_s: float = 0.2
    task_max_attempts: int = 10
    # how long the providers' notifications are kept (redacted), as evidence of what they said
    notification_retention_days: float = 90.0
    # a checkout for an order payments has not learned yet (orders.events is ~30 ms behind the
    # purchase) waits this long for it before answering 404
    order_wait_ms: int = Field(2000, ge=0, le=30_000)

    def wechat_config(self) -> WeChatPayConfig:
        base = self.wechat_keys_dir / "wechat" if self.wechat_keys_dir else None
        meta = json.loads((base / "wechat.json").read_text()) if base else {}

        def pick(explicit: Path | None, name: str) -> bytes:
            path = explicit or (base / name if base else None)
            if path is None:
                raise RuntimeError(
                    f"WeChat Pay key {name} not configured (PAYMENTS_WECHAT_KEYS_DIR)"
                )
            return path.read_bytes()

        return WeChatPayConfig.from_pem(
            base_url=self.wechat_base_url,
            mchid=self.wechat_mchid or meta["mchid"],
            appid=self.wechat_appid or meta["appid"],
            merchant_serial=self.wechat_merchant_serial or meta["merchant_serial"],
            merchant_private_pem=pick(self.wechat_merchant_key_file, "merchant-private.pem"),
            platform_public_pem=pick(self.wechat_platform_public_key_file, "platform-public.pem"),
            platform_public_key_id=self.wechat_public_key_id or meta["public_key_id"],
            apiv3_key=pick(self.wechat_apiv3_key_file, "apiv3.key").decode(),
            notify_url=f"{self.public_base_url.rstrip('/')}/v1/webhooks/wechatpay",
        )

    def mollie_config(self) -> MollieConfig:
        key = self.mollie_api_key
        if key is None and self.mollie_api_key_file is not None:
            key = self.mollie_api_key_file.read_text().strip()
        if key is None and self.mollie_keys_dir is not None:
            key = json.loads((self.mollie_keys_dir / "mollie" / "mollie.json").read_text())[
                "api_key"
            ]
        if not key:
            raise RuntimeError(
                "Mollie API key not configured (PAYMENTS_MOLLIE_API_KEY, …_API_KEY_FILE or …_KEYS_DIR)"
            )
        return MollieConfig(
            base_url=self.mollie_base_url,
            api_key=key,
            webhook_url=f"{self.public_base_url.rstrip('/')}/v1/webhooks/mollie",
            redirect_url=self.mollie_redirect_url,
        )
