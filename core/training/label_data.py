"""Training examples for label-conditioned generation: (image, label map) squares at the model resolution.

Two kinds of data become the same examples:

* **CT sources** (``DataSource``: a volume with a label map or organ-mask folder). Every
  axial slice is mapped to the model's classes (``core.pipelines.label_condition``),
  resampled to ``pixel_mm`` and kept in memory; an example is a square canvas cut around
  the body's centre, shifted by a few pixels at random. A source whose labels are all
  lesions (IBSI STS: a tumour mask on a limb) is *partial*: its unlabelled body is free,
  not ``body``, and its examples make up ``partial_weight`` of the draws.
* **Pairs folders** (H&E tiles and their tissue layout, or any images)::

      <folder>/classes.json        {"classes": ["stroma", ...], "licence": "...", "attribution": "..."}
      <folder>/images/<name>.png   RGB or grey 8-bit (or <name>.npy: CT in HU)
      <folder>/labels/<name>.png   grey class ids, 0 = free, i = classes[i - 1]

  An example is a random square of the pair (the whole pair when it is smaller: the rest
  is invalid).

``LabelExamples[i]`` is a pure function of ``(seed, i)`` (resume-exact, see
``core.training.loop``) and holds ``image`` ``(ch, r, r)`` in [-1, 1], ``control``
``(C, r, r)`` one-hot after condition ablation (``free_body_p``, ``drop_class_p``),
``valid`` ``(1, r, r)`` (pixels with real data; the loss ignores the rest) and
``present`` ``(C,)`` (classes on the unablated square).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.normalization import normalize_hu
from core.pipelines.label_condition import canvas_center, class_map, cut, one_hot, resample
from core.training.config import DataSource
from core.training.label_config import LabelDataConfig


@dataclass
class LabelSlice:
    """One image with its class map on the model's pixel grid (any size)."""

    image: np.ndarray  # (h, w) float32 HU, or (h, w, 3) uint8 RGB
    classes: np.ndarray  # (h, w) uint8 class ids, 0 = free
    source: str
    index: int  # slice index in the volume, or file number in a pairs folder
    partial: bool = False
    kind: str = "hu"  # "hu" | "rgb"


def load_ct_slices(
    sources: tuple[DataSource, ...] | list[DataSource], data: LabelDataConfig, *, resolution: int
) -> list[LabelSlice]:
    """Axial slices of CT sources with enough body, mapped to the model's classes at ``pixel_mm``.

    A slice is kept when its non-air pixels cover ``min_valid_fraction`` of a canvas of ``resolution``.
    """
    from core.io.load import load_volume
    from core.masks import lesion_label_ids

    classes, rules = tuple(data.classes), data.rules()
    air, body = classes.index("air") + 1, classes.index("body") + 1
    out = []
    for src in sources:
        vol = load_volume(src.image, labels=src.labels, modality="CT")
        if vol.labels is None:
            raise InputError(
                f"{src.name or src.image}: no label map; label-conditioned training needs one per volume"
            )
        names = vol.labels.present()
        lesions = set(lesion_label_ids(vol.labels, src.lesion_labels))
        if lesions:
            names = {i: ("lesion" if i in lesions else n) for i, n in names.items()}
        partial = bool(names) and set(names) <= lesions
        spacing = vol.spacing[1:]
        for k in range(vol.shape[0]):
            cm = class_map(vol.labels.array[k], names, classes, rules, hu=vol.array[k])
            if partial:
                cm[cm == body] = (
                    0  # unlabelled muscle, fat and bone: not "body" as the complete sources use it
                )
            hu = resample(vol.array[k].astype(np.float32), spacing, data.pixel_mm, order=1)
            cm = resample(cm, spacing, data.pixel_mm, order=0)
            if np.count_nonzero(cm != air) < data.min_valid_fraction * resolution**2:
                continue  # (almost) no body on this slice
            out.append(LabelSlice(hu, cm, src.name, k, partial))
    if not out:
        raise InputError("no slice with enough body in the CT sources")
    return out


def read_pairs_classes(folder: str | Path) -> dict:
    folder = Path(folder)
    meta_path = folder / "classes.json"
    if not meta_path.is_file():
        raise InputError(
            f'{folder}: a pairs folder needs classes.json ({{"classes": [...]}}), images/ and labels/'
        )
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta.get("classes"), list) or not meta["classes"]:
        raise InputError(f"{meta_path}: 'classes' must be a non-empty list of class names")
    return meta


def load_pairs(folder: str | Path, data: LabelDataConfig) -> list[LabelSlice]:
    """The pairs of a pairs folder (module docstring); classes must match ``data.classes``."""
    from PIL import Image

    folder = Path(folder)
    meta = read_pairs_classes(folder)
    if tuple(meta["classes"]) != tuple(data.classes):
        raise InputError(
            f"{folder}: classes.json lists {meta['classes']} but the run uses {list(data.classes)}; pass matching --classes"
        )
    images = sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in (".png", ".npy"))
    if not images:
        raise InputError(f"{folder}/images: no .png or .npy images")
    out = []
    for n, img_path in enumerate(images):
        lab_path = folder / "labels" / f"{img_path.stem}.png"
        if not lab_path.is_file():
            raise InputError(f"{img_path.name}: no label image labels/{lab_path.name}")
        labels = np.asarray(Image.open(lab_path))
        if labels.ndim != 2 or labels.max() > len(data.classes):
            raise InputError(f"{lab_path}: labels must be a grey image of class ids 0..{len(data.classes)}")
        if img_path.suffix.lower() == ".npy":
            image, kind = np.load(img_path).astype(np.float32), "hu"
        else:
            image = np.asarray(Image.open(img_path).convert("RGB"))
            kind = "rgb"
        if image.shape[:2] != labels.shape:
            raise InputError(
                f"{img_path.name}: image {image.shape[:2]} and label map {labels.shape} differ in size"
            )
        out.append(LabelSlice(image, labels.astype(np.uint8), folder.name, n, False, kind))
    return out


