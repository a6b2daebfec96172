"""What the app can open: the embedded demo and the user's ``--data`` folder.

A ``CatalogEntry`` names an input without loading it; ``open_entry`` loads it
(a ``Volume`` or a ``Slide``). Discovery reads DICOM headers only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import InputError
from core.io.dicom import is_dicom_file, scan_series
from core.io.load import IMAGE_SUFFIXES, case_layout, load_volume
from core.io.nifti import is_nifti

Kind = Literal["volume", "slide"]
PHANTOM = "phantom:"  # source prefix of procedural volumes: "phantom:<seed>"


@dataclass(frozen=True)
class CatalogEntry:
    """One openable input.

    Attributes:
        key: stable id (used in the UI and caches).
        label: what the user sees in the picker.
        kind: ``"volume"`` or ``"slide"``.
        source: file/folder path, or ``"phantom:<seed>"``.
        series_uid: DICOM series when a folder holds several.
        labels: segmentation path for the volume, if any.
        note: provenance and licence, shown under the viewer.
    """

    key: str
    label: str
    kind: Kind
    source: str
    series_uid: str | None = None
    labels: str | None = None
    note: str = ""


def _key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def demo_entries() -> list[CatalogEntry]:
    """The embedded demo: a procedural phantom plus real images that installed packages carry."""
    entries = [
        CatalogEntry(
            "phantom-0",
            "Abdominal CT phantom (procedural, with organ masks and a liver lesion)",
            "volume",
            f"{PHANTOM}0",
            note="Generated at run time by core.phantom (seed 0); not a patient.",
        )
    ]
    try:
        from pydicom.data import get_testdata_file
    except ImportError:  # pragma: no cover - pydicom is a dependency
        return entries
    real = [
        ("explicit_VR-UN.dcm", "Real CT slice: abdomen, pancreas protocol"),
        ("693_UNCR.dcm", "Real CT slice: head"),
        ("bad_sequence.dcm", "Real CT slice: spine, soft tissue"),
    ]
    for name, label in real:
        path = get_testdata_file(name)
        if path:
            entries.append(
                CatalogEntry(f"pydicom-{name}", label, "volume", str(path),
                             note=f"pydicom-data test file {name} (MIT licence), de-identified.")
            )
    try:
        import skimage.data

        ihc = Path(skimage.data.__file__).parent / "ihc.png"
        if ihc.is_file():
            entries.append(
                CatalogEntry("skimage-ihc", "Histology: colonic glands, IHC (DAB + haematoxylin)", "slide",
                             str(ihc), note="scikit-image sample (CMMI), no known copyright restrictions.")
            )
    except ImportError:  # pragma: no cover
        pass
    return entries


def _is_segmentation(path: Path) -> bool:
    words = ("seg", "mask", "label")
    return any(w in path.name.lower() for w in words) or any(w in path.parent.name.lower() for w in words)


def _labels_beside(image: Path) -> str | None:
    """The one segmentation next to an image (``CT_mask.nii.gz``, ``example_seg/``), if unambiguous."""
    found = [
        p for p in image.parent.iterdir()
        if p != image and _is_segmentation(p) and (is_nifti(p) or (p.is_dir() and any(map(is_nifti, p.iterdir()))))
    ]
    images = [p for p in image.parent.iterdir() if is_nifti(p) and not _is_segmentation(p)]
    return str(found[0]) if len(found) == 1 and len(images) == 1 else None


def discover(data_dir: str | Path) -> list[CatalogEntry]:
    """Find openable inputs under a user's data folder.

    Recognised: DICOM series (one entry per series and folder), NIfTI files (paired with
    the one segmentation beside them, e.g. ``CT_mask.nii.gz`` or ``example_seg/``),
    TotalSegmentator (``ct.nii.gz`` + ``segmentations/``) and KiTS (``imaging.nii.gz`` +
    ``segmentation.nii.gz``) case folders, and slide/tile images. Files whose name or
    folder says seg/mask/label are treated as segmentations, not images.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a folder")
    entries: list[CatalogEntry] = []
    cases: set[Path] = set()
    dicom_dirs: set[Path] = set()
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(c) for c in cases):
            continue
        rel = str(path.relative_to(root))
        if path.is_dir():
            if case_layout(path) is not None:
                entries.append(CatalogEntry(_key(str(path)), rel, "volume", str(path)))
                cases.add(path)
        elif is_nifti(path):
            if not _is_segmentation(path):
                labels = _labels_beside(path)
                label = rel + (" (+ segmentation)" if labels else "")
                entries.append(CatalogEntry(_key(str(path)), label, "volume", str(path), labels=labels))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            entries.append(CatalogEntry(_key(str(path)), rel, "slide", str(path)))
        elif path.parent not in dicom_dirs and is_dicom_file(path):
            dicom_dirs.add(path.parent)
            for series in scan_series(path.parent, recursive=False):
                label = f"{path.parent.relative_to(root)} / {series.description or series.uid or 'series'}"
                entries.append(
                    CatalogEntry(_key(str(path.parent), series.uid), f"{label} ({len(series.files)} files)",
                                 "volume", str(path.parent), series_uid=series.uid or None)
                )
    return entries


def open_entry(entry: CatalogEntry):
    """Load an entry: a ``Volume`` for volumes, a ``Slide`` for slides."""
    if entry.kind == "slide":
        from core.io.slide import open_slide

        return open_slide(entry.source)
    if entry.source.startswith(PHANTOM):
        from core.phantom import make_abdominal_phantom

        return make_abdominal_phantom(seed=int(entry.source[len(PHANTOM):]))
    return load_volume(entry.source, series_uid=entry.series_uid, labels=entry.labels)
