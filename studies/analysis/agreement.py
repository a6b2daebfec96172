"""Agreement between readers (Fleiss, pairwise Cohen) and within a reader (hidden repeats).

Kappas have no closed-form variance here: CIs come from a percentile bootstrap that
resamples *cases* (the readers are the fixed raters being compared), with a seeded
``numpy.random.Generator``. Kappa is NaN where chance agreement is 1 (everyone gave the
same answer to everything), where it is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from studies.ratings import Ratings


def fleiss_kappa(*, counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories table of rater counts.

    Args:
        counts: ``(N, K)`` non-negative ints; ``counts[i, j]`` raters put item i in category j.
            Every row must sum to the same number of raters n >= 2.

    Returns:
        ``(P_bar - P_e) / (1 - P_e)`` (Fleiss 1971); NaN when ``P_e == 1``.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise ValueError(f"counts must be (items, categories), got shape {counts.shape}")
    n = counts.sum(axis=1)
    if (counts < 0).any() or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError(f"every item needs the same number (>= 2) of raters, got row sums {np.unique(n)}")
    return float(_fleiss_batch(counts[None])[0])


def _fleiss_batch(counts: np.ndarray) -> np.ndarray:
    # counts: (B, N, K) with a constant number of raters n per item.
    n = counts[0, 0].sum()
    p_i = ((counts**2).sum(axis=2) - n) / (n * (n - 1))  # (B, N)
    p_j = counts.sum(axis=1) / (counts.shape[1] * n)  # (B, K)
    p_bar, p_e = p_i.mean(axis=1), (p_j**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)


def cohen_kappa(*, a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa between two raters on the same items (any categorical labels).

    Args:
        a: ``(N,)`` labels of rater a.
        b: ``(N,)`` labels of rater b.

    Returns:
        ``(p_o - p_e) / (1 - p_e)``; NaN when ``p_e == 1``.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"a {a.shape} and b {b.shape} must be 1-D, non-empty, of equal length")
    labels, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    table = np.zeros((labels.size, labels.size))
    np.add.at(table, (inv[: a.size], inv[a.size:]), 1)
    table /= a.size
    p_o = np.trace(table)
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def _binary_kappa_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # a, b: (B, N) 0/1 -> (B,) Cohen's kappa.
    pa, pb = a.mean(axis=1), b.mean(axis=1)
    p_o = (a == b).mean(axis=1)
    p_e = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)


def _nanmean(x: np.ndarray, *, axis: int) -> np.ndarray:
    # Mean over defined kappas; NaN (not a warning) where none is defined.
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def _kappa_pair(calls: np.ndarray, i: int, j: int) -> float:
    return float(_binary_kappa_batch(calls[None, :, i], calls[None, :, j])[0])


def _percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class KappaEstimate:
    """A kappa with its bootstrap percentile CI (resampling cases)."""

    kappa: float
    ci_low: float
    ci_high: float
    n_cases: int


@dataclass(frozen=True)
class Agreement:
    """Inter-reader agreement of binary calls on cases rated by every reader.

    Attributes:
        fleiss: Fleiss' kappa over all readers.
        mean_cohen: mean pairwise Cohen's kappa.
        pairwise: ``{"readerA|readerB": kappa}``.
        percent_agreement: mean over pairs of the fraction of cases with the same call.
    """

    readers: list[str]
    fleiss: KappaEstimate
    mean_cohen: KappaEstimate
    pairwise: dict[str, float]
    percent_agreement: float
    n_boot: int
    level: float


def agreement(*, calls: np.ndarray, readers: list[str], level: float = 0.95, n_boot: int = 1000,
              seed: int = 0) -> Agreement:
    """Fleiss and pairwise Cohen kappas of binary calls, with case-bootstrap CIs.

    Args:
        calls: ``(c, r)`` 0/1 calls, every case rated by every one of r >= 2 readers.
        readers: ``r`` reader names.
        level: confidence level of the percentile CIs.
        n_boot: bootstrap replicates (0 for no CI).
        seed: seed of the ``numpy.random.Generator`` that draws the case resamples.

    Returns:
        An :class:`Agreement`.
    """
    calls = np.asarray(calls)
    if calls.ndim != 2 or calls.shape[1] < 2 or calls.shape[1] != len(readers):
        raise ValueError(f"calls must be (cases, readers) with >= 2 readers named by readers, "
                         f"got shape {calls.shape} and {len(readers)} names")
    if not np.isin(calls, (0, 1)).all():
        raise ValueError(f"calls must be 0/1, got values {np.unique(calls)}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    c, r = calls.shape
    pairs = list(combinations(range(r), 2))
    counts = np.stack([(calls == 0).sum(axis=1), (calls == 1).sum(axis=1)], axis=1)  # (c, 2)
    fleiss = float(_fleiss_batch(counts[None].astype(float))[0])
    pair_k = {f"{readers[i]}|{readers[j]}": _kappa_pair(calls, i, j)
              for i, j in pairs}
    mean_cohen = float(_nanmean(np.array(list(pair_k.values())), axis=0))

    # Bootstrap: one (n_boot, c) index matrix shared by both statistics.
    f_ci = m_ci = (float("nan"), float("nan"))
    if n_boot:
        idx = np.random.default_rng(seed).integers(0, c, size=(n_boot, c))
        f_ci = _percentile_ci(_fleiss_batch(counts[idx].astype(float)), level)
        boot = np.stack([_binary_kappa_batch(calls[idx, i], calls[idx, j]) for i, j in pairs])  # (pairs, B)
        m_ci = _percentile_ci(_nanmean(boot, axis=0), level)
    pct = float(np.mean([(calls[:, i] == calls[:, j]).mean() for i, j in pairs]))
    return Agreement(readers=list(readers), fleiss=KappaEstimate(fleiss, *f_ci, c),
                     mean_cohen=KappaEstimate(mean_cohen, *m_ci, c), pairwise=pair_k,
                     percent_agreement=pct, n_boot=n_boot, level=level)


@dataclass(frozen=True)
class RetestAgreement:
    """Intra-reader (test-retest) agreement of binary calls on hidden repeated cases.

    Attributes:
        per_reader: reader -> Cohen's kappa between first and repeated call (NaN if undefined).
        per_reader_n: reader -> number of (original, repeat) pairs.
        pooled: kappa over all pairs of all readers, with a bootstrap CI resampling pairs.
        percent_agreement: fraction of pairs with the same call.
        mean_abs_score_change: mean |score(repeat) - score(original)|.
    """

    per_reader: dict[str, float]
    per_reader_n: dict[str, int]
    pooled: KappaEstimate
    percent_agreement: float
    mean_abs_score_change: float


def retest_pairs(ratings: Ratings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match each hidden repeat to the same reader's rating of the original case.

    Args:
        ratings: all ratings (duplicates included).

    Returns:
        ``(first, repeat, reader)`` row indices ``(m,)``, ``(m,)`` and reader ids ``(m,)``.
    """
    dup = ratings.flag("is_duplicate")
    if ratings.duplicate_of is None or not dup.any():
        raise ValueError("no hidden repeated cases (is_duplicate) in these ratings")
    row_of = {(r, c, m): i for i, (r, c, m, d) in
              enumerate(zip(ratings.reader, ratings.case, ratings.modality, dup)) if not d}
    first, repeat = [], []
    for i in np.flatnonzero(dup):
        j = row_of.get((ratings.reader[i], ratings.duplicate_of[i], ratings.modality[i]))
        if j is not None:  # the reader may have skipped the original
            first.append(j)
            repeat.append(i)
    if not first:
        raise ValueError("no reader rated both a hidden repeat and its original case")
    first, repeat = np.array(first), np.array(repeat)
    return first, repeat, ratings.reader[repeat]


