"""Flat rating rows (from :func:`studies.crud.export_rows`) to files and to :class:`Ratings`.

One row per rating, owner side (truth included). ``score`` is the 1..2K ordinal of
READER_STUDIES.md §1 built from the call and a confidence on 1..K: "synthetic" with
confidence c gives K + c, "real" with confidence c gives K + 1 - c, so 1 = "definitely
real" and 2K = "definitely synthetic" (higher = more synthetic).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from studies.ratings import Ratings

ROW_COLUMNS = (
    "reader", "role", "years_experience", "case", "truth", "block", "position", "is_training", "is_catch",
    "is_duplicate", "duplicate_of", "call", "confidence", "score", "likert", "comment", "shown_at",
    "submitted_at", "seconds", "revision", "n_slices_visited", "windows_used", "strata",
)


def ordinal_score(call: str, confidence: int, levels: int) -> int:
    """Score 1..2*levels, higher = more confident the image is synthetic.

    Args:
        call: "real" or "synthetic".
        confidence: 1..levels.
        levels: confidence levels of the study.
    """
    if not 1 <= confidence <= levels:
        raise ValueError(f"confidence must be in 1..{levels}, got {confidence}")
    if call == "synthetic":
        return levels + confidence
    if call == "real":
        return levels + 1 - confidence
    raise ValueError(f"call must be 'real' or 'synthetic', got {call!r}")


def ratings_from_rows(rows: Sequence[dict], *, modality: str) -> Ratings:
    """Build the analysis long table from export rows.

    Training, catch and duplicate presentations stay in, flagged
    (:meth:`Ratings.main_analysis` leaves them out).

    Args:
        rows: from :func:`studies.crud.export_rows`.
        modality: the modality id of every row (one generator per study).
    """
    strata_names = sorted({k for r in rows for k in r["strata"]})
    col = lambda key: [r[key] for r in rows]  # noqa: E731
    return Ratings(
        reader=col("reader"), case=col("case"), modality=[modality] * len(rows),
        truth=np.array([int(r["truth"] == "synthetic") for r in rows], dtype=int),
        score=np.array(col("score"), dtype=float),
        call=np.array([int(r["call"] == "synthetic") for r in rows], dtype=int),
        confidence=np.array(col("confidence"), dtype=float),
        likert=np.array([np.nan if r["likert"] is None else r["likert"] for r in rows], dtype=float),
        trial=np.array(col("position"), dtype=int),
        strata={name: [r["strata"].get(name, "") for r in rows] for name in strata_names},
        is_duplicate=np.array(col("is_duplicate"), dtype=bool),
        duplicate_of=[r["duplicate_of"] or "" for r in rows],
        is_training=np.array(col("is_training"), dtype=bool),
        is_catch=np.array(col("is_catch"), dtype=bool),
    )


def write_rows_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write export rows as CSV (strata and windows as JSON cells).

    Args:
        rows: from :func:`studies.crud.export_rows`.
        path: destination file.
    """
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(row[k]) if k in ("strata", "windows_used") else
                             ("" if row[k] is None else row[k]) for k in ROW_COLUMNS})
    return path
