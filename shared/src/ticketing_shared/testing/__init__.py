"""pytest fixtures on real infrastructure: embedded PostgreSQL + Tansu, or testcontainers.

Load with ``pytest_plugins = ["ticketing_shared.testing.plugin"]`` in the root conftest.
"""

from .helpers import ServiceProcess, wait_until

__all__ = ["ServiceProcess", "wait_until"]
