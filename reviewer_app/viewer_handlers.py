"""Viewer logic: payloads in, ``(state, {output name: value})`` out. No layout here.

The tab module maps output names to components. Every handler renders only what
changed (one view when scrolling, all three when the window changes).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.errors import InputError
from core.render import AXIS_OF, PLANES, TISSUE_CLASSES, Plane, display_to_voxel, label_colour, render_view
from core.windowing import PRESETS
from reviewer_app.services import OpenVolume, Services
from reviewer_app.state import ViewerState
from reviewer_app.wiring import Update

SLIDE_VIEW = 768  # px, side of the slide thumbnail and of the zoomed region
# Index change of "Up" per view: towards the head (axial), anterior (coronal), patient right (sagittal).
UP = {"axial": 1, "coronal": -1, "sagittal": -1}
MOVES = {"up": 1, "down": -1, "pageup": 10, "pagedown": -10}
SLIDE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs")


def _volume(services: Services, state: ViewerState) -> OpenVolume:
    if state.key is None:
        raise InputError("pick an image first")
    opened = services.open(state.key)
    if not isinstance(opened, OpenVolume):
        raise InputError("this is a slide image; slice controls apply to volumes")
    return opened


def render(services: Services, state: ViewerState, plane: Plane) -> np.ndarray:
    """The rendered view of one plane at the state's slice, window and overlay."""
    ov = _volume(services, state)
    vol = ov.volume
    return render_view(
        vol.array,
        plane=plane,
        index=state.index[plane],
        low=state.level - state.width / 2,
        high=state.level + state.width / 2,
        spacing=vol.spacing,
        labels=vol.labels.array if (vol.labels is not None and state.overlay) else None,
        palette=ov.palette,
        opacity=state.opacity,
        shown=_shown(ov, state.hidden),
    )


def _shown(ov: OpenVolume, hidden: tuple[str, ...]) -> np.ndarray | None:
    if ov.palette is None or not hidden:
        return None
    shown = np.ones(len(ov.palette), bool)
    for label, name in ov.label_names.items():
        shown[label] = name not in hidden
    return shown


def _views(services: Services, state: ViewerState, planes=PLANES) -> dict:
    out: dict = {plane: render(services, state, plane) for plane in planes}
    for plane in planes:
        out[f"{plane}_slider"] = state.index[plane]
    out["position"] = position_text(services, state)
    return out


def position_text(services: Services, state: ViewerState) -> str:
    vol = _volume(services, state).volume
    z, y, x = (state.index[p] for p in PLANES)
    lps = vol.world_mm(z, y, x) * np.array([-1.0, -1.0, 1.0])  # RAS -> DICOM patient LPS
    return (
        f"Slices: axial {z + 1}/{vol.shape[0]}, coronal {y + 1}/{vol.shape[1]}, sagittal {x + 1}/{vol.shape[2]}"
        f" · cursor at ({lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f}) mm LPS"
    )


def legend_html(ov: OpenVolume, hidden: tuple[str, ...] = ()) -> str:
    if not ov.label_names:
        return "<p class='sdx-legend-empty'>No segmentation for this image.</p>"
    items = "".join(
        f"<li><span class='sdx-swatch' style='background:rgb{label_colour(name)}'></span>{name}</li>"
        for _, name in sorted(ov.label_names.items())
        if name not in hidden
    )
    return f"<ul class='sdx-legend'>{items}</ul>"


