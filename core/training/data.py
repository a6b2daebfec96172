"""Training examples for the CT inpainting model: masked crops of axial slices.

Sources (``DataSource``) are CT volumes with masks: TotalSegmentator-style organ folders,
KiTS/IBSI-style label maps, any image + mask NIfTI pair, DICOM series with a label map.
``discover_sources`` turns a path (file, case folder, folder of cases, manifest JSON) into
sources; ``load_cases`` reads them once into memory.

``InpaintCrops[i]`` is a pure function of ``(seed, i)``: the same index always gives the
same example, so a resumed run sees exactly the data it would have seen, on any number of
processes (``StepIndices`` hands each process its share of every step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.masks import (
    RandomBlob,
    RandomBrush,
    RandomEllipse,
    TransplantTumor,
    TumorShape,
    bbox,
    bbox_mask,
    body_mask,
    extract_tumor_shapes,
    lesion_label_ids,
    place_in_region,
)
from core.normalization import normalize_hu
from core.pipelines.crops import crop_box, extract, image_to_model, mask_to_model
from core.training.config import LESION_KINDS, DataConfig, DataSource

_IMAGE_TO_LABEL_WORDS = (
    ("imaging", "segmentation"),
    ("image", "mask"),
    ("image", "seg"),
    ("ct", "seg"),
    ("ct", "mask"),
    ("img", "seg"),
)
_LESION_DILATION_PX = 3  # "lesion" masks grow by 0..3 px: users paint a little beyond the edge
_HEALTHY_GAP_PX = 5  # random "tissue" masks keep this far from any lesion


# ----------------------------------------------------------------------------- sources
def find_labels(image: Path) -> Path | None:
    """The mask/label map next to ``image`` by name (``CT_image`` -> ``CT_mask``, ``example_ct`` -> ``example_seg``)."""
    stem = image.name.split(".nii")[0]
    for a, b in _IMAGE_TO_LABEL_WORDS:
        for src, dst in ((a, b), (a.upper(), b.upper()), (a.capitalize(), b.capitalize()), (a.upper(), b)):
            if src in stem:
                cand = stem.replace(src, dst)
                for suffix in ("", ".nii.gz", ".nii"):
                    path = image.parent / f"{cand}{suffix}"
                    if path.exists() and path != image:
                        return path
    return None


def discover_sources(
    path: str | Path, *, root: str | Path | None = None, licence: str = "unknown", attribution: str = ""
) -> list[DataSource]:
    """Training sources found at ``path``.

    Args:
        path: a manifest ``.json`` (``{"sources": [{"image": ..., "labels": ..., "name": ...,
            "licence": ..., "attribution": ..., "lesion_labels": [...]}]}``, paths relative to
            ``root`` or the manifest's folder), a case folder (TotalSegmentator, KiTS, or a
            folder holding an image and its mask), an image file with a mask beside it
            (see ``find_labels``), or a folder of any of these.
        licence: licence recorded for sources that do not state one.
        attribution: credit line recorded likewise.
    """
    from core.io.load import case_layout
    from core.io.nifti import is_nifti

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        base = Path(root) if root else path.parent
        entries = json.loads(path.read_text()).get("sources", [])
        out = []
        for e in entries:
            e = dict(e)
            e["image"] = str(base / e["image"])
            e["labels"] = str(base / e["labels"]) if e.get("labels") else None
            e.setdefault("name", Path(e["image"]).name.split(".nii")[0])
            e["lesion_labels"] = tuple(e.get("lesion_labels", ()))
            out.append(DataSource(**{"licence": licence, "attribution": attribution, **e}))
        return out
    if path.is_file() or (
        path.is_dir() and find_labels(path) is not None
    ):  # an image (file or DICOM folder) + mask beside it
        labels = find_labels(path)
        if labels is None:
            raise InputError(
                f"{path.name}: no mask or label map found beside it (e.g. CT_image -> CT_mask); use a manifest JSON"
            )
        return [
            DataSource(
                str(path),
                str(labels),
                path.name.split(".nii")[0],
                _binary_mask_label(labels),
                licence,
                attribution,
            )
        ]
    if case_layout(path) is not None:
        return [DataSource(str(path), None, path.name, (), licence, attribution)]
    images = sorted(p for p in path.iterdir() if (is_nifti(p) or p.is_dir()) and find_labels(p) is not None)
    if images:
        return [
            DataSource(
                str(p),
                str(find_labels(p)),
                p.name.split(".nii")[0] if len(images) > 1 else path.name,
                _binary_mask_label(find_labels(p)),
                licence,
                attribution,
            )
            for p in images
        ]
    out = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        try:
            out += discover_sources(sub, licence=licence, attribution=attribution)
        except InputError:
            continue
    if not out:
        raise InputError(
            f"{path}: no CT volumes with masks found (expected case folders, image/mask NIfTI pairs or a manifest)"
        )
    return out


def _binary_mask_label(labels: Path) -> tuple[str, ...]:
    """An image's ``*mask*`` file (IBSI ``CT_mask``) is a lesion mask: its label is named after the file."""
    stem = labels.name.split(".nii")[0]
    return (stem,) if labels.is_file() and "mask" in stem.lower() else ()


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """A loaded source: ``image`` (z, y, x) HU, ``labels`` (z, y, x) uint16, lesion ids, per-slice regions."""

    source: DataSource
    image: np.ndarray
    labels: np.ndarray
    lesion_ids: tuple[int, ...]
    spacing: tuple[float, float, float]
    healthy: np.ndarray  # (z, y, x) bool: body, away from lesions and the border
    lesion: np.ndarray  # (z, y, x) bool: union of the lesion labels


