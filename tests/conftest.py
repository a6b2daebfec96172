"""Shared fixtures.

``shared_data`` is the one way tests reach the real samples in ``../shared/data``
(override with ``SYNTHDX_SHARED_DATA``); tests that need it skip, with the reason,
when it is absent. CI always has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("SYNTHDX_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data`` (real CT, H&E and reader-study samples)."""
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"real sample data not found at {path} (set SYNTHDX_SHARED_DATA or check out ../shared)")
    return path