def open_image(services: Services, state: ViewerState, key: str) -> tuple[ViewerState, dict]:
    """Open a catalogue entry (or upload) and render it from its centre."""
    entry = services.entry(key)
    opened = services.open(key)
    if not isinstance(opened, OpenVolume):
        return _open_slide(state, key, opened, entry.note)
    vol = opened.volume
    index = {p: vol.shape[AXIS_OF[p]] // 2 for p in PLANES}
    if opened.label_names:  # start where the segmentation is
        zz, yy, xx = np.nonzero(vol.labels.array)
        index = {"axial": int(np.median(zz)), "coronal": int(np.median(yy)), "sagittal": int(np.median(xx))}
    width, level = (state.width, state.level) if vol.modality == "CT" else _auto_window(vol.array)
    hidden = tuple(n for n in opened.label_names.values() if n in TISSUE_CLASSES)
    state = replace(state, key=key, kind="volume", index=index, width=width, level=level, hidden=hidden)
    sz, sy, sx = vol.spacing
    warn = "".join(f"\n\n⚠️ {w}" for w in vol.meta.get("warnings", []))
    info = (
        f"**{entry.label}**  \n{vol.modality}, {vol.shape[0]} x {vol.shape[1]} x {vol.shape[2]} voxels (z, y, x), "
        f"{sz:.2f} x {sy:.2f} x {sx:.2f} mm. {entry.note}{warn}"
    )
    out = _views(services, state)
    out.update(
        info=info,
        legend=legend_html(opened, hidden),
        labels_shown=Update(
            choices=sorted(opened.label_names.values()),
            value=[n for n in sorted(opened.label_names.values()) if n not in hidden],
            visible=bool(opened.label_names),
        ),
        volume_panel=Update(visible=True),
        slide_panel=Update(visible=False),
        width=width,
        level=level,
        sliders_max={p: vol.shape[AXIS_OF[p]] - 1 for p in PLANES},
        pixel="Click a pixel to read its value.",
    )
    return state, out


def _auto_window(array: np.ndarray) -> tuple[float, float]:
    """MR/other: a window over the 1st-99th percentile (HU presets mean nothing there)."""
    lo, hi = np.percentile(array[:: max(1, array.shape[0] // 16)], [1, 99])
    return float(max(hi - lo, 1.0)), float((hi + lo) / 2)


def _open_slide(state: ViewerState, key: str, slide, note: str) -> tuple[ViewerState, dict]:
    state = replace(state, key=key, kind="slide")
    lv0 = slide.levels[0]
    mpp = f", {slide.mpp:.3f} µm/px" if getattr(slide, "mpp", None) else ""
    levels = [f"{i}: {lv.width} x {lv.height} (1/{lv.downsample:g})" for i, lv in enumerate(slide.levels)]
    return state, {
        "info": f"**Slide** {lv0.width} x {lv0.height} px{mpp}, {len(slide.levels)} level(s). {note}",
        "legend": "",
        "volume_panel": Update(visible=False),
        "slide_panel": Update(visible=True),
        "thumb": slide.thumbnail(max_size=SLIDE_VIEW),
        "zoom": None,
        "slide_levels": Update(choices=levels, value=levels[0]),
    }


def open_upload(services: Services, state: ViewerState, path: str) -> tuple[ViewerState, dict]:
    """Register an uploaded file as a private entry and open it."""
    if not path:
        raise InputError("the upload is empty; choose a file")
    kind = "slide" if path.lower().endswith(SLIDE_SUFFIXES) else "volume"
    return open_image(services, state, services.register_upload(path, kind=kind).key)


def slide_zoom(
    services: Services, state: ViewerState, level_label: str, size: int, col: float, row: float
) -> tuple[ViewerState, dict]:
    """The region of ``size`` x ``size`` pixels at a level, centred where the thumbnail was clicked."""
    slide = services.open(state.key)
    level = int(str(level_label).split(":")[0])
    thumb_h, thumb_w = slide.thumbnail(max_size=SLIDE_VIEW).shape[:2]
    lv0, lv = slide.levels[0], slide.levels[level]
    cx, cy = col / thumb_w * lv0.width / lv.downsample, row / thumb_h * lv0.height / lv.downsample
    region = slide.read_region(level=level, x=int(cx - size / 2), y=int(cy - size / 2), width=size, height=size)
    where = f"Region centred at ({cx * lv.downsample:.0f}, {cy * lv.downsample:.0f}) px of level 0, level {level}"
    return state, {"zoom": region, "zoom_info": where}


def step(services: Services, state: ViewerState, move: str) -> tuple[ViewerState, dict]:
    """Keyboard/wheel navigation of the active view: up, down, pageup, pagedown, home, end."""
    plane = state.active
    n = _volume(services, state).volume.shape[AXIS_OF[plane]]
    if move in MOVES:
        new = state.index[plane] + MOVES[move] * UP[plane] * (1 if state.up_is_cranial else -1)
    elif move == "home":
        new = 0
    elif move == "end":
        new = n - 1
    else:
        raise ValueError(f"unknown move {move!r}")
    return set_slice(services, state, plane, new)


def set_slice(services: Services, state: ViewerState, plane: Plane, index: float) -> tuple[ViewerState, dict]:
    n = _volume(services, state).volume.shape[AXIS_OF[plane]]
    state = replace(state, index={**state.index, plane: int(min(max(round(index), 0), n - 1))})
    return state, _views(services, state, (plane,))


def set_window(services: Services, state: ViewerState, width: float, level: float) -> tuple[ViewerState, dict]:
    if width <= 0:
        raise InputError(f"window width must be > 0 HU, got {width}")
    state = replace(state, width=float(width), level=float(level))
    return state, {**_views(services, state), "width": width, "level": level}


def set_preset(services: Services, state: ViewerState, name: str) -> tuple[ViewerState, dict]:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    width, level = PRESETS[name]
    state, out = set_window(services, state, width, level)
    return state, {**out, "preset": name}


def set_overlay(services: Services, state: ViewerState, show: bool, opacity: float) -> tuple[ViewerState, dict]:
    state = replace(state, overlay=bool(show), opacity=float(opacity))
    return state, _views(services, state)


def set_labels_shown(services: Services, state: ViewerState, names: list[str]) -> tuple[ViewerState, dict]:
    """Draw only the chosen labels."""
    ov = _volume(services, state)
    hidden = tuple(n for n in ov.label_names.values() if n not in set(names or []))
    state = replace(state, hidden=hidden)
    return state, {**_views(services, state), "legend": legend_html(ov, hidden)}


def click(services: Services, state: ViewerState, plane: Plane, col: float, row: float) -> tuple[ViewerState, dict]:
    """Read the value under a click and move the other two views to that point (linked cursor)."""
    vol = _volume(services, state).volume
    z, y, x = display_to_voxel(
        plane=plane, index=state.index[plane], row=row, col=col, volume_shape=vol.shape, spacing=vol.spacing
    )
    state = replace(state, index={"axial": z, "coronal": y, "sagittal": x}, active=plane)
    value = float(vol.array[z, y, x])
    unit = "HU" if vol.modality == "CT" else "(raw)"
    lps = vol.world_mm(z, y, x) * np.array([-1.0, -1.0, 1.0])
    label = ""
    if vol.labels is not None and vol.labels.array[z, y, x]:
        lid = int(vol.labels.array[z, y, x])
        label = f" · label: {vol.labels.names.get(lid, lid)}"
    text = (
        f"**{value:.0f} {unit}** at voxel (z {z}, y {y}, x {x}), "
        f"({lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f}) mm LPS{label}"
    )
    others = tuple(p for p in PLANES if p != plane)
    return state, {**_views(services, state, others), "pixel": text}