def load_cases(sources: tuple[DataSource, ...] | list[DataSource], *, border_px: int = 4) -> list[Case]:
    """Read every source (CT only) and precompute its lesion-free body region per slice."""
    from scipy import ndimage

    from core.io.load import load_volume
    from core.io.volume import LabelMap

    cases = []
    for src in sources:
        vol = load_volume(src.image, labels=src.labels, modality="CT")
        labels = vol.labels or LabelMap(np.zeros(vol.shape, np.uint16))
        ids = tuple(lesion_label_ids(labels, src.lesion_labels))
        lesion = np.isin(labels.array, ids)
        healthy = np.zeros(vol.shape, bool)
        for k in range(vol.shape[0]):
            region = body_mask(vol.array[k]) & ~ndimage.binary_dilation(lesion[k], iterations=_HEALTHY_GAP_PX)
            region[:border_px], region[-border_px:], region[:, :border_px], region[:, -border_px:] = (
                False,
                False,
                False,
                False,
            )
            healthy[k] = region
        name = src.name or Path(src.image).name
        cases.append(
            Case(replace(src, name=name), vol.array, labels.array, ids, vol.spacing, healthy, lesion)
        )
    return cases


def load_shape_library(paths: tuple[str, ...], *, label: int) -> list[TumorShape]:
    """Tumour outlines (label ``label``) from label-map files or folders holding them (KiTS ``case_*/segmentation.nii.gz``)."""
    import nibabel as nib

    from core.io.nifti import is_nifti
    from core.io.orient import reorient, spacing_zyx

    files = []
    for p in map(Path, paths):
        files += sorted(q for q in p.rglob("*") if is_nifti(q)) if p.is_dir() else [p]
    shapes = []
    for f in files:
        try:
            img = nib.load(str(f))
            hit = (
                np.asarray(img.dataobj) == label
            )  # native integer dtype: no float copy of a 512 x 512 x 600 map
        except Exception as exc:
            raise InputError(f"{f.name}: not a readable label map ({exc})") from exc
        if hit.ndim != 3:
            raise InputError(f"{f.name}: a 3D label map is needed, got shape {hit.shape}")
        arr, aff = reorient(hit, img.affine)
        shapes += extract_tumor_shapes(arr.astype(np.uint8), spacing_zyx(aff), label=1, source=f.parent.name)
    return shapes


