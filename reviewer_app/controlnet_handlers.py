"""ControlNet tab logic: a label map (from the viewer's slice, painted, or edited) -> generated images -> files.

Handlers take plain values and return ``(state, {output name: value})`` like the viewer's
and the inpainting tab's; the tab maps names to components. The label map lives on the
model's canvas (``resolution`` x ``resolution`` class ids at its pixel size, built by
``core.pipelines.label_condition`` as in training); it is shown enlarged to ``VIEW`` px.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.pipelines.label_condition import palette, render_classes
from core.windowing import apply_window
from reviewer_app.services import Services
from reviewer_app.state import ViewerState

VIEW = 512  # px, side of the displayed condition, result and paint canvas
FILL_CHOICES = ("body", "free")


@dataclass
class ControlNetState:
    """One user's label map and results (deep-copyable).

    Attributes:
        model: display name of the model the map was made for; classes: its class names.
        classes_map: ``(r, r)`` uint8 class ids (0 = free) or None; source: how it was made.
        results: ``(n, r, r)`` HU or ``(n, r, r, 3)`` uint8 of the last generation; out_dir: its files.
    """

    model: str | None = None
    classes: tuple[str, ...] = ()
    classes_map: np.ndarray | None = None
    source: str = ""
    results: np.ndarray | None = None
    out_dir: str | None = None
    history: list = field(default_factory=list)


def _model(services: Services, name: str):
    from core.pipelines.label_models import read_label_model

    models = services.controlnet_models()
    if not models:
        raise InputError(
            "no ControlNet model found: train one with `synthdx train controlnet` and pass --models DIR"
        )
    if name not in models:
        raise InputError(f"unknown model {name!r}; choose one of {list(models)}")
    return read_label_model(models[name])


def enlarge(image: np.ndarray, size: int = VIEW) -> np.ndarray:
    """Nearest-neighbour enlargement of an ``(r, r[, 3])`` image to about ``size`` px (integer factor)."""
    k = max(1, size // image.shape[0])
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def _views(state: ControlNetState) -> dict:
    if state.classes_map is None:
        return {"condition": None, "map_info": "No label map yet."}
    cm, names = state.classes_map, state.classes
    present = [f"{names[i - 1]} ({int((cm == i).sum())} px)" for i in np.unique(cm) if i]
    rgb = enlarge(render_classes(cm, names))
    return {
        "condition": rgb,
        "editor": {"background": rgb, "layers": [], "composite": rgb},
        "map_info": f"Label map from {state.source}: {', '.join(present) or 'all free'}.",
        "edit_class": _update_choices([names[i - 1] for i in np.unique(cm) if i]),
    }


def _update_choices(choices: list[str]):
    from reviewer_app.wiring import Update

    return Update(choices=choices, value=choices[0] if choices else None)


def _with_map(
    state: ControlNetState, spec, name: str, cm: np.ndarray, source: str
) -> tuple[ControlNetState, dict]:
    history = (
        (state.history + [state.classes_map])[-10:]
        if state.classes_map is not None and state.model == name
        else []
    )
    state = replace(
        state,
        model=name,
        classes=spec.classes,
        classes_map=cm.astype(np.uint8),
        source=source,
        history=history,
    )
    return state, _views(state)


def _current(state: ControlNetState, spec, name: str) -> np.ndarray:
    if state.classes_map is None:
        raise InputError("make a label map first: take the viewer's slice, start a blank one, or paint")
    if state.model != name and tuple(spec.classes) != tuple(state.classes):
        raise InputError(
            f"the label map was made for {state.model}, whose classes differ; take the slice again for {name}"
        )
    return state.classes_map


def take_slice(
    services: Services, state: ControlNetState, viewer: ViewerState, model_name: str
) -> tuple[ControlNetState, dict]:
    """The viewer's axial slice as a label map on the model's canvas (segmentation + HU for air/body)."""
    from core.pipelines.label_condition import canvas_center, class_map, cut, resample

    spec = _model(services, model_name)
    if viewer.key is None:
        raise InputError("open a CT volume with a segmentation in the Viewer tab first")
    if services.entry(viewer.key).kind == "slide":
        raise InputError("the viewer shows a slide; take a CT slice, or paint a tissue layout on a blank map")
    vol = services.open(viewer.key).volume
    if vol.labels is None:
        raise InputError("this volume has no segmentation; paint a label map on a blank one instead")
    k = int(viewer.index["axial"])
    cm = class_map(vol.labels.array[k], vol.labels.present(), spec.classes, spec.class_rules, hu=vol.array[k])
    mm = spec.card.get("pixel_mm")
    if mm:
        cm = resample(cm, vol.spacing[1:], float(mm), order=0)
    cm, _ = cut(cm, canvas_center(cm, spec.classes), spec.resolution, 0)
    label = services.entry(viewer.key).label
    return _with_map(state, spec, model_name, cm, f"{label}, axial slice {k}")


def blank(services: Services, state: ControlNetState, model_name: str) -> tuple[ControlNetState, dict]:
    """An all-free map to paint on."""
    spec = _model(services, model_name)
    return _with_map(state, spec, model_name, np.zeros((spec.resolution,) * 2, np.uint8), "a blank map")


def classes_from_painting(composite: np.ndarray, class_names: tuple[str, ...], resolution: int) -> np.ndarray:
    """A painted canvas -> class map: each model pixel takes the palette colour nearest its centre's colour."""
    img = np.asarray(composite)[..., :3].astype(np.int32)
    idx_r = ((np.arange(resolution) + 0.5) * img.shape[0] / resolution).astype(int)
    idx_c = ((np.arange(resolution) + 0.5) * img.shape[1] / resolution).astype(int)
    centres = img[idx_r[:, None], idx_c[None, :]]  # (r, r, 3)
    pal = palette(class_names).astype(np.int32)
    dist = ((centres[:, :, None, :] - pal[None, None]) ** 2).sum(-1)  # (r, r, C + 1)
    return dist.argmin(-1).astype(np.uint8)


