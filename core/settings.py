"""Paths the project needs, in one place (overridable by environment variables).

``SYNTHDX_ASSETS`` points at the folder of shipped models and their cards (default: the
repository's ``assets/``, which an editable install - as the README's commands do -
keeps next to the code).
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    return Path(os.environ.get("SYNTHDX_ASSETS", Path(__file__).resolve().parents[1] / "assets"))


def shipped_models() -> Path:
    """Folder of the models we trained and committed (``assets/models``)."""
    return assets_dir() / "models"