# ----------------------------------------------------------------------------- examples
class InpaintCrops:
    """Map-style dataset of masked crops; item ``i`` depends only on ``(seed, i)``.

    Args:
        cases: loaded training cases.
        config: data settings (mask mix, crop fill, HU range ...).
        resolution: model input side in px.
        seed: the run's data seed.
        shapes: tumour outlines for ``transplant`` masks (default: the cases' own lesions).
        length: nominal length (indices are unbounded; DataLoader wants a length).

    Each item is a dict: ``image`` (1, r, r) float32 in [-1, 1] (the crop, clipped to
    ``hu_range``), ``mask`` (1, r, r) float32 {0, 1} (1 = repaint), ``content`` int
    (0 tissue, 1 lesion), ``kind`` int (index into the mask mix).
    """

    def __init__(
        self,
        cases: list[Case],
        config: DataConfig,
        *,
        resolution: int,
        seed: int,
        shapes: list[TumorShape] | None = None,
        length: int = 10**9,
    ):
        self.cases, self.config, self.resolution, self.seed, self.length = (
            cases,
            config,
            resolution,
            seed,
            length,
        )
        self.kinds = [k for k, _ in config.mask_mix]
        weights = np.array([w for _, w in config.mask_mix], float)
        self.p = weights / weights.sum()
        mp = config.min_region_px
        # (case, slice) pools per kind of mask.
        self.lesion_slices = [
            (c, k)
            for c, case in enumerate(cases)
            for k in range(case.image.shape[0])
            if case.lesion[k].sum() >= mp
        ]
        self.organ_slices = []
        for c, case in enumerate(cases):
            for k in range(case.image.shape[0]):
                ids, counts = np.unique(case.labels[k], return_counts=True)
                self.organ_slices += [
                    (c, k, int(i)) for i, n in zip(ids, counts) if i and i not in case.lesion_ids and n >= mp
                ]
        self.any_slices = [
            (c, k)
            for c, case in enumerate(cases)
            for k in range(case.image.shape[0])
            if case.healthy[k].sum() >= 4 * mp
        ]
        if shapes is None:
            shapes = [
                s
                for case in cases
                for i in case.lesion_ids
                for s in extract_tumor_shapes(case.labels, case.spacing, label=i, source=case.source.name)
            ]
        self.shapes = tuple(shapes)
        needs = {
            "lesion": self.lesion_slices,
            "lesion_box": self.lesion_slices,
            "organ": self.organ_slices,
            "transplant": self.shapes,
        }
        for kind, w in config.mask_mix:
            if w > 0 and kind in needs and not needs[kind]:
                raise InputError(
                    f"mask kind {kind!r} has weight {w} but the data hold no {'lesions' if kind != 'organ' else 'organ masks'}; set its weight to 0"
                )
        if not self.any_slices:
            raise InputError("no slice with enough body (HU > -400) to place masks in")
        self.random_shapes = {
            "ellipse": RandomEllipse((4.0, 24.0)),
            "blob": RandomBlob((4.0, 24.0)),
            "brush": RandomBrush(),
        }

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        kind = int(rng.choice(len(self.kinds), p=self.p))
        for _ in range(20):  # a random placement can fail (region too small): try another slice
            found = self._mask(self.kinds[kind], rng)
            if found is not None:
                break
        else:
            found = self._mask("blob", rng)
            if found is None:
                raise RuntimeError(
                    "could not place any mask after 21 tries; the data may hold almost no body"
                )
        case, k, mask = found
        content = int(self.kinds[kind] in LESION_KINDS)
        return {**self.crop(case.image[k], mask, rng), "content": content, "kind": kind}

    def crop(self, slice_hu: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> dict:
        """Cut, scale, flip and normalise one example (see ``core.pipelines.crops``)."""
        cfg, r = self.config, self.resolution
        box = crop_box(
            bbox(mask),
            slice_hu.shape,
            resolution=r,
            fill=rng.uniform(*cfg.fill_range),
            offset=tuple(rng.uniform(-cfg.center_jitter, cfg.center_jitter, 2)),
        )
        img = image_to_model(extract(slice_hu, box), r)  # (r, r) HU
        m = mask_to_model(extract(mask, box, fill_value=False), r)  # (r, r) bool
        if cfg.flip_lr and rng.random() < 0.5:
            img, m = img[:, ::-1], m[:, ::-1]
        x = normalize_hu(img, low=cfg.hu_range[0], high=cfg.hu_range[1])
        return {
            "image": np.ascontiguousarray(x[None]),
            "mask": np.ascontiguousarray(m[None], dtype=np.float32),
        }

    def _mask(self, kind: str, rng: np.random.Generator):
        from scipy import ndimage

        if kind in LESION_KINDS:
            c, k = self.lesion_slices[rng.integers(len(self.lesion_slices))]
            case = self.cases[c]
            lesion = case.lesion[k]
            if kind == "lesion":
                grow = int(rng.integers(0, _LESION_DILATION_PX + 1))
                return case, k, ndimage.binary_dilation(lesion, iterations=grow) if grow else lesion
            return case, k, bbox_mask(lesion, int(rng.integers(1, 6)))
        if kind == "organ":
            c, k, label = self.organ_slices[rng.integers(len(self.organ_slices))]
            case = self.cases[c]
            organ = case.labels[k] == label
            return (
                (case, k, organ)
                if not (organ & ndimage.binary_dilation(case.lesion[k], iterations=2)).any()
                else None
            )
        c, k = self.any_slices[rng.integers(len(self.any_slices))]
        case = self.cases[c]
        region = case.healthy[k]
        if kind == "transplant":
            organs = [i for i in np.unique(case.labels[k]) if i and i not in case.lesion_ids]
            if organs and rng.random() < 0.5:  # inside an organ (a plausible host), else anywhere in the body
                region = region & (case.labels[k] == organs[rng.integers(len(organs))])
            mask = TransplantTumor(self.shapes)(region.shape, rng, region=region, spacing=case.spacing[1:])
        elif kind == "box":
            h, w = rng.integers(8, 49, size=2)
            mask = place_in_region(np.ones((h, w), bool), region, rng)
        else:
            mask = self.random_shapes[kind](region.shape, rng, region=region)
        return None if mask is None else (case, k, mask)


class StepIndices:
    """Sampler: the dataset indices of steps ``start..steps-1`` for one process.

    Step ``s`` of process ``rank`` (of ``world``) takes indices
    ``((s * world + rank) * batch_size + j)``, ``j < batch_size``: disjoint across processes,
    and the same whether a run is resumed or not.
    """

    def __init__(self, *, start: int, steps: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.steps, self.batch_size, self.rank, self.world = start, steps, batch_size, rank, world

    def __iter__(self):
        for s in range(self.start, self.steps):
            base = (s * self.world + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.batch_size
