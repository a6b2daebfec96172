"""Per-browser-session state kept in ``gr.State`` (small, deep-copyable, no volumes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


@dataclass
class InpaintState:
    """One user's inpainting session on one axial slice.

    Attributes:
        key: catalogue key of the volume. slice_index: axial index (0 = most inferior).
        mask: (rows, cols) bool on the slice grid. mask_source: how it was made (provenance).
        width, level: display window.
        result: (rows, cols) float32 HU, the first sample's edited slice; std: per-pixel std
            over samples; result_mask: the mask the result was made with.
        out_dir: where the outputs were written. show: "after" or "before".
    """

    key: str | None = None
    slice_index: int = 0
    mask: np.ndarray | None = None
    mask_source: str = ""
    width: float = 400.0
    level: float = 40.0
    result: np.ndarray | None = None
    std: np.ndarray | None = None
    result_mask: np.ndarray | None = None
    out_dir: str | None = None
    show: str = "after"
