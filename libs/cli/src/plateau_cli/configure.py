"""``plateau config apply``: hand a configuration file to the acd's own configuration tool.

The CLI does not interpret the file: ``python -m plateau_acd.configure`` (the acd's code,
writing to the acd's store with the acd's role) validates it, prints every problem with its
line and field, and records what changed. ``plateau up`` uses the same tool to apply the
shipped demo tenant the first time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from plateau_runtime.errors import PlateauError
from plateau_runtime.services import service

ACD = service("acd")
TOOL = [sys.executable, "-m", f"{ACD.package}.configure", "apply"]
_TIMEOUT_S = 120.0


def _run(args: list[str], database_url: str, *, capture: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLATEAU_DATABASE_URL": database_url}
    try:
        return subprocess.run(
            [*TOOL, *args],
            env=env,
            text=True,
            capture_output=capture,
            stdin=subprocess.DEVNULL,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PlateauError(
            f"applying the configuration did not finish within {_TIMEOUT_S:.0f} s",
            "check that PostgreSQL is up",
        ) from None


def apply_file(path: Path, database_url: str) -> int:
    """Apply ``path`` to the acd's store; its output goes to ours; its exit status."""
    return _run([str(path)], database_url, capture=False).returncode


def apply_demo(database_url: str) -> list[str]:
    """Apply the shipped demo tenant unless configured before; the lines it printed."""
    done = _run(["--demo"], database_url, capture=True)
    if done.returncode != 0:
        raise PlateauError(
            "the demo tenant could not be configured: "
            + " ".join((done.stderr or done.stdout).split())[:500],
            "see the message above; `plateau config apply FILE` configures tenants by hand",
        )
    return [line for line in done.stdout.splitlines() if line.strip()]
