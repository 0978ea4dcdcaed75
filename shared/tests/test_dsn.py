"""Which role a database URL names."""

from __future__ import annotations

import pytest

from ticketing_shared import db


@pytest.mark.parametrize(
    ("dsn", "role"),
    [
        ("postgresql://orders:secret@db:5432/orders", "orders"),
        ("postgresql://orders@db/orders", "orders"),
        ("postgresql://ord%40ers:p%3Ass@db/orders", "ord@ers"),
        ("postgresql://db:5432/orders?user=payments&sslmode=require", "payments"),
        ("postgresql://db/orders?password=p@ss", None),  # an @ in the query is not a user
    ],
)
def test_the_role_a_dsn_connects_as(
    dsn: str, role: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grants go to the role the service really connects as, however its DSN names it (and,
    when it names none, to libpq's default)."""
    monkeypatch.setenv("PGUSER", "from_env")
    assert db.user_of(dsn) == (role or "from_env")
