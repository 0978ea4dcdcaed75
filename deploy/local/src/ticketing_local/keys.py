"""Dev and test keys, generated at run time, never committed.

``python -m ticketing_local.keys --out DIR`` writes (when missing):

- ``jwt-private.pem`` / ``jwt-public.pem``: the RS256 pair the dev token minter signs with and the
  services verify with.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _write_rsa_pair(private_path: Path, public_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(private_path, 0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ensure_keys(out: Path) -> dict[str, Path]:
    """Generate whatever key files are missing in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"jwt_private": out / "jwt-private.pem", "jwt_public": out / "jwt-public.pem"}
    if not (paths["jwt_private"].exists() and paths["jwt_public"].exists()):
        _write_rsa_pair(paths["jwt_private"], paths["jwt_public"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="generate the local stack's dev keys")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name, path in ensure_keys(args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
