"""Dev and test keys, generated at run time, never committed.

``python -m ticketing_local.keys --out DIR`` writes (when missing):

- ``jwt-private.pem`` / ``jwt-public.pem``: the RS256 pair the dev token minter signs with and the
  services verify with;
- ``wechat/``: the WeChat Pay merchant pair (our API key: we sign requests and JSAPI paySign with
  the private half; the sandbox verifies with the public half), the platform pair (the sandbox
  signs responses and notifications; we verify with the public half), the 32-character APIv3 key
  (AES-256-GCM of notifications) and ``wechat.json`` (mchid, appid, merchant serial, public key id);
- ``mollie/mollie.json``: the Mollie test API key (``test_`` + 30 alphanumerics; the sandbox accepts
  only it, our adapter sends it as ``Authorization: Bearer …``) and the profile id (``pfl_…``);
- ``invite-secret``: the key the orders service derives invite tokens with (HMAC).

Secrets are created with mode 0600 (never readable by others, not even for a moment before a
chmod), in folders of mode 0700.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (it must not exist yet)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_rsa_pair(private_path: Path, public_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.unlink(missing_ok=True)  # half a pair from an interrupted run
    write_secret(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _ensure_pair(private_path: Path, public_path: Path) -> None:
    if not (private_path.exists() and public_path.exists()):
        _write_rsa_pair(private_path, public_path)


def ensure_wechat_keys(out: Path) -> dict[str, Path]:
    """The WeChat Pay key material of the local stack (sandbox and adapter), made once."""
    wx = out / "wechat"
    _private_dir(wx)
    paths = {
        "merchant_private": wx / "merchant-private.pem",
        "merchant_public": wx / "merchant-public.pem",
        "platform_private": wx / "platform-private.pem",
        "platform_public": wx / "platform-public.pem",
        "apiv3_key": wx / "apiv3.key",
        "config": wx / "wechat.json",
    }
    _ensure_pair(paths["merchant_private"], paths["merchant_public"])
    _ensure_pair(paths["platform_private"], paths["platform_public"])
    if not paths["apiv3_key"].exists():
        write_secret(paths["apiv3_key"], _random_alnum(32).encode())
    if not paths["config"].exists():
        paths["config"].write_text(
            json.dumps(
                {
                    "mchid": "1900" + "".join(secrets.choice(string.digits) for _ in range(6)),
                    "appid": "wx" + secrets.token_hex(8),
                    "merchant_serial": secrets.token_hex(20).upper(),
                    "public_key_id": "PUB_KEY_ID_01"
                    + "".join(secrets.choice(string.digits) for _ in range(26)),
                },
                indent=2,
            )
        )
    return paths


def _random_alnum(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def ensure_mollie_keys(out: Path) -> dict[str, Path]:
    """The Mollie credentials of the local stack (sandbox and adapter), made once.

    ``out/mollie/mollie.json`` holds ``{"api_key": "test_…", "profile_id": "pfl_…"}`` (mode 0600).
    """
    mollie = out / "mollie"
    _private_dir(mollie)
    paths = {"config": mollie / "mollie.json"}
    if not paths["config"].exists():
        content = json.dumps(
            {"api_key": "test_" + _random_alnum(30), "profile_id": "pfl_" + _random_alnum(10)},
            indent=2,
        )
        write_secret(paths["config"], content.encode())
    return paths


def ensure_keys(out: Path) -> dict[str, Path]:
    """Generate whatever key files are missing in ``out``; returns their paths."""
    _private_dir(out)
    paths = {
        "jwt_private": out / "jwt-private.pem",
        "jwt_public": out / "jwt-public.pem",
        "invite_secret": out / "invite-secret",
    }
    _ensure_pair(paths["jwt_private"], paths["jwt_public"])
    if not paths["invite_secret"].exists():
        write_secret(paths["invite_secret"], secrets.token_hex(32).encode())
    paths.update({f"wechat_{k}": v for k, v in ensure_wechat_keys(out).items()})
    paths.update({f"mollie_{k}": v for k, v in ensure_mollie_keys(out).items()})
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="generate the local stack's dev keys")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name, path in ensure_keys(args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
