"""Learning effects: does accuracy change with the position of a case in a reader's sequence?

A reader who "learns the tell" during a study becomes more accurate over trials. Accuracy
is shown in blocks of trials with exact CIs, and the trend is tested with a Cochran-Armitage
test on the trial index, stratified by reader (each reader's own mean accuracy and mean trial
are removed, so readers who differ in skill do not fake a trend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from studies.analysis.binary import Proportion, proportion


@dataclass(frozen=True)
class Trend:
    """Cochran-Armitage trend of correctness over trial index.

    Attributes:
        slope_per_100_trials: least-squares change in accuracy per 100 trials.
        z: trend statistic; p: two-sided normal p-value (NaN when undefined).
        learning: significant increase of accuracy (``slope > 0`` and ``p < 1 - level``).
    """

    n: int
    slope_per_100_trials: float
    z: float
    p: float
    learning: bool


@dataclass(frozen=True)
class Block:
    """Accuracy in trials ``first_trial..last_trial`` (inclusive)."""

    first_trial: int
    last_trial: int
    accuracy: Proportion


@dataclass(frozen=True)
class LearningEffect:
    """Accuracy over trials: pooled (reader-stratified) and per reader."""

    n_blocks: int
    blocks: list[Block]
    blocks_per_reader: dict[str, list[Block]]
    pooled: Trend
    per_reader: dict[str, Trend]
    readers_learning: list[str]


def _sums(trial: np.ndarray, correct: np.ndarray) -> tuple[float, float, float, int]:
    # Cochran-Armitage pieces within one stratum: T = sum (t - t_bar) y, Var0 = p(1-p) sum (t - t_bar)^2.
    dt = trial - trial.mean()
    p = correct.mean()
    return float(dt @ correct), float(p * (1 - p) * (dt @ dt)), float(dt @ dt), trial.size


def _trend(parts: list[tuple[float, float, float, int]], alpha: float) -> Trend:
    t_stat = sum(x[0] for x in parts)
    var = sum(x[1] for x in parts)
    sxx = sum(x[2] for x in parts)
    n = sum(x[3] for x in parts)
    slope = 100 * t_stat / sxx if sxx > 0 else float("nan")
    z = t_stat / np.sqrt(var) if var > 0 else float("nan")
    p = float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    return Trend(n=n, slope_per_100_trials=float(slope), z=float(z), p=p,
                 learning=bool(np.isfinite(p) and slope > 0 and p < alpha))


def _blocks(trial: np.ndarray, correct: np.ndarray, edges: np.ndarray, level: float) -> list[Block]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (trial >= lo) & (trial < hi)
        out.append(Block(first_trial=int(lo), last_trial=int(hi) - 1,
                         accuracy=proportion(k=int(correct[sel].sum()), n=int(sel.sum()), level=level)))
    return out


def learning_effect(*, trial: np.ndarray, correct: np.ndarray, reader: np.ndarray, n_blocks: int = 5,
                    level: float = 0.95) -> LearningEffect:
    """Accuracy by block of trials and the reader-stratified trend test.

    Args:
        trial: ``(n,)`` 0-based position of each rating in its reader's sequence.
        correct: ``(n,)`` 0/1, the call was right.
        reader: ``(n,)`` reader ids (the strata).
        n_blocks: number of equal-width blocks of trial index (fewer if there are fewer trials).
        level: confidence level of the block CIs; ``1 - level`` is the test's alpha.

    Returns:
        A :class:`LearningEffect`.
    """
    trial, correct = np.asarray(trial), np.asarray(correct, dtype=float)
    reader = np.asarray(reader).astype(str)
    if not (trial.shape == correct.shape == reader.shape) or trial.ndim != 1 or trial.size == 0:
        raise ValueError(f"trial {trial.shape}, correct {correct.shape} and reader {reader.shape} "
                         "must be 1-D, non-empty, of equal length")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    # Blocks span the trials present: main-analysis trials start after the training block.
    start, end = int(trial.min()), int(trial.max()) + 1
    edges = np.unique(np.round(np.linspace(start, end, min(n_blocks, end - start) + 1)).astype(int))
    alpha = 1 - level
    readers = list(dict.fromkeys(reader.tolist()))
    parts = {r: _sums(trial[reader == r].astype(float), correct[reader == r]) for r in readers}
    per = {r: _trend([parts[r]], alpha) for r in readers}
    return LearningEffect(
        n_blocks=len(edges) - 1,
        blocks=_blocks(trial, correct, edges, level),
        blocks_per_reader={r: _blocks(trial[reader == r], correct[reader == r], edges, level)
                           for r in readers},
        pooled=_trend(list(parts.values()), alpha),
        per_reader=per,
        readers_learning=[r for r in readers if per[r].learning],
    )
