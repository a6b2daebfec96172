"""Per-browser-session state kept in ``gr.State`` (small, deep-copyable, no volumes)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ViewerState:
    """What one user is looking at.

    Attributes:
        key: catalogue key of the open image (None before the first pick).
        kind: ``"volume"`` or ``"slide"``.
        index: slice index per plane (axial = z, coronal = y, sagittal = x).
        active: the view that keyboard and wheel act on.
        width: window width (HU for CT). level: window centre.
        overlay: show the segmentation. opacity: its opacity in [0, 1].
        hidden: label names not drawn (tissue classes by default).
        up_is_cranial: Up arrow / wheel-up moves towards the head (PACS habit); False reverses.
    """

    key: str | None = None
    kind: str = "volume"
    index: dict[str, int] = field(default_factory=lambda: {"axial": 0, "coronal": 0, "sagittal": 0})
    active: str = "axial"
    width: float = 400.0
    level: float = 40.0
    overlay: bool = True
    opacity: float = 0.35
    hidden: tuple[str, ...] = ()
    up_is_cranial: bool = True
