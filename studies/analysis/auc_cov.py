"""Covariance of empirical AUCs measured on the same cases (the input of an ORH analysis).

Three estimators, as in MRMCaov (``cov = jackknife | DeLong | unbiased``):

* ``jackknife``: case-deletion jackknife, ``(c - 1) / c * sum_k (A(-k) - mean)(A(-k) - mean)^T``
  over all c cases (Iowa OR-DBM MRMC, RJafroc and MRMCaov default);
* ``delong``: DeLong et al. (1988) structural components, ``S10 / n1 + S01 / n0``;
* ``unbiased``: the U-statistic estimator of Gallas, Pennello and Meyers (2007), JOSA A 24:B70-80,
  for a fully crossed design.

All take ``scores`` ``(k, c)``: k readings (reader x modality combinations) of the same c cases.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from studies.analysis.roc import delong_covariance, placement_values

CovMethod = Literal["jackknife", "delong", "unbiased"]
COV_METHODS: tuple[str, ...] = ("jackknife", "delong", "unbiased")
# Upper bound on the kernel block held in memory by the unbiased estimator (floats).
_BLOCK_FLOATS = 4_000_000


def jackknife_aucs(*, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Leave-one-case-out AUCs.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        scores: ``(k, c)``.

    Returns:
        ``(k, c)``: column m is the AUC of each reading with case m deleted.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos = np.asarray(truth).astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"the jackknife needs >= 2 synthetic and >= 2 real cases, got {n1} and {n0}")
    out = np.empty(scores.shape)
    for g, s in enumerate(scores):
        v10, v01 = placement_values(truth=truth, score=s)
        a = v10.mean()
        # Deleting a synthetic case i leaves the mean of the other n1 - 1 placement values.
        out[g, pos] = (n1 * a - v10) / (n1 - 1)
        out[g, ~pos] = (n0 * a - v01) / (n0 - 1)
    return out


def jackknife_covariance(*, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Case-jackknife covariance ``(c - 1)/c * sum_m (A(-m) - mean)(...)^T`` of k AUCs, ``(k, k)``.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        scores: ``(k, c)``.
    """
    jk = jackknife_aucs(truth=truth, scores=scores)  # (k, c)
    c = jk.shape[1]
    centred = jk - jk.mean(axis=1, keepdims=True)
    return (c - 1) / c * centred @ centred.T


def unbiased_covariance(*, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Unbiased (U-statistic) covariance of k empirical AUCs, for any reader/case design, ``(k, k)``.

    Readings may cover different cases (NaN = case not read): only shared cases contribute
    to a covariance. With ``psi_g`` the Mann-Whitney kernel of reading g over its own
    synthetic x real cases (zero elsewhere), ``S_g`` its total, ``R_g`` / ``C_g`` its row /
    column sums, ``N_gh = n1_g n0_g n1_h n0_h`` and ``p``, ``q`` the numbers of synthetic and
    real cases shared by g and h::

        delta_gh = N_gh / (N_gh - n1_g q n1_h - n0_g p n0_h + p q)
        cov_gh = [(1 - delta) S_g S_h + delta (R_g.R_h + C_g.C_h - sum psi_g psi_h)] / N_gh

    (Gallas et al. 2007; the estimator of MRMCaov ``cov = unbiased``). In a fully crossed
    design ``delta = n1 n0 / ((n1 - 1)(n0 - 1))``.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        scores: ``(k, c)``; NaN where a reading did not include the case.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos = np.asarray(truth).astype(bool)
    rated = np.isfinite(scores)
    m1, m0 = rated[:, pos].astype(float), rated[:, ~pos].astype(float)  # (k, n1), (k, n0) masks
    n1g, n0g = m1.sum(axis=1), m0.sum(axis=1)
    if (n1g < 2).any() or (n0g < 2).any():
        g = int(np.flatnonzero((n1g < 2) | (n0g < 2))[0])
        raise ValueError(f"the unbiased estimator needs >= 2 synthetic and >= 2 real cases per reading; "
                         f"reading {g} has {int(n1g[g])} and {int(n0g[g])}")
    x, y = np.nan_to_num(scores[:, pos]), np.nan_to_num(scores[:, ~pos])
    k, n1 = x.shape
    n0 = y.shape[1]
    row = np.empty((k, n1))
    col = np.zeros((k, n0))
    gram = np.zeros((k, k))
    step = max(1, _BLOCK_FLOATS // max(1, k * n0))
    for start in range(0, n1, step):
        sl = slice(start, start + step)
        xb = x[:, sl, None]  # (k, b, 1)
        psi = (xb > y[:, None, :]) + 0.5 * (xb == y[:, None, :])  # (k, b, n0)
        psi *= m1[:, sl, None] * m0[:, None, :]  # zero where the reading lacks either case
        row[:, sl] = psi.sum(axis=2)
        col += psi.sum(axis=1)
        flat = psi.reshape(k, -1)
        gram += flat @ flat.T
    total = row.sum(axis=1)  # (k,)
    size = n1g * n0g  # kernel entries of each reading
    nn = np.outer(size, size)
    shared_pos, shared_neg = m1 @ m1.T, m0 @ m0.T
    delta = nn / (nn - np.outer(n1g, n1g) * shared_neg - np.outer(n0g, n0g) * shared_pos
                  + shared_pos * shared_neg)
    cov = (1 - delta) * np.outer(total, total) + delta * (row @ row.T + col @ col.T - gram)
    return cov / nn


def auc_covariance(*, truth: np.ndarray, scores: np.ndarray, method: CovMethod = "jackknife") -> np.ndarray:
    """Covariance matrix of k empirical AUCs on the same cases.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        scores: ``(k, c)``, no missing values.
        method: ``"jackknife"``, ``"delong"`` or ``"unbiased"``.

    Returns:
        ``(k, k)`` covariance matrix.
    """
    if method == "jackknife":
        return jackknife_covariance(truth=truth, scores=scores)
    if method == "delong":
        return delong_covariance(truth=truth, scores=scores)
    if method == "unbiased":
        return unbiased_covariance(truth=truth, scores=scores)
    raise ValueError(f"unknown covariance method {method!r}; choose from {list(COV_METHODS)}")
