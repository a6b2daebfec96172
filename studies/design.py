"""Reading orders: seeded, position-balanced, with training, catch and hidden-duplicate cases.

Pure functions on integer case ids; :mod:`studies.crud` stores the result as
assignments, so a reader resumes in exactly the order first drawn.

Scheme for reader ``k`` (all randomness from ``numpy.random.default_rng`` seeded with
``[seed, stream, ...]``, so one study seed reproduces everything):

1. **Training block first**: the training cases, shuffled per reader (with feedback in
   the app; excluded from analysis).
2. **Position blocks** (study-wide, stream 0): main cases are dealt into
   ``n_position_blocks`` groups, stratified by truth so each group has the pool's
   real:synthetic ratio.
3. **Williams square**: reader ``k`` reads the groups in the order of row
   ``k mod len(rows)`` of a Williams design (:func:`williams_rows`). Over a full cycle of
   readers every group sits once in every segment of the sequence (position balance:
   fatigue and learning hit each case early for some readers, late for others) and
   follows every other group equally often (first-order carryover balance). Balance is
   exact when the number of readers is a multiple of the cycle (``m`` for even ``m``,
   ``2m`` for odd ``m``).
4. **Within each group** the order is shuffled per reader (stream 2), so no two readers
   share a sequence and no case has fixed neighbours.
5. **Hidden real:synthetic ratio** (optional): reader ``k`` draws a synthetic fraction
   uniformly from ``synthetic_fraction_range`` (Kazuhiro 2018 used 40-60 %) and sees the
   largest random subset of the main pool with that fraction, so counting answers
   cannot be used to balance calls. Originals of duplicates are always kept.
6. **Catch cases** go to uniformly random positions of the main block.
7. **Hidden duplicates**: each duplicate copy (its own case row and public id, chosen
   study-wide, stream 1) goes to a random position at least ``duplicate_min_gap``
   presentations after its original; only when the original sits too close to the end
   does the copy go at least that far *before* it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

BLOCKS = ("training", "main")


@dataclass(frozen=True)
class StudyDesign:
    """Ordering options of a study; stored in the study's design JSON.

    Attributes:
        seed: the one seed of every draw in this module.
        n_position_blocks: segments of the main block balanced by the Williams square
            (1 disables balancing; the order is then a per-reader shuffle).
        n_duplicates: main cases shown a second time, as hidden copies, to every reader.
        duplicate_min_gap: least number of presentations between the two showings.
        synthetic_fraction_range: ``(low, high)`` per-reader synthetic fraction of the main
            block, or None to show every main case to every reader.
    """

    seed: int
    n_position_blocks: int = 4
    n_duplicates: int = 0
    duplicate_min_gap: int = 10
    synthetic_fraction_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.n_position_blocks < 1:
            raise ValueError(f"n_position_blocks must be >= 1, got {self.n_position_blocks}")
        if self.n_duplicates < 0:
            raise ValueError(f"n_duplicates must be >= 0, got {self.n_duplicates}")
        if self.duplicate_min_gap < 1:
            raise ValueError(f"duplicate_min_gap must be >= 1, got {self.duplicate_min_gap}")
        if self.synthetic_fraction_range is not None:
            lo, hi = self.synthetic_fraction_range
            if not 0.0 < lo <= hi < 1.0:
                raise ValueError(f"synthetic_fraction_range must satisfy 0 < low <= high < 1, "
                                 f"got {self.synthetic_fraction_range}")
            object.__setattr__(self, "synthetic_fraction_range", (float(lo), float(hi)))

    def to_json(self) -> dict:
        """Plain dict for the study's design JSON."""
        data = asdict(self)
        if self.synthetic_fraction_range is not None:
            data["synthetic_fraction_range"] = list(self.synthetic_fraction_range)
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> StudyDesign:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        if data.get("synthetic_fraction_range") is not None:
            data["synthetic_fraction_range"] = tuple(data["synthetic_fraction_range"])
        return cls(**data)


@dataclass(frozen=True)
class Slot:
    """One presentation: which case, in which block."""

    case_id: int
    block: str


