"""DICOM series and single files -> ``Volume`` (HU for CT).

Slices are ordered by their position along the slice normal (``ImagePositionPatient``
projected on ``row x column`` of ``ImageOrientationPatient``), never by file name or
``InstanceNumber``. ``RescaleSlope``/``RescaleIntercept`` are applied per slice, once,
here. Compressed transfer syntaxes are decoded by pydicom's installed plugins
(pylibjpeg for JPEG, JPEG-LS and JPEG 2000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.orient import to_canonical
from core.io.volume import Volume

# Spacing deviations below this fraction of the median are rounding, not a gap.
_GAP_TOLERANCE = 0.25


@dataclass
class SeriesInfo:
    """One series found in a folder (header-only scan)."""

    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "series_uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "n_files": len(self.files),
        }


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 ``DICM`` preamble marker."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def scan_series(folder: str | Path, *, recursive: bool = True) -> list[SeriesInfo]:
    """Group the DICOM files under ``folder`` by SeriesInstanceUID.

    Only headers are read. Non-DICOM files are ignored.
    """
    import pydicom

    folder = Path(folder)
    series: dict[str, SeriesInfo] = {}
    for path in sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file()):
        if not is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # unreadable headers are reported when the series is loaded
            continue
        uid = str(ds.get("SeriesInstanceUID", "unknown"))
        info = series.setdefault(
            uid, SeriesInfo(uid, str(ds.get("SeriesDescription", "")), str(ds.get("Modality", "")))
        )
        info.files.append(path)
    return sorted(series.values(), key=lambda s: (-len(s.files), s.uid))


def read_dicom(path: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read a DICOM series folder or a single (possibly multi-frame) DICOM file.

    Args:
        path: a folder holding one or more series, or one DICOM file.
        series_uid: which series to read when the folder holds several.

    Returns:
        A canonical ``Volume``; ``meta["warnings"]`` lists dropped duplicate slices and
        gaps in slice positions.

    Raises:
        InputError: no DICOM files, several series and no ``series_uid``, corrupt files,
            files without pixel data, inconsistent geometry.
    """
    path = Path(path)
    if path.is_file():
        return _volume_from_files([path], series_desc=None)
    found = scan_series(path)
    if not found:
        raise InputError(f"{path}: no DICOM files found (files must carry the DICOM 'DICM' marker)")
    if series_uid is None:
        if len(found) > 1:
            listing = "; ".join(
                f"{s.uid} ({s.modality} '{s.description}', {len(s.files)} files)" for s in found
            )
            raise InputError(f"{path} holds {len(found)} series, choose one with series_uid: {listing}")
        chosen = found[0]
    else:
        matches = [s for s in found if s.uid == series_uid]
        if not matches:
            raise InputError(f"series {series_uid} not found in {path}; found: {[s.uid for s in found]}")
        chosen = matches[0]
    return _volume_from_files(chosen.files, series_desc=chosen.description)


