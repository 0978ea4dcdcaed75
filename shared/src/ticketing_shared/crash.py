"""Named crash points for failure tests of real processes.

``TICKETING_CRASH_POINT=<name>[:<ce_type>]`` makes the process SIGKILL itself the first time it
passes that point (for that event type), exactly as an OOM kill or a pulled plug would. A
marker file (``TICKETING_CRASH_ONCE_FILE``) makes it fire once across restarts. Unset in
production, where ``crash_point()`` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def crash_point(name: str, ce_type: str | None = None) -> None:
    spec = os.environ.get("TICKETING_CRASH_POINT")
    if not spec:
        return
    point, _, only_type = spec.partition(":")
    if point != name or (only_type and only_type != ce_type):
        return
    marker = os.environ.get("TICKETING_CRASH_ONCE_FILE")
    if marker:
        path = Path(marker)
        if path.exists():
            return
        path.write_text(f"{name} {ce_type or ''}\n")
    os.kill(os.getpid(), signal.SIGKILL)
