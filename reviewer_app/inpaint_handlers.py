"""Inpainting logic: slice -> mask (painted, organ, box, placed lesion) -> samples -> files.

Handlers take plain values and return ``(state, {output name: value})`` like the viewer's;
the tab maps names to components. Masks always live on the slice's own pixel grid.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace

import numpy as np

from core.errors import InputError
from core.render import draw_outline, grey_to_rgb, heatmap
from core.windowing import PRESETS, apply_window
from reviewer_app.services import OpenVolume, Services
from reviewer_app.state import InpaintState, ViewerState
from reviewer_app.wiring import Update

MASK_TINT = (60, 230, 60)  # the lesion colour of the viewer's overlay


@dataclass(frozen=True)
class Slice:
    volume: OpenVolume
    index: int
    hu: np.ndarray  # (rows, cols) float32

    @property
    def spacing(self) -> tuple[float, float]:
        return self.volume.volume.spacing[1], self.volume.volume.spacing[2]


def _slice(services: Services, state: InpaintState) -> Slice:
    if state.key is None:
        raise InputError("take a slice first: open a CT in the Viewer tab, then press 'Use the viewer's slice'")
    opened = services.open(state.key)
    return Slice(opened, state.slice_index, opened.volume.array[state.slice_index])


def _display(hu: np.ndarray, state: InpaintState) -> np.ndarray:
    return grey_to_rgb(apply_window(hu, low=state.level - state.width / 2, high=state.level + state.width / 2))


def _mask_views(sl: Slice, state: InpaintState) -> dict:
    rgb = _display(sl.hu, state)
    if state.mask is None:
        return {"preview": rgb, "mask_view": None, "mask_info": "No mask yet."}
    tinted = rgb.copy()
    tinted[state.mask] = (0.6 * tinted[state.mask] + 0.4 * np.array(MASK_TINT)).astype(np.uint8)
    area = int(state.mask.sum()) * sl.spacing[0] * sl.spacing[1]
    return {
        "preview": draw_outline(tinted, state.mask, MASK_TINT),
        "mask_view": (state.mask * np.uint8(255)),
        "mask_info": f"Mask: {int(state.mask.sum())} px ({area / 100:.1f} cm²) from {state.mask_source}.",
    }


def take_slice(services: Services, state: InpaintState, viewer: ViewerState) -> tuple[InpaintState, dict]:
    """Start from the viewer's current axial slice (with the viewer's window)."""
    from core.pipelines.inpaint_volume import check_slice

    if viewer.key is None:
        raise InputError("open a CT volume in the Viewer tab first")
    if services.entry(viewer.key).kind == "slide":
        raise InputError("the viewer shows a 2D slide image; inpainting needs a CT volume (DICOM series or NIfTI)")
    opened = services.open(viewer.key)
    k = check_slice(opened.volume, viewer.index["axial"])
    state = InpaintState(key=viewer.key, slice_index=k, width=viewer.width, level=viewer.level)
    sl = _slice(services, state)
    organs = []
    if opened.volume.labels is not None:
        ids = np.unique(opened.volume.labels.array[k])
        organs = sorted(opened.label_names[i] for i in ids if i in opened.label_names)
    rgb = _display(sl.hu, state)
    entry = services.entry(viewer.key)
    return state, {
        "editor": {"background": rgb, "layers": [], "composite": rgb},
        "organ": Update(choices=organs, value=organs[0] if organs else None),
        "slice_info": f"**{entry.label}**, axial slice {k} (0 = most inferior), {sl.hu.shape[0]} x {sl.hu.shape[1]} px, "
                      f"{sl.spacing[0]:.2f} mm pixels.",
        **_mask_views(sl, state),
        "result": None,
        "uncertainty": None,
        "files": None,
        "provenance": "",
    }


def editor_mask(editor: dict | None, shape: tuple[int, int]) -> np.ndarray:
    """The painted region of a ``gr.ImageEditor`` value on the slice grid ``shape``.

    The paint layer's alpha is the mask; without layers, pixels where the composite
    differs from the background. A canvas of another size is mapped back with nearest
    neighbour, so every slice pixel takes the value of the canvas pixel over it.
    """
    if not editor or editor.get("background") is None:
        raise InputError("nothing painted: take a slice, then paint on it with the brush")
    layers = [np.asarray(x) for x in (editor.get("layers") or []) if x is not None]
    if layers:
        painted = np.zeros(layers[0].shape[:2], bool)
        for layer in layers:
            painted |= layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[-1] == 4 else layer.reshape(layer.shape[:2] + (-1,)).max(-1) > 0
    else:
        bg, comp = np.asarray(editor["background"]), np.asarray(editor.get("composite"))
        if comp.shape != bg.shape:
            raise InputError("the editor returned an unreadable drawing; clear it and paint again")
        painted = np.any(comp[..., :3] != bg[..., :3], axis=-1)
    if painted.shape != tuple(shape):
        ri = (np.arange(shape[0]) * painted.shape[0] // shape[0])[:, None]
        ci = (np.arange(shape[1]) * painted.shape[1] // shape[1])[None, :]
        painted = painted[ri, ci]
    if not painted.any():
        raise InputError("the mask is empty: paint the region to repaint with the brush")
    return painted


def mask_from_editor(services: Services, state: InpaintState, editor: dict) -> tuple[InpaintState, dict]:
    sl = _slice(services, state)
    state = replace(state, mask=editor_mask(editor, sl.hu.shape), mask_source="painting")
    return state, _mask_views(sl, state)


def mask_from_organ(services: Services, state: InpaintState, organ: str, margin_mm: float, box: bool) -> tuple[InpaintState, dict]:
    """An organ of the segmentation on this slice, or its bounding box grown by a margin (healthy negatives)."""
    from core.masks import bbox_mask, organ_mask

    sl = _slice(services, state)
    labels = sl.volume.volume.labels
    if labels is None:
        raise InputError("this volume has no segmentation; paint the mask or place a lesion shape instead")
    if not organ:
        raise InputError("choose an organ present on this slice")
    mask = organ_mask(labels, organ, slice_index=sl.index)
    if not mask.any():
        raise InputError(f"{organ} is not on slice {sl.index}; pick another organ or slice")
    source = organ
    if box:
        mask = bbox_mask(mask, int(round(margin_mm / sl.spacing[0])))
        source = f"{organ} bounding box + {margin_mm:g} mm"
    state = replace(state, mask=mask, mask_source=source)
    return state, {**_mask_views(sl, state), "content": "tissue"}  # an organ, or a healthy negative around it


def place_shape(services: Services, state: InpaintState, name: str, diameter_mm: float, angle_deg: float,
                col: float, row: float) -> tuple[InpaintState, dict]:
    """Centre a lesion outline from the library where the user clicked."""
    from core.mask_library import stamp

    sl = _slice(services, state)
    library = services.shape_library()
    if name not in library:
        raise InputError(f"unknown lesion shape {name!r}; choose one from the list")
    mask = stamp(library[name], image_shape=sl.hu.shape, spacing=sl.spacing, center=(row, col),
                 diameter_mm=float(diameter_mm), angle_deg=float(angle_deg))
    state = replace(state, mask=mask, mask_source=f"{name}, {diameter_mm:g} mm, {angle_deg:g}°")
    return state, {**_mask_views(sl, state), "content": "lesion"}


def set_preset(services: Services, state: InpaintState, preset: str) -> tuple[InpaintState, dict]:
    width, level = PRESETS[preset]
    state = replace(state, width=width, level=level)
    sl = _slice(services, state)
    return state, {**_mask_views(sl, state), **_result_views(sl, state)}


def _result_views(sl: Slice, state: InpaintState) -> dict:
    if state.result is None:
        return {}
    shown = state.result if state.show == "after" else sl.hu
    std = state.std if state.std is not None else np.zeros_like(sl.hu)
    return {
        "result": draw_outline(_display(shown, state), state.result_mask, MASK_TINT),
        "uncertainty": draw_outline(heatmap(std, vmax=max(float(std.max()), 1.0)), state.result_mask, (80, 160, 255)),
    }


def generate(services: Services, state: InpaintState, model_name: str, sampler: str, steps: int, seed: int,
             samples: int, content: str = "lesion", progress=None) -> tuple[InpaintState, dict]:
    """Sample the masked region, show the first sample and the per-pixel std, write all outputs.

    ``content`` ("lesion" or "tissue") is what a content-conditioned model puts in the mask; models
    without content classes ignore it."""
    from core.pipelines.inpaint_volume import write_outputs

    sl = _slice(services, state)
    if state.mask is None:
        raise InputError("make a mask first: paint it, take an organ, or click to place a lesion shape")
    models = services.inpaint_models()
    if not models:
        raise InputError("no inpainting model found: train one with `synthdx train inpaint` and pass --models DIR")
    if model_name not in models:
        raise InputError(f"unknown model {model_name!r}; choose one of {list(models)}")
    pipe = services.pipeline(models[model_name])

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc="denoising", unit="UNet evaluations")

    content = content if pipe.content_classes else None
    out = pipe(sl.hu, state.mask, num_inference_steps=int(steps), sampler=sampler, seed=int(seed),
               num_samples=int(samples), content=content, callback=report)
    edited = sl.volume.volume.array.copy()
    edited[sl.index] = out.images[0]
    out_dir = services.work_dir / "inpaint" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    fmt = "same" if sl.volume.volume.meta.get("source") else "nifti"
    files = write_outputs(sl.volume.volume, sl.index, edited, out, out_dir, fmt=fmt,
                          extra={"mask_source": state.mask_source, "app": "synthdx app"})
    state = replace(state, result=out.images[0], std=out.std, result_mask=out.mask, out_dir=str(out_dir), show="after")
    prov = out.provenance
    painted = f"{prov['content']}, " if prov.get("content") else ""
    text = (f"Model **{prov.get('models', [{}])[0].get('name', model_name)}**, {painted}sampler {sampler}, {steps} steps, "
            f"seeds {prov.get('seeds')}, {len(out.images)} sample(s); max std {float(out.std.max()):.1f} HU. "
            f"Written to `{out_dir}`.")
    return state, {**_result_views(sl, state), "files": sorted(files.values()), "provenance": text,
                   "before_after": "after"}


def toggle(services: Services, state: InpaintState, which: str) -> tuple[InpaintState, dict]:
    if which not in ("before", "after"):
        raise InputError(f"show 'before' or 'after', got {which!r}")
    state = replace(state, show=which)
    return state, _result_views(_slice(services, state), state)
