"""Everything about a reader study at once: :func:`analyze` -> a JSON-ready dict.

The main analysis leaves out training, catch and hidden-duplicate presentations; catch
cases and duplicates are analysed on their own (``catch``, ``retest``). Sections that a
study cannot support (no binary calls in an ``.imrmc`` file, one reader, no Likert
ratings ...) are ``None`` and ``notes`` says why. NaN and infinity become ``None``.

Top-level keys: ``settings, counts, notes, binary, auc, orh, agreement, retest, likert,
strata, learning, catch``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from studies.analysis.agreement import agreement, retest_agreement
from studies.analysis.auc_cov import COV_METHODS, CovMethod
from studies.analysis.binary import binary_metrics
from studies.analysis.learning import learning_effect
from studies.analysis.likert import likert_by_reader
from studies.analysis.orh import OrhResult, orh
from studies.analysis.roc import delong_ci
from studies.ratings import Ratings


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy values and containers -> plain JSON types; NaN/inf -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _by(ratings: Ratings, column: np.ndarray) -> dict[str, Ratings]:
    return {str(v): ratings.subset(column == v) for v in dict.fromkeys(column.tolist())}


def _binary_section(r: Ratings, *, level: float, margin: float) -> dict[str, Any]:
    def metrics(x: Ratings) -> Any:
        return binary_metrics(truth=x.truth, call=x.call, level=level, tost_margin=margin)

    return {"pooled": metrics(r), "per_reader": {k: metrics(v) for k, v in _by(r, r.reader).items()}}


def _auc_section(r: Ratings, *, level: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m, rm in _by(r, r.modality).items():
        out[m] = {}
        for rd, x in _by(rm, rm.reader).items():
            both = 0 < x.truth.sum() < len(x)
            out[m][rd] = delong_ci(truth=x.truth, score=x.score, level=level) if both else None
    return out


def _auc_tost(est: float, se: float, df: float | None, *, margin: float, level: float) -> dict[str, Any]:
    # Equivalence of a reader-averaged AUC to 0.5: two one-sided t (or z) tests against 0.5 -/+ margin.
    dist = stats.norm if df is None or not math.isfinite(df) else stats.t(df)
    if not se > 0:
        return {"margin": margin, "p_lower": None, "p_upper": None, "p": None, "equivalent": False}
    p_lower = float(dist.sf((est - (0.5 - margin)) / se))
    p_upper = float(dist.cdf((est - (0.5 + margin)) / se))
    p = max(p_lower, p_upper)
    return {"margin": margin, "p_lower": p_lower, "p_upper": p_upper, "p": p,
            "equivalent": p < round(1 - level, 12)}


def _orh_section(r: Ratings, *, cov: CovMethod, level: float, margin: float, notes: list[str] | None) -> Any:
    """ORH over all modalities of ``r``: the requested covariance when fully crossed, else unbiased."""
    cube = r.score_cube(value="score")
    method = cov
    if not cube.is_complete():
        method = "unbiased"
        if notes is not None:
            notes.append(f"readers did not all read the same cases ({int(np.isnan(cube.values).sum())} of "
                         f"{cube.values.size} reader x case x modality cells empty): ORH uses the unbiased "
                         "(U-statistic) AUC covariance, which allows that")
    try:
        res: OrhResult = orh(scores=cube.values, truth=cube.truth, cov_method=method, level=level,
                             modalities=list(cube.modalities), readers=list(cube.readers))
    except ValueError as err:
        return {"error": str(err)}
    out = to_jsonable(res)
    out.pop("covariance")
    out["fully_crossed"] = cube.is_complete()
    for name in ("rrrc", "frrc", "rrfc"):
        test = getattr(res, name)
        if test is not None:
            for est, js in zip(test.modalities, out[name]["modalities"]):
                js["tost_vs_chance"] = _auc_tost(est.auc, est.se, est.df, margin=margin, level=level)
    if notes is not None and len(res.readers) < 2:
        notes.append("one reader: random-reader (RRRC, RRFC) ORH results need >= 2 readers; FRRC only")
    return to_jsonable(out)


def _agreement_section(r: Ratings, *, level: float, n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in r.modalities():
        cube = r.score_cube(value="call", modalities=[m]).complete_cases()
        if len(cube.readers) < 2 or len(cube.cases) < 2:
            out[str(m)] = None
            continue
        calls = cube.values[0].T.astype(int)  # (cases, readers)
        out[str(m)] = agreement(calls=calls, readers=list(cube.readers), level=level, n_boot=n_boot,
                                seed=seed)
    return out


def _strata_section(r: Ratings, *, cov: CovMethod, level: float, margin: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, column in r.strata.items():
        out[name] = {}
        for value, x in _by(r, column).items():
            entry: dict[str, Any] = {"n_ratings": len(x), "n_cases": len(x.cases()),
                                     "n_synthetic_cases": int(sum(x.case_truth().values()))}
            entry["binary"] = (binary_metrics(truth=x.truth, call=x.call, level=level, tost_margin=margin)
                               if x.call is not None else None)
            both = 0 < entry["n_synthetic_cases"] < entry["n_cases"]
            entry["orh"] = (_orh_section(x, cov=cov, level=level, margin=margin, notes=None) if both
                            else {"error": "AUC needs real and synthetic cases in the stratum"})
            out[name][value] = entry
    return out


def analyze(ratings: Ratings, *, tost_margin: float = 0.1, level: float = 0.95, seed: int = 0,
            n_boot: int = 1000, orh_cov: CovMethod = "jackknife", n_blocks: int = 5) -> dict[str, Any]:
    """Analyse a reader study: binary metrics, AUC, ORH, agreement, Likert, strata, learning.

    Args:
        ratings: all ratings (training, catch and duplicate rows are separated here).
        tost_margin: equivalence margin around chance (0.5) for accuracy and AUC.
        level: confidence level of every CI; ``1 - level`` is the alpha of every test.
        seed: seed of the bootstrap ``numpy.random.Generator`` (kappa CIs).
        n_boot: bootstrap replicates for the kappa CIs.
        orh_cov: AUC covariance of the ORH analysis when the design is fully crossed
            (otherwise ``"unbiased"`` is used and a note says so).
        n_blocks: blocks of trials for the learning curve.

    Returns:
        A JSON-serialisable dict (see the module docstring for its keys).
    """
    # 1. Check inputs and split the rows.
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not 0 < tost_margin < 0.5:
        raise ValueError(f"tost_margin must be in (0, 0.5), got {tost_margin}")
    if orh_cov not in COV_METHODS:
        raise ValueError(f"unknown orh_cov {orh_cov!r}; choose from {list(COV_METHODS)}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    training, catch, dup = (ratings.flag(f) for f in ("is_training", "is_catch", "is_duplicate"))
    main = ratings.main_analysis()
    if len(main) == 0:
        raise ValueError("no ratings left for the main analysis (all rows are training, catch or duplicates)")
    notes: list[str] = []
    has_calls = main.call is not None
    truth = main.case_truth()

    # 2. Counts.
    counts = {"readers": len(main.readers()), "cases": len(truth), "synthetic_cases": sum(truth.values()),
              "real_cases": len(truth) - sum(truth.values()), "modalities": len(main.modalities()),
              "ratings": len(main), "excluded_training": int(training.sum()),
              "excluded_catch": int((catch & ~training).sum()),
              "excluded_duplicates": int((dup & ~training & ~catch).sum())}
    if not has_calls:
        notes.append("no binary calls (scores only, e.g. an .imrmc file): accuracy, sensitivity, kappa, "
                     "test-retest and learning are not reported; AUC and ORH use the scores. "
                     "Ratings.with_calls_from_score(threshold=...) derives calls from a pre-registered "
                     "threshold")

    # 3. Binary calls, AUC and ORH.
    binary = None
    if has_calls:
        binary = _binary_section(main, level=level, margin=tost_margin)
        binary["per_modality"] = {m: _binary_section(x, level=level, margin=tost_margin)
                                  for m, x in _by(main, main.modality).items()}
    orh_out = _orh_section(main, cov=orh_cov, level=level, margin=tost_margin, notes=notes)
    if "error" in orh_out:
        notes.append(f"ORH not computed: {orh_out['error']}")

    # 4. Agreement between and within readers.
    agree = None
    if has_calls and counts["readers"] >= 2:
        agree = _agreement_section(main, level=level, n_boot=n_boot, seed=seed)
    retest = None
    if dup.any():
        if has_calls:
            try:
                retest = retest_agreement(ratings.subset(~training & ~catch), level=level, n_boot=n_boot,
                                          seed=seed)
            except ValueError as err:
                notes.append(f"test-retest not computed: {err}")
        else:
            notes.append("hidden duplicates present but no binary calls: no test-retest kappa")

    # 5. Likert, learning, catch cases.
    likert = None
    if main.likert is not None and np.isfinite(main.likert).any():
        likert = likert_by_reader(main)
        likert["per_modality"] = {m: likert_by_reader(x)["pooled"]
                                  for m, x in _by(main, main.modality).items()}
    learning = None
    if has_calls and main.trial is not None:
        learning = learning_effect(trial=main.trial, correct=(main.call == main.truth).astype(int),
                                   reader=main.reader, n_blocks=n_blocks, level=level)
    elif has_calls:
        notes.append("no trial positions: learning effect not analysed")
    catch_out = None
    catch_rows = ratings.subset(catch & ~training)
    if len(catch_rows) and catch_rows.call is not None:
        catch_out = _binary_section(catch_rows, level=level, margin=tost_margin)

    summary = {
        "settings": {"tost_margin": tost_margin, "level": level, "seed": seed, "n_boot": n_boot,
                     "orh_cov": orh_cov, "n_blocks": n_blocks},
        "counts": counts, "notes": notes, "has_calls": has_calls,
        "modalities": [str(m) for m in main.modalities()], "readers": [str(r) for r in main.readers()],
        "binary": binary, "auc": _auc_section(main, level=level), "orh": orh_out,
        "agreement": agree, "retest": retest, "likert": likert,
        "strata": (_strata_section(main, cov=orh_cov, level=level, margin=tost_margin)
                   if main.strata else None),
        "learning": learning, "catch": catch_out,
    }
    return to_jsonable(summary)
