"""Fixtures of the end-to-end tests (helpers live in plateau_e2e.py)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from plateau_e2e import make_home, processes_referencing


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh PLATEAU_HOME (not created yet) in a scratch directory, removed afterwards."""
    path = make_home()
    yield path
    for process in processes_referencing(path):
        with contextlib.suppress(psutil.Error):
            process.kill()
    shutil.rmtree(path.parent, ignore_errors=True)
