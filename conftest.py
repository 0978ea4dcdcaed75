"""Root conftest: the real-infrastructure fixtures of ticketing_shared.testing."""

pytest_plugins = ["ticketing_shared.testing.plugin"]
