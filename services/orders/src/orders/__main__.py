"""``python -m orders api|worker|migrate|outbox replay --since 15m``."""

from pathlib import Path

from ticketing_shared.cli import main_for

from .api import create_app
from .settings import Settings
from .worker import create_worker

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

if __name__ == "__main__":
    main_for(
        service="orders",
        settings_factory=Settings,
        api_factory=create_app,
        worker_factory=create_worker,
        migrations_dir=MIGRATIONS,
    )
