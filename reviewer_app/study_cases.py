"""Study manifests: a CSV of image files with their truth, decoded to ``CaseInput`` via ``core.io``.

Columns (header row required, one case per row)::

    path,truth,role,stratum_organ,generator,model_version,seed,mask_hash
    real/case01.nii.gz,real,main,liver,,,,
    synth/s01.nii.gz,synthetic,main,liver,ddpm-ct,v2.1,17,3f2a...

* ``path`` (required): relative to the manifest's folder (or to ``root`` for manifests
  uploaded through the owner page); absolute paths and ``..`` that leave that folder are
  refused, so a manifest cannot read arbitrary server files.
  2D images: PNG, JPEG, TIFF, SVS (H&E or other; read via ``core.io.slide``, the smallest
  pyramid level that still covers the study grid). Volumes: NIfTI, a DICOM file or series
  folder, a case folder or ``.zip`` (``core.io.load_volume``; CT in HU). One kind per study.
* ``truth`` (required): ``real`` or ``synthetic``.
* ``role``: ``main`` (default), ``training`` (shown first, with feedback; not analysed) or
  ``catch`` (attention check, an obvious fake; analysed separately).
* strata: ``stratum_<name>`` columns, or one of :data:`STRATA_COLUMNS`, for per-stratum results.
* provenance (owner side only, never served): :data:`PROVENANCE_COLUMNS` or ``prov_<name>``.
  The path itself is always kept as ``source_file``, which lets the audit check that no
  served name carries a piece of it.

Anything else is an error naming the valid columns: a typo must not silently become a
stratum. Each case is put on the study grid as it is read (``studies.stimuli``), so a long
manifest of full CT series never sits in memory at once.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from studies.stimuli import CaseInput, StimulusSpec, standardize_image, standardize_volume

REQUIRED = ("path", "truth")
ROLES = ("main", "training", "catch")
STRATA_COLUMNS = ("organ", "region", "tissue", "site", "body_part", "stain")
PROVENANCE_COLUMNS = ("generator", "model_version", "generator_version", "seed", "mask_hash", "source",
                      "checkpoint", "prompt", "sampler", "steps", "notes")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".dicom", ".zip")


@dataclass(frozen=True)
class ManifestRow:
    """One parsed row, not yet decoded.

    Attributes:
        line: line number in the CSV (for messages).
        path: resolved file or folder.
        rel: the path as written in the manifest.
        truth: "real" or "synthetic".
        role: "main", "training" or "catch".
        kind: "image2d" or "volume".
        strata: stratum name -> value.
        provenance: provenance name -> value.
    """

    line: int
    path: Path
    rel: str
    truth: str
    role: str
    kind: str
    strata: dict[str, str]
    provenance: dict[str, object]


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(IMAGE_SUFFIXES):
        return "image2d"
    raise InputError(f"{path.name}: unknown file type; 2D images: {', '.join(IMAGE_SUFFIXES)}; "
                     f"volumes: {', '.join(VOLUME_SUFFIXES)} or a DICOM folder")


def _column_role(name: str) -> str:
    if name in REQUIRED or name == "role":
        return name
    if name.startswith("stratum_") and len(name) > len("stratum_"):
        return "stratum"
    if name in STRATA_COLUMNS:
        return "stratum"
    if name in PROVENANCE_COLUMNS or (name.startswith("prov_") and len(name) > len("prov_")):
        return "provenance"
    raise InputError(
        f"unknown manifest column {name!r}; columns are path, truth, role ({'|'.join(ROLES)}), strata "
        f"(stratum_<name> or {', '.join(STRATA_COLUMNS)}) and provenance (prov_<name> or "
        f"{', '.join(PROVENANCE_COLUMNS)})")


def _inside(root: Path, rel: str, where: str) -> Path:
    if not rel:
        raise InputError(f"{where}: empty path")
    if Path(rel).is_absolute():
        raise InputError(f"{where}: path {rel!r} is absolute; write it relative to the manifest's folder")
    # Lexical check: the manifest's text cannot climb out; symlinks the folder's owner put there are followed.
    path = Path(os.path.normpath(root / rel))
    if not path.is_relative_to(root):
        raise InputError(f"{where}: path {rel!r} leaves the manifest's folder {root}")
    if not path.exists():
        raise FileNotFoundError(f"{where}: {rel} not found (looked at {path})")
    return path


def read_manifest(manifest: str | Path, *, root: str | Path | None = None, name: str | None = None
                  ) -> list[ManifestRow]:
    """Parse and check a manifest without decoding any image.

    Args:
        manifest: the CSV file.
        root: folder the paths are relative to; the manifest's folder when None.
        name: how to call the manifest in messages (an upload's temporary name means nothing).

    Raises:
        InputError: with ``<manifest>:<line>:`` and what is wrong. FileNotFoundError: a listed file is missing.
    """
    manifest = Path(manifest)
    label = name or str(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {label} not found")
    root = Path(root or manifest.parent).expanduser().resolve()
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            lines = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text CSV file") from None
    except csv.Error as err:
        raise InputError(f"{label}: not a readable CSV file ({err})") from None
    if not header or not any(header):
        raise InputError(f"{label}: empty; expected a header row with at least {', '.join(REQUIRED)}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{label}: header lacks {', '.join(missing)}; got {', '.join(header)}")
    if len(set(header)) != len(header):
        raise InputError(f"{label}: repeated column names in the header: {', '.join(header)}")
    try:
        roles = {h: _column_role(h) for h in header}
    except InputError as err:
        raise InputError(f"{label}:1: {err}") from None
    if not lines:
        raise InputError(f"{label}: no cases below the header")

    rows, seen = [], {}
    for line, cells in lines:
        where = f"{label}:{line}"
        if len(cells) != len(header):
            raise InputError(f"{where}: {len(cells)} fields, the header has {len(header)}")
        values = {h: c.strip() for h, c in zip(header, cells)}
        truth, role = values["truth"], values.get("role") or "main"
        if truth not in ("real", "synthetic"):
            raise InputError(f"{where}: truth must be 'real' or 'synthetic', got {truth!r}")
        if role not in ROLES:
            raise InputError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        path = _inside(root, values["path"], where)
        if path in seen:
            raise InputError(f"{where}: {values['path']} is listed twice (also on line {seen[path]}); "
                             "hidden repeats are made by the design's duplicates option")
        seen[path] = line
        try:
            kind = _kind(path)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        strata = {(h.removeprefix("stratum_")): v for h, v in values.items() if roles[h] == "stratum" and v}
        provenance: dict[str, object] = {h.removeprefix("prov_"): v for h, v in values.items()
                                         if roles[h] == "provenance" and v}
        provenance["source_file"] = values["path"]
        rows.append(ManifestRow(line=line, path=path, rel=values["path"], truth=truth, role=role, kind=kind,
                                strata=strata, provenance=provenance))
    kinds = {r.kind for r in rows}
    if len(kinds) > 1:
        first = {k: next(r for r in rows if r.kind == k) for k in kinds}
        raise InputError(f"{label}: a study shows one kind of image, but line {first['image2d'].line} is a 2D "
                         f"image and line {first['volume'].line} a volume; make one study per kind")
    return rows


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    from core.io.slide import open_slide

    with open_slide(path) as slide:
        # The smallest level that still covers the grid: no gigapixel read, no upsampling.
        level = 0
        for i, lv in enumerate(slide.levels):
            if lv.height >= size[0] and lv.width >= size[1]:
                level = i
        lv = slide.levels[level]
        return slide.read_region(level=level, x=0, y=0, width=lv.width, height=lv.height)


def _read_volume(path: Path) -> np.ndarray:
    from core.io.load import load_volume

    volume = load_volume(path, modality="CT")
    if volume.modality != "CT":
        raise InputError(f"{path.name}: modality {volume.modality}; volume studies show CT in HU")
    return volume.array


def load_case(row: ManifestRow, spec: StimulusSpec) -> CaseInput:
    """Decode one row and put it on the study grid.

    Raises:
        InputError: naming the file and the problem.
    """
    try:
        if row.kind == "image2d":
            array = standardize_image(_read_image(row.path, spec.image_size), spec.image_size)
        else:
            array = standardize_volume(_read_volume(row.path), spec.volume_shape, spec.hu_range)
    except (ValueError, OSError) as err:  # InputError is a ValueError
        raise InputError(f"{row.rel}: {' '.join(str(err).split())}") from None
    return CaseInput(array=array, truth=row.truth, kind=row.kind, strata=row.strata, provenance=row.provenance,
                     training=row.role == "training", catch=row.role == "catch")


def load_manifest(manifest: str | Path, spec: StimulusSpec, *, root: str | Path | None = None,
                  name: str | None = None, progress: Callable[[int, int], None] | None = None) -> list[CaseInput]:
    """Parse a manifest and decode every case onto the study grid.

    Args:
        manifest: the CSV file.
        spec: the study grid.
        root: see :func:`read_manifest`.
        name: see :func:`read_manifest`.
        progress: called with ``(done, total)`` after each case.
    """
    rows = read_manifest(manifest, root=root, name=name)
    cases = []
    for i, row in enumerate(rows, start=1):
        try:
            cases.append(load_case(row, spec))
        except InputError as err:
            raise InputError(f"{name or manifest}:{row.line}: {err}") from None
        if progress:
            progress(i, len(rows))
    return cases