def retest_agreement(ratings: Ratings, *, level: float = 0.95, n_boot: int = 1000,
                     seed: int = 0) -> RetestAgreement:
    """Intra-reader kappa between the first and the hidden repeated presentation of a case.

    Args:
        ratings: all ratings, with ``call``, ``is_duplicate`` and ``duplicate_of``.
        level: confidence level of the bootstrap CI.
        n_boot: bootstrap replicates over pairs (0 for no CI).
        seed: seed of the bootstrap ``numpy.random.Generator``.
    """
    if ratings.call is None:
        raise ValueError("retest agreement needs binary calls; ratings.call is None")
    first, repeat, readers = retest_pairs(ratings)
    a, b = ratings.call[first], ratings.call[repeat]
    per, per_n = {}, {}
    for rd in ratings.readers():
        sel = readers == rd
        if sel.any():
            per[str(rd)] = float(_binary_kappa_batch(a[None, sel], b[None, sel])[0])
            per_n[str(rd)] = int(sel.sum())
    pooled = float(_binary_kappa_batch(a[None], b[None])[0])
    ci = (float("nan"), float("nan"))
    if n_boot:
        idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
        ci = _percentile_ci(_binary_kappa_batch(a[idx], b[idx]), level)
    change = float(np.abs(ratings.score[repeat] - ratings.score[first]).mean())
    return RetestAgreement(per_reader=per, per_reader_n=per_n, pooled=KappaEstimate(pooled, *ci, a.size),
                           percent_agreement=float((a == b).mean()), mean_abs_score_change=change)