def from_painting(
    services: Services, state: ControlNetState, editor: dict | None, model_name: str
) -> tuple[ControlNetState, dict]:
    spec = _model(services, model_name)
    if not editor or editor.get("composite") is None:
        raise InputError("nothing painted: take a slice or a blank map, then paint with the class colours")
    cm = classes_from_painting(editor["composite"], spec.classes, spec.resolution)
    return _with_map(state, spec, model_name, cm, "painting")


def erase(
    services: Services, state: ControlNetState, class_name: str, fill: str, model_name: str
) -> tuple[ControlNetState, dict]:
    """Remove one class from the map: its pixels become ``body`` (surrounding tissue) or free."""
    spec = _model(services, model_name)
    cm = _current(state, spec, model_name).copy()
    if class_name not in spec.classes:
        raise InputError(f"choose a class on the map, got {class_name!r}")
    if fill not in FILL_CHOICES or (fill == "body" and "body" not in spec.classes):
        raise InputError(
            f"fill must be one of {[f for f in FILL_CHOICES if f in spec.classes or f == 'free']}, got {fill!r}"
        )
    cm[cm == spec.classes.index(class_name) + 1] = spec.classes.index(fill) + 1 if fill == "body" else 0
    return _with_map(state, spec, model_name, cm, f"{state.source}, {class_name} erased ({fill})")


def grow(
    services: Services, state: ControlNetState, class_name: str, pixels: int, model_name: str
) -> tuple[ControlNetState, dict]:
    """Grow (``pixels`` > 0) or shrink (< 0) one class; growth never spreads into air, shrinking leaves body."""
    from scipy import ndimage

    spec = _model(services, model_name)
    cm = _current(state, spec, model_name).copy()
    if class_name not in spec.classes:
        raise InputError(f"choose a class on the map, got {class_name!r}")
    k = spec.classes.index(class_name) + 1
    region = cm == k
    if not region.any():
        raise InputError(f"{class_name} is not on this map; paint it first")
    if pixels > 0:
        air = spec.classes.index("air") + 1 if "air" in spec.classes else -1
        cm[ndimage.binary_dilation(region, iterations=int(pixels)) & (cm != air)] = k
    elif pixels < 0:
        kept = ndimage.binary_erosion(region, iterations=-int(pixels))
        cm[region & ~kept] = spec.classes.index("body") + 1 if "body" in spec.classes else 0
    return _with_map(
        state,
        spec,
        model_name,
        cm,
        f"{state.source}, {class_name} {'grown' if pixels > 0 else 'shrunk'} by {abs(int(pixels))} px",
    )


