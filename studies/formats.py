"""Reader-study files: the long CSV, iMRMC ``.imrmc`` and MRMCaov-style CSV.

* **Long CSV** (this project's export): header ``reader,case,modality,truth,score``, then
  any of ``call, confidence, likert, trial, is_duplicate, duplicate_of, is_training,
  is_catch`` and strata columns named ``stratum_<name>``. Empty cells mean NaN for
  ``confidence``/``likert``.
* **iMRMC** (DIDSR/iMRMC, read by RJafroc): free-text header with ``N0:``/``N1:``/``NR:``/
  ``NM:`` lines, a ``BEGIN DATA:`` line, then rows ``readerID,caseID,modalityID,score``;
  one truth row per case with readerID ``-1`` and modalityID ``truth`` (score 0/1).
* **MRMCaov CSV**: header ``reader,treatment,case,truth,rating`` (``mrmc(empirical_auc(truth,
  rating), treatment, reader, case, data)``).

Readers raise ``ValueError`` naming the file, the line number and what is wrong.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from studies.ratings import OPTIONAL_COLUMNS, Ratings

REQUIRED_COLUMNS = ("reader", "case", "modality", "truth", "score")
STRATUM_PREFIX = "stratum_"
MRMCAOV_COLUMNS = ("reader", "treatment", "case", "truth", "rating")
_BOOL_COLUMNS = ("is_duplicate", "is_training", "is_catch")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _fmt(x: float) -> str:
    # Shortest repr that round-trips; empty for NaN (the CSV convention for "missing").
    return "" if math.isnan(x) else repr(float(x))


def _parse(kind: str, text: str, *, where: str, column: str) -> object:
    text = text.strip()
    try:
        if kind == "int01":
            if text not in ("0", "1"):
                raise ValueError
            return int(text)
        if kind == "int":
            value = int(text)
            if value < 0:
                raise ValueError
            return value
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if kind == "float_nan":
            return math.nan if text == "" else float(text)
        if kind == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
    except ValueError:
        expected = {"int01": "0 or 1", "int": "a non-negative integer", "float": "a finite number",
                    "float_nan": "a number or empty", "bool": "0/1 or true/false"}[kind]
        raise ValueError(f"{where}: column {column!r} must be {expected}, got {text!r}") from None
    return text


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a CSV header") from None
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
    return header, rows


def _to_ratings(path: Path, columns: dict[str, list], strata: dict[str, list]) -> Ratings:
    try:
        return Ratings(**{k: np.asarray(v) for k, v in columns.items()},
                       strata={k: np.asarray(v) for k, v in strata.items()})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def read_long_csv(path: str | Path, *, unknown_columns: str = "error") -> Ratings:
    """Read the project's long CSV.

    Args:
        path: the ``.csv`` file.
        unknown_columns: ``"error"`` (default) to reject columns this format does not
            define, ``"ignore"`` to skip them (e.g. telemetry columns of a database export).

    Returns:
        The :class:`Ratings`.
    """
    if unknown_columns not in ("error", "ignore"):
        raise ValueError(f"unknown_columns must be 'error' or 'ignore', got {unknown_columns!r}")
    path = Path(path)
    header, rows = _read_csv_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}:1: missing required columns {missing}; header is {header}")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}:1: repeated column names in header {header}")
    kinds = {"reader": "str", "case": "str", "modality": "str", "truth": "int01", "score": "float",
             "call": "int01", "confidence": "float_nan", "likert": "float_nan", "trial": "int",
             "duplicate_of": "str", **{c: "bool" for c in _BOOL_COLUMNS}}
    unknown = [h for h in header if h not in kinds and not h.startswith(STRATUM_PREFIX)]
    if unknown and unknown_columns == "error":
        raise ValueError(f"{path}:1: unknown columns {unknown}; valid: {list(kinds)} and "
                         f"'{STRATUM_PREFIX}<name>' (or pass unknown_columns='ignore')")
    columns: dict[str, list] = {h: [] for h in header if h in kinds}
    strata: dict[str, list] = {h[len(STRATUM_PREFIX):]: [] for h in header if h.startswith(STRATUM_PREFIX)}
    for line, row in rows:
        for h, cell in zip(header, row):
            if h in kinds:
                columns[h].append(_parse(kinds[h], cell, where=f"{path}:{line}", column=h))
            elif h.startswith(STRATUM_PREFIX):
                strata[h[len(STRATUM_PREFIX):]].append(cell.strip())
    if "trial" in columns:
        columns["trial"] = np.asarray(columns["trial"], dtype=int)
    return _to_ratings(path, columns, strata)


def write_long_csv(ratings: Ratings, path: str | Path) -> Path:
    """Write ``ratings`` as the long CSV (every column, flagged rows included).

    Args:
        ratings: the ratings to write.
        path: destination ``.csv`` file.

    Returns:
        The path written.
    """
    path = Path(path)
    opt = [c for c in OPTIONAL_COLUMNS if getattr(ratings, c) is not None]
    header = list(REQUIRED_COLUMNS) + opt + [STRATUM_PREFIX + k for k in ratings.strata]
    cols = [ratings.reader, ratings.case, ratings.modality, ratings.truth, ratings.score]
    cols += [getattr(ratings, c) for c in opt] + list(ratings.strata.values())
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(len(ratings)):
            row = []
            for name, col in zip(header, cols):
                v = col[i]
                if name in ("score", "confidence", "likert"):
                    row.append(_fmt(v))
                elif name in _BOOL_COLUMNS or name in ("truth", "call", "trial"):
                    row.append(str(int(v)))
                else:
                    row.append(str(v))
            writer.writerow(row)
    return path


def _check_exportable(ratings: Ratings, fmt: str) -> None:
    flagged = ratings.flag("is_training") | ratings.flag("is_catch") | ratings.flag("is_duplicate")
    if flagged.any():
        raise ValueError(f"{fmt} cannot mark training, catch or duplicate rows "
                         f"({int(flagged.sum())} present); "
                         "pass ratings.main_analysis()")


def write_imrmc(ratings: Ratings, path: str | Path, *, description: str = "synthdx reader study") -> Path:
    """Write an iMRMC ``.imrmc`` file (readable by DIDSR/iMRMC and RJafroc).

    Args:
        ratings: main-analysis ratings (no training, catch or duplicate rows; see
            :meth:`Ratings.main_analysis`).
        path: destination ``.imrmc`` file.
        description: free-text header (may span lines; must not contain ``BEGIN DATA:``).

    Returns:
        The path written.
    """
    path = Path(path)
    _check_exportable(ratings, "an .imrmc file")
    if "BEGIN DATA:" in description.upper():
        raise ValueError("description must not contain 'BEGIN DATA:'")
    for name in ("reader", "case", "modality"):
        bad = [v for v in np.unique(getattr(ratings, name)) if "," in v or v.strip() != v or not v]
        if bad:
            raise ValueError(f"{name} id {bad[0]!r} cannot be written to .imrmc "
                             "(empty, comma or outer spaces)")
    if "truth" in set(ratings.modality) or "-1" in set(ratings.reader):
        raise ValueError("modality 'truth' and reader '-1' are reserved for truth rows in .imrmc")
    truth = ratings.case_truth()
    cases = ratings.cases()
    n1 = sum(truth[c] for c in cases)
    lines = description.splitlines() + [
        f"N0:{len(cases) - n1}", f"N1:{n1}", f"NR:{len(ratings.readers())}",
        f"NM:{len(ratings.modalities())}", "BEGIN DATA:",
    ]
    lines += [f"-1,{c},truth,{truth[c]}" for c in cases]
    lines += [f"{r},{c},{m},{s!r}" for r, c, m, s in
              zip(ratings.reader, ratings.case, ratings.modality, ratings.score.tolist())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_imrmc(path: str | Path) -> Ratings:
    """Read an iMRMC ``.imrmc`` file (scores only: no binary call).

    Args:
        path: the ``.imrmc`` file.

    Returns:
        The :class:`Ratings`; reader, case and modality ids as written in the file.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    begin = next((i for i, s in enumerate(lines) if s.strip().upper() == "BEGIN DATA:"), None)
    if begin is None:
        raise ValueError(f"{path}: no 'BEGIN DATA:' line; an .imrmc file is a free-text header, "
                         "'BEGIN DATA:', then rows readerID,caseID,modalityID,score")
    declared: dict[str, tuple[int, int]] = {}
    for i, text in enumerate(lines[:begin], start=1):
        key, sep, value = text.partition(":")
        if sep and key.strip().upper() in ("N0", "N1", "NR", "NM"):
            try:
                declared[key.strip().upper()] = (int(value.strip()), i)
            except ValueError:
                raise ValueError(f"{path}:{i}: {key.strip()} must be an integer, "
                                 f"got {value.strip()!r}") from None
    truth: dict[str, tuple[int, int]] = {}
    cols: dict[str, list] = {"reader": [], "case": [], "modality": [], "score": []}
    lines_of_case: dict[str, int] = {}
    for i, text in enumerate(lines[begin + 1:], start=begin + 2):
        if not text.strip():
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != 4:
            raise ValueError(f"{path}:{i}: expected 4 fields readerID,caseID,modalityID,score, "
                             f"got {len(fields)}: {text!r}")
        reader, case, modality, score = fields
        if not (reader and case and modality):
            raise ValueError(f"{path}:{i}: empty id in {text!r}")
        if modality.lower() == "truth":
            if reader not in ("-1", "truth"):
                raise ValueError(f"{path}:{i}: truth rows need readerID -1, got {reader!r}")
            value = _parse("float", score, where=f"{path}:{i}", column="truth")
            if value not in (0.0, 1.0):
                raise ValueError(f"{path}:{i}: truth must be 0 or 1, got {score!r}")
            if case in truth and truth[case][0] != int(value):
                raise ValueError(f"{path}:{i}: case {case!r} has truth {int(value)} here but "
                                 f"{truth[case][0]} on line {truth[case][1]}")
            truth[case] = (int(value), i)
            continue
        if reader == "-1":
            raise ValueError(f"{path}:{i}: readerID -1 is reserved for truth rows (modalityID 'truth')")
        cols["reader"].append(reader)
        cols["case"].append(case)
        cols["modality"].append(modality)
        cols["score"].append(_parse("float", score, where=f"{path}:{i}", column="score"))
        lines_of_case.setdefault(case, i)
    no_truth = [c for c in lines_of_case if c not in truth]
    if no_truth:
        raise ValueError(f"{path}:{lines_of_case[no_truth[0]]}: case {no_truth[0]!r} has scores "
                         "but no truth row")
    n1 = sum(v for v, _ in truth.values())
    counts = {"N0": len(truth) - n1, "N1": n1,
              "NR": len(set(cols["reader"])), "NM": len(set(cols["modality"]))}
    for key, (value, line) in declared.items():
        if value != counts[key]:
            raise ValueError(f"{path}:{line}: header says {key}:{value} but the data have {counts[key]}")
    cols["truth"] = [truth[c][0] for c in cols["case"]]
    return _to_ratings(path, cols, {})