def _read_full(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        kind = getattr(sop, "name", None) or str(sop or "unknown SOP class")
        raise InputError(f"{path.name}: DICOM file without pixel data ({kind}); it is not an image")
    return ds


def _pixels(ds, path: Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # truncated data, missing codec, ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise InputError(f"{path.name}: pixel data cannot be decoded (transfer syntax {name}): {exc}") from exc
    if ds.get("SamplesPerPixel", 1) != 1:
        raise InputError(
            f"{path.name}: colour DICOM ({ds.get('PhotometricInterpretation')}); open it as a 2D image, "
            "volumes must be single-channel"
        )
    return arr


def _plane(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, (row spacing, column spacing)) of a slice."""
    iop = ds.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0]
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0]
    return np.asarray(iop[:3], float), np.asarray(iop[3:], float), np.asarray(spacing, float)


def _frames(ds, path: Path) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Every frame as (pixels (rows, cols), position (3,) LPS mm, slope, intercept)."""
    arr = _pixels(ds, path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    if n_frames == 1:
        ipp = ds.get("ImagePositionPatient", [0.0, 0.0, 0.0])
        return [(arr, np.asarray(ipp, float), slope, intercept)]
    # Enhanced multi-frame: position and rescale per frame in the functional groups.
    frames = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    for i in range(n_frames):
        pos = np.array([0.0, 0.0, float(i)])
        s, b = slope, intercept
        if i < len(per_frame):
            group = per_frame[i]
            if "PlanePositionSequence" in group:
                pos = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
            if "PixelValueTransformationSequence" in group:
                t = group.PixelValueTransformationSequence[0]
                s, b = float(t.get("RescaleSlope", s)), float(t.get("RescaleIntercept", b))
        frames.append((arr[i], pos, s, b))
    return frames


def _shared_plane(ds):
    """Orientation/spacing, looking into enhanced multi-frame shared groups when needed."""
    if "ImageOrientationPatient" in ds or "SharedFunctionalGroupsSequence" not in ds:
        return _plane(ds)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    return np.asarray(iop[:3], float), np.asarray(iop[3:], float), np.asarray(spacing, float)


def _volume_from_files(files: list[Path], *, series_desc: str | None) -> Volume:
    warnings: list[str] = []
    frames = []
    first = None
    for path in files:
        ds = _read_full(path)
        if first is None:
            first = ds
            row_dir, col_dir, pix = _shared_plane(ds)
            shape = (int(ds.Rows), int(ds.Columns))
            if not np.all(pix > 0):
                warnings.append(f"PixelSpacing {list(pix)} is not positive; assuming 1 mm pixels")
                pix = np.array([1.0, 1.0])
        else:
            r, c, p = _shared_plane(ds)
            if not (np.allclose(r, row_dir, atol=1e-3) and np.allclose(c, col_dir, atol=1e-3)):
                raise InputError(f"{path.name}: orientation differs from the rest of the series")
            if (int(ds.Rows), int(ds.Columns)) != shape:
                raise InputError(f"{path.name}: {ds.Rows}x{ds.Columns} pixels, the series is {shape}")
        for arr, pos, slope, intercept in _frames(ds, path):
            frames.append((arr, pos, slope, intercept, int(ds.get("InstanceNumber", 0) or 0), path.name))

    normal = np.cross(row_dir, col_dir)
    heights = np.array([f[1] @ normal for f in frames])
    order = np.lexsort(([f[4] for f in frames], heights))  # by position, then InstanceNumber
    kept = [order[0]]
    for idx in order[1:]:
        if abs(heights[idx] - heights[kept[-1]]) < 1e-3:
            warnings.append(f"duplicate slice at {heights[idx]:.2f} mm ({frames[idx][5]}) dropped")
            continue
        kept.append(idx)
    z = heights[kept]
    if len(kept) > 1:
        steps = np.diff(z)
        dz = float(np.median(steps))
        gaps = np.nonzero(np.abs(steps - dz) > _GAP_TOLERANCE * dz)[0]
        for g in gaps:
            warnings.append(
                f"slice spacing {steps[g]:.2f} mm between {z[g]:.2f} and {z[g + 1]:.2f} mm "
                f"(median {dz:.2f} mm): slices missing or uneven; shown at the median spacing"
            )
    else:
        dz = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1.0)

    # (k, rows, cols) float32 HU / raw values.
    stack = np.empty((len(kept), *shape), np.float32)
    for out, idx in enumerate(kept):
        arr, _, slope, intercept, _, _ = frames[idx]
        stack[out] = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)

    # Voxel (col i, row j, slice k) -> LPS mm (DICOM PS3.3 C.7.6.2.1.1), then to RAS.
    origin = frames[kept[0]][1]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pix[1]
    lps[:3, 1] = col_dir * pix[0]
    lps[:3, 2] = normal * dz
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    modality = str(first.get("Modality", "OT")).upper()
    if modality not in ("CT", "MR"):
        modality = "OT"
    meta = {
        "source": str(files[0].parent if len(files) > 1 else files[0]),
        "format": "dicom",
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "series_description": series_desc if series_desc is not None else str(first.get("SeriesDescription", "")),
        "study_description": str(first.get("StudyDescription", "")),
        "body_part": str(first.get("BodyPartExamined", "")),
        "manufacturer": str(first.get("Manufacturer", "")),
        "transfer_syntax": str(getattr(first.file_meta.TransferSyntaxUID, "name", "")),
        "n_files": len(files),
        "warnings": warnings,
    }
    return to_canonical(stack.transpose(2, 1, 0), ras, modality=modality, meta=meta)