def williams_rows(m: int) -> list[list[int]]:
    """Rows of a Williams design for ``m`` treatments (here: position groups).

    Row 0 is ``0, 1, m-1, 2, m-2, ...``; row ``k`` adds ``k`` mod ``m``. For even ``m`` these
    ``m`` rows are a Latin square in which every ordered pair of groups is adjacent
    exactly once; for odd ``m`` the mirrored rows are appended (``2m`` rows, every pair
    adjacent exactly twice).

    Args:
        m: number of treatments, >= 1.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    first, low, high = [0], 1, m - 1
    while len(first) < m:
        first.append(low)
        low += 1
        if len(first) < m:
            first.append(high)
            high -= 1
    rows = [[(v + k) % m for v in first] for k in range(m)]
    return rows if m % 2 == 0 else rows + [row[::-1] for row in rows]


def position_groups(main_ids: Sequence[int], synthetic: Sequence[bool], *, n_groups: int,
                    seed: int) -> list[list[int]]:
    """Deal main cases into position groups, stratified by truth (study-wide, stream 0).

    Args:
        main_ids: case ids of the main pool (no catch cases, no duplicate copies).
        synthetic: ``(len(main_ids),)`` truth, True = synthetic.
        n_groups: number of groups, <= number of main cases.
        seed: study seed.
    """
    if len(main_ids) != len(synthetic):
        raise ValueError(f"{len(main_ids)} main ids but {len(synthetic)} truth values")
    if not 1 <= n_groups <= len(main_ids):
        raise ValueError(f"n_position_blocks must be between 1 and the {len(main_ids)} main cases, "
                         f"got {n_groups}")
    rng = np.random.default_rng([seed, 0])
    ids = np.asarray(main_ids)
    syn = np.asarray(synthetic, dtype=bool)
    # Deal synthetic then real round-robin: groups differ by at most one case per class.
    dealt = np.concatenate([rng.permutation(ids[syn]), rng.permutation(ids[~syn])])
    return [dealt[g::n_groups].tolist() for g in range(n_groups)]


def choose_duplicates(main_ids: Sequence[int], *, n: int, seed: int) -> list[int]:
    """Main cases that get a hidden copy (study-wide, stream 1), in ``main_ids`` order.

    Args:
        main_ids: case ids of the main pool.
        n: how many, <= len(main_ids).
        seed: study seed.
    """
    if not 0 <= n <= len(main_ids):
        raise ValueError(f"n_duplicates must be between 0 and the {len(main_ids)} main cases, got {n}")
    picked = set(np.random.default_rng([seed, 1]).choice(len(main_ids), size=n, replace=False).tolist())
    return [c for i, c in enumerate(main_ids) if i in picked]


def kept_counts(n_real: int, n_synthetic: int, fraction: float) -> tuple[int, int]:
    """Largest ``(real, synthetic)`` counts with the given synthetic fraction.

    Args:
        n_real: real cases available.
        n_synthetic: synthetic cases available.
        fraction: wanted synthetic fraction, in (0, 1).
    """
    total = int(np.floor(min(n_synthetic / fraction, n_real / (1.0 - fraction)) + 1e-9))
    k_syn = min(n_synthetic, int(round(fraction * total)))
    return min(n_real, total - k_syn), k_syn


def min_main_length(design: StudyDesign, *, n_real: int, n_synthetic: int, n_catch: int) -> int:
    """Shortest main block any reader can get (before duplicate copies are added)."""
    if design.synthetic_fraction_range is None:
        return n_real + n_synthetic + n_catch
    # min(S/f, R/(1-f)) is smallest at an end of the range.
    return min(sum(kept_counts(n_real, n_synthetic, f)) for f in design.synthetic_fraction_range) + n_catch


def check_pool(design: StudyDesign, *, n_real: int, n_synthetic: int, n_catch: int) -> None:
    """Raise ValueError when the main pool cannot carry the design for every reader.

    Args:
        design: the options.
        n_real: real main cases (no catch, no training).
        n_synthetic: synthetic main cases.
        n_catch: catch cases.
    """
    if n_real < 1 or n_synthetic < 1:
        raise ValueError(f"the main block needs real and synthetic cases, got {n_real} real and "
                         f"{n_synthetic} synthetic")
    if design.n_position_blocks > n_real + n_synthetic:
        raise ValueError(f"n_position_blocks {design.n_position_blocks} exceeds the "
                         f"{n_real + n_synthetic} main cases")
    if design.n_duplicates > n_real + n_synthetic:
        raise ValueError(f"n_duplicates {design.n_duplicates} exceeds the {n_real + n_synthetic} main cases")
    if design.n_duplicates:
        shortest = min_main_length(design, n_real=n_real, n_synthetic=n_synthetic, n_catch=n_catch)
        # Every original then has room for its copy on one side at least.
        if shortest < 2 * design.duplicate_min_gap - 1:
            raise ValueError(f"duplicate_min_gap {design.duplicate_min_gap} needs main blocks of at least "
                             f"{2 * design.duplicate_min_gap - 1} cases, the shortest is {shortest}")


def reader_sequence(design: StudyDesign, *, reader_index: int, training_ids: Sequence[int],
                    main_ids: Sequence[int], synthetic: Sequence[bool], catch_ids: Sequence[int] = (),
                    duplicates: Mapping[int, int] | None = None) -> list[Slot]:
    """The full reading order of one reader (see the module docstring).

    Args:
        design: study options (seed included).
        reader_index: 0-based order in which the reader was added to the study.
        training_ids: training case ids.
        main_ids: main pool ids, in a stable order (e.g. database id order).
        synthetic: ``(len(main_ids),)`` truth of the main pool, True = synthetic.
        catch_ids: catch case ids.
        duplicates: copy case id -> original case id (an id of ``main_ids``).

    Returns:
        Training slots, then main slots (duplicate copies and catch cases included).
    """
    duplicates = dict(duplicates or {})
    if reader_index < 0:
        raise ValueError(f"reader_index must be >= 0, got {reader_index}")
    unknown = set(duplicates.values()) - set(main_ids)
    if unknown:
        raise ValueError(f"duplicates point at cases outside the main pool: {sorted(unknown)}")
    rng = np.random.default_rng([design.seed, 2, reader_index])
    syn_of = dict(zip(main_ids, (bool(s) for s in synthetic)))

    # 1. Training block.
    training = [int(c) for c in rng.permutation(np.asarray(training_ids, dtype=np.int64))]

    # 2. Per-reader subset for a hidden real:synthetic ratio.
    kept = set(main_ids)
    if design.synthetic_fraction_range is not None:
        forced = set(duplicates.values())
        fraction = rng.uniform(*design.synthetic_fraction_range)
        pools = {flag: [c for c in main_ids if syn_of[c] == flag] for flag in (False, True)}
        k_real, k_syn = kept_counts(len(pools[False]), len(pools[True]), fraction)
        kept = set()
        for flag, k in ((False, k_real), (True, k_syn)):
            must = [c for c in pools[flag] if c in forced]
            rest = [c for c in pools[flag] if c not in forced]
            extra = max(0, k - len(must))
            kept |= set(must) | set(rng.permutation(np.asarray(rest, dtype=np.int64))[:extra].tolist())

    # 3. Williams-ordered groups, shuffled within.
    groups = position_groups(main_ids, synthetic, n_groups=design.n_position_blocks, seed=design.seed)
    rows = williams_rows(design.n_position_blocks)
    main: list[int] = []
    for g in rows[reader_index % len(rows)]:
        members = np.asarray([c for c in groups[g] if c in kept], dtype=np.int64)
        main.extend(int(c) for c in rng.permutation(members))

    # 4. Catch cases anywhere in the main block.
    for c in rng.permutation(np.asarray(catch_ids, dtype=np.int64)):
        main.insert(int(rng.integers(0, len(main) + 1)), int(c))

    # 5. Duplicate copies, far from their original.
    gap = design.duplicate_min_gap
    for copy, original in sorted(duplicates.items()):
        p, n = main.index(original), len(main)
        after = range(p + gap, n + 1)  # copy at index t >= p + gap
        before = range(0, p - gap + 1)  # copy at t, original shifts to p + 1: distance >= gap + 1
        choices = after if len(after) else before
        if not len(choices):
            raise ValueError(f"main block of {n} cases is too short for duplicate_min_gap {gap}")
        main.insert(int(choices[int(rng.integers(0, len(choices)))]), int(copy))

    return [Slot(c, "training") for c in training] + [Slot(c, "main") for c in main]