def read_mrmcaov_csv(path: str | Path) -> Ratings:
    """Read an MRMCaov-style CSV ``reader,treatment,case,truth,rating`` (other columns ignored).

    Args:
        path: the ``.csv`` file; ``treatment`` becomes the modality, ``rating`` the score.

    Returns:
        The :class:`Ratings` (scores only: no binary call).
    """
    path = Path(path)
    header, rows = _read_csv_rows(path)
    missing = [c for c in MRMCAOV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}:1: missing columns {missing}; MRMCaov CSV needs {list(MRMCAOV_COLUMNS)}")
    at = {c: header.index(c) for c in MRMCAOV_COLUMNS}
    cols: dict[str, list] = {"reader": [], "modality": [], "case": [], "truth": [], "score": []}
    for line, row in rows:
        where = f"{path}:{line}"
        cols["reader"].append(row[at["reader"]].strip())
        cols["modality"].append(row[at["treatment"]].strip())
        cols["case"].append(row[at["case"]].strip())
        cols["truth"].append(_parse("int01", row[at["truth"]], where=where, column="truth"))
        cols["score"].append(_parse("float", row[at["rating"]], where=where, column="rating"))
    return _to_ratings(path, cols, {})


def write_mrmcaov_csv(ratings: Ratings, path: str | Path) -> Path:
    """Write an MRMCaov-style CSV ``reader,treatment,case,truth,rating``.

    Args:
        ratings: main-analysis ratings (no training, catch or duplicate rows).
        path: destination ``.csv`` file.

    Returns:
        The path written.
    """
    path = Path(path)
    _check_exportable(ratings, "an MRMCaov CSV")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MRMCAOV_COLUMNS)
        for r, m, c, t, s in zip(ratings.reader, ratings.modality, ratings.case, ratings.truth.tolist(),
                                 ratings.score.tolist()):
            writer.writerow([r, m, c, t, repr(s)])
    return path