def undo(services: Services, state: ControlNetState) -> tuple[ControlNetState, dict]:
    if not state.history:
        raise InputError("nothing to undo")
    state = replace(
        state, classes_map=state.history[-1], history=state.history[:-1], source=f"{state.source} (undone)"
    )
    return state, _views(state)


def display(images: np.ndarray) -> list[np.ndarray]:
    """Results as display RGB (CT: soft-tissue window)."""
    if images.ndim == 4:
        return list(images)
    return [np.repeat(apply_window(im, low=-160.0, high=240.0)[..., None], 3, axis=-1) for im in images]


def generate(
    services: Services,
    state: ControlNetState,
    model_name: str,
    steps: int,
    seed: int,
    scale: float,
    samples: int,
    progress=None,
) -> tuple[ControlNetState, dict]:
    """Sample images that follow the map; show the first next to the condition, write every file."""
    from reviewer_app.commands.generate import write_outputs

    spec = _model(services, model_name)
    cm = _current(state, spec, model_name)
    pipe = services.label_pipeline(spec.path)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc="denoising", unit="steps")

    out = pipe(
        cm,
        num_inference_steps=int(steps),
        seed=int(seed),
        num_samples=int(samples),
        conditioning_scale=float(scale),
        callback=report,
    )
    out_dir = services.work_dir / "controlnet" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    files = write_outputs(out, spec, out_dir, extra={"app": "synthdx app", "label_map_source": state.source})
    shown = display(out.images)
    state = replace(state, results=out.images, out_dir=str(out_dir))
    text = (f"Model **{spec.name}**, {steps} steps, seeds {out.provenance['seeds']}, conditioning scale {scale:g}; "
            f"{spec.resolution} x {spec.resolution} px. Written to `{out_dir}`.")  # fmt: skip
    return state, {"result": enlarge(shown[0]), "samples_view": [enlarge(s, 256) for s in shown], "provenance": text,
                   "files": sorted(v for k, v in files.items() if k in ("preview", "result", "provenance", "condition"))}  # fmt: skip


def regimes(services: Services, state: ControlNetState, model_name: str) -> tuple[ControlNetState, dict]:
    """The training-regime comparison stored with the model (grid image and metrics), if its card has one."""
    from PIL import Image

    spec = _model(services, model_name)
    comparison = spec.card.get("comparison")
    if not comparison:
        return state, {
            "regime_grid": None,
            "regime_info": f"{spec.name} has no training-regime comparison in its card.",
        }
    grid = Path(spec.path) / comparison.get("grid", "")
    rows = [
        "| ControlNet trained on | base steps | FID | KID | mean Dice, organs | Dice, air/body |",
        "|---|---|---|---|---|---|",
    ]
    for r in comparison.get("regimes", []):
        rows.append(f"| {r['regime']} | {r.get('base_steps')} | {r['fid']:.2f} | {r['kid_mean']:.4f} ± {r['kid_std']:.4f} | "
                    f"{r['dice_mean']} | {r['dice_air_body']} |")  # fmt: skip
    ref = comparison.get("reference", {})
    lines = [f"- {k.replace('_', ' ')}: {v}" for k, v in ref.items()]
    text = (
        "\n".join(rows)
        + "\n\n"
        + "\n".join(lines)
        + (f"\n\n{comparison['note']}" if comparison.get("note") else "")
    )
    image = np.asarray(Image.open(grid).convert("RGB")) if grid.is_file() else None
    return state, {"regime_grid": image, "regime_info": text}
