"""Root conftest: the real-infrastructure fixtures of ticketing_local.testing."""

pytest_plugins = ["ticketing_local.testing.plugin"]
