"""``load_volume``: the one entry point for 3D images, whatever the layout.

Understood inputs:

* a DICOM series folder (several series: choose with ``series_uid``) or one DICOM file;
* a NIfTI file, optionally with ``labels=`` (label map or a folder of organ masks);
* a TotalSegmentator case folder: ``ct.nii.gz`` + ``segmentations/*.nii.gz``;
* a KiTS case folder: ``imaging.nii.gz`` + ``segmentation.nii.gz``;
* a ``.zip`` of any of the above (how DICOM folders are uploaded in the app).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from core.errors import InputError
from core.io.dicom import is_dicom_file, read_dicom
from core.io.labels import read_label_map, read_mask_folder
from core.io.nifti import is_nifti, read_nifti
from core.io.volume import Modality, Volume

# Uploaded archives: refuse absurd expansion (zip bombs) before extracting.
MAX_ZIP_BYTES = 8 * 1024**3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".bmp", ".webp")


def case_layout(folder: Path) -> tuple[Path, Path | None] | None:
    """(image, labels) of a TotalSegmentator or KiTS case folder, else None."""
    for image, labels in (("ct.nii.gz", "segmentations"), ("imaging.nii.gz", "segmentation.nii.gz")):
        if (folder / image).is_file():
            lab = folder / labels
            return folder / image, lab if lab.exists() else None
    return None


def load_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    labels: str | Path | None = None,
    modality: Modality | None = None,
) -> Volume:
    """Load a 3D image in canonical ``(z, y, x)`` order (HU for CT).

    Args:
        path: DICOM folder or file, NIfTI file, case folder or ``.zip``.
        series_uid: which DICOM series, when a folder holds several.
        labels: label-map NIfTI or folder of per-organ masks on (or overlapping) the
            image's grid; case folders bring their own.
        modality: force ``"CT"``/``"MR"``/``"OT"`` for NIfTI (guessed otherwise).

    Raises:
        InputError: with a message naming the file and the problem.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".zip":
        return _load_zip(path, series_uid=series_uid, labels=labels, modality=modality)
    if path.is_dir():
        layout = case_layout(path)
        if layout is not None:
            image, case_labels = layout
            volume = read_nifti(image, modality=modality)
            labels = labels or case_labels
        else:
            volume = read_dicom(path, series_uid=series_uid)
    elif is_nifti(path):
        volume = read_nifti(path, modality=modality)
    elif is_dicom_file(path) or path.suffix.lower() in (".dcm", ".dicom"):
        volume = read_dicom(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path.name}: a 2D image or slide, not a volume; open it as a slide/image")
    else:
        raise InputError(
            f"{path.name}: not a supported volume (expected a DICOM file or folder, .nii/.nii.gz, "
            "a TotalSegmentator/KiTS case folder, or a .zip of one)"
        )
    if labels is not None:
        labels = Path(labels)
        volume.labels = (
            read_mask_folder(labels, reference=volume)
            if labels.is_dir()
            else read_label_map(labels, reference=volume)
        )
    return volume


def extract_zip(path: Path, into: Path) -> Path:
    """Safely extract an uploaded archive; returns the folder holding its content."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > MAX_ZIP_BYTES:
                raise InputError(f"{path.name}: expands to {total / 1e9:.1f} GB, over the 8 GB limit")
            for info in zf.infolist():
                target = (into / info.filename).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise InputError(f"{path.name}: unsafe path in archive: {info.filename!r}")
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path.name}: not a valid zip archive ({exc})") from exc
    entries = [p for p in into.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def _load_zip(path: Path, **kwargs) -> Volume:
    with tempfile.TemporaryDirectory(prefix="synthdx-zip-") as tmp:
        root = extract_zip(path, Path(tmp))
        niftis = [p for p in root.rglob("*") if is_nifti(p)]
        has_dicom = any(is_dicom_file(p) for p in root.rglob("*") if p.is_file())
        if not has_dicom and len(niftis) == 1:
            target = niftis[0]
        elif not has_dicom and niftis and case_layout(root) is None:
            raise InputError(f"{path.name}: holds {len(niftis)} NIfTI files; upload one volume at a time")
        else:
            target = root
        volume = load_volume(target, **kwargs)
        volume.meta["source"] = str(path)
        return volume
