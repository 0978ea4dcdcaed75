"""pytest fixtures on real infrastructure: embedded PostgreSQL + Tansu, or testcontainers.

Load with ``pytest_plugins = ["ticketing_local.testing.plugin"]`` in the root conftest.
"""

from .helpers import ServiceProcess, json_refs, publish_event, wait_until

__all__ = ["ServiceProcess", "json_refs", "publish_event", "wait_until"]