class LabelExamples:
    """Map-style dataset of (image, control) squares; item ``i`` depends only on ``(seed, i)``.

    Args:
        slices: loaded slices (``load_ct_slices`` / ``load_pairs``); one kind only.
        data: the data settings (classes, ablation, jitter, HU range).
        resolution: the square's side in px.
        seed: the run's data seed.
    """

    def __init__(
        self,
        slices: list[LabelSlice],
        data: LabelDataConfig,
        *,
        resolution: int,
        seed: int,
        length: int = 10**9,
    ):
        if not slices:
            raise InputError("no training examples")
        if len({s.kind for s in slices}) != 1:
            raise InputError("mixing CT (HU) and RGB images in one run is not supported")
        self.slices, self.data, self.resolution, self.seed, self.length = (
            slices,
            data,
            resolution,
            seed,
            length,
        )
        self.kind = slices[0].kind
        self.channels = 1 if self.kind == "hu" else 3
        self.complete = [i for i, s in enumerate(slices) if not s.partial]
        self.partial = [i for i, s in enumerate(slices) if s.partial]
        self.n_classes = len(data.classes)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        pool = (
            self.partial
            if self.partial and (not self.complete or rng.random() < self.data.partial_weight)
            else self.complete
        )
        k = pool[rng.integers(len(pool))]
        return self.example(k, rng=rng)

    def example(
        self, k: int, *, rng: np.random.Generator | None = None, center: tuple[float, float] | None = None
    ) -> dict:
        """The square of slice ``k``: centred (no ``rng``: no jitter, no ablation) or drawn with ``rng``."""
        s, r, d = self.slices[k], self.resolution, self.data
        if center is None:
            if s.kind == "rgb" or self.kind == "hu" and not {"air", "body"} <= set(d.classes):
                h, w = s.classes.shape  # pairs: a random square (the middle one without rng)
                lo = ((r - 1) / 2, (r - 1) / 2)
                hi = (max(lo[0], h - 1 - (r - 1) / 2), max(lo[1], w - 1 - (r - 1) / 2))
                center = tuple(
                    rng.uniform(lo[i], hi[i]) if rng is not None else (lo[i] + hi[i]) / 2 for i in range(2)
                )
            else:
                center = canvas_center(s.classes, tuple(d.classes))
                if rng is not None:
                    center = (
                        center[0] + rng.integers(-d.center_jitter_px, d.center_jitter_px + 1),
                        center[1] + rng.integers(-d.center_jitter_px, d.center_jitter_px + 1),
                    )
        classes, valid = cut(s.classes, center, r, 0)
        if s.kind == "rgb":
            chans = [cut(s.image[..., c], center, r, 0)[0] for c in range(3)]
            image = np.stack(chans).astype(np.float32) / 127.5 - 1.0  # (3, r, r)
        else:
            hu, _ = cut(s.image, center, r, d.hu_range[0])
            image = normalize_hu(hu, low=d.hu_range[0], high=d.hu_range[1])[None]  # (1, r, r)
        present = np.zeros(self.n_classes, np.float32)
        present[[int(c) - 1 for c in np.unique(classes) if c]] = 1.0
        control = classes.copy()
        if rng is not None:
            control = self.ablate(control, rng)
        return {
            "image": np.ascontiguousarray(image, dtype=np.float32),
            "control": one_hot(control, self.n_classes),
            "valid": valid[None].astype(np.float32),
            "present": present,
        }

    def ablate(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Condition ablation: air/body to free (``free_body_p``), other classes to free (``drop_class_p``)."""
        names, d = tuple(self.data.classes), self.data
        out = classes.copy()
        derived = [names.index(n) + 1 for n in ("air", "body") if n in names]
        if derived and rng.random() < d.free_body_p:
            out[np.isin(out, derived)] = 0
        for c in np.unique(classes):
            if c and c not in derived and rng.random() < d.drop_class_p:
                out[out == c] = 0
        return out


def load_examples(
    data: LabelDataConfig, *, resolution: int, seed: int, holdout: bool = False
) -> LabelExamples:
    """Examples of the training sources (or, with ``holdout``, of the held-out ones)."""
    keep = (lambda name: name in data.holdout) if holdout else (lambda name: name not in data.holdout)
    chosen = tuple(s for s in data.sources if keep(s.name))
    slices = load_ct_slices(chosen, data, resolution=resolution) if chosen else []
    for folder in data.pairs:
        if keep(Path(folder).name):
            slices += load_pairs(folder, data)
    if not slices:
        what = "held-out" if holdout else "training"
        raise InputError(
            f"no {what} data: check data.sources / data.pairs and data.holdout ({list(data.holdout)})"
        )
    return LabelExamples(slices, data, resolution=resolution, seed=seed)
