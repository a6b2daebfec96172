"""Reading orders: determinism, Williams position balance, ratio jitter, duplicates, catch and training."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from studies.design import (StudyDesign, check_pool, kept_counts, position_groups, reader_sequence,
                            williams_rows)

MAIN = list(range(100, 148))  # 48 main cases
SYN = [i % 2 == 1 for i in range(48)]
TRAIN = [1, 2, 3]
CATCH = [300, 301]


def _seq(design: StudyDesign, k: int, **kw) -> list[int]:
    args = {"training_ids": TRAIN, "main_ids": MAIN, "synthetic": SYN, "catch_ids": CATCH} | kw
    return [s.case_id for s in reader_sequence(design, reader_index=k, **args)]


@pytest.mark.parametrize("m", range(1, 9))
def test_williams_rows_are_latin_and_carryover_balanced(m):
    rows = williams_rows(m)
    assert len(rows) == (m if m % 2 == 0 else 2 * m)
    for block in (rows[:m], rows[m:] or rows[:m]):
        assert all(sorted(col) == list(range(m)) for col in zip(*block))  # each group once per position
    pairs = Counter((a, b) for row in rows for a, b in zip(row, row[1:]))
    if m > 1:
        assert set(pairs) == {(a, b) for a in range(m) for b in range(m) if a != b}
        assert len(set(pairs.values())) == 1  # every ordered pair adjacent equally often


def test_same_seed_same_order_other_reader_or_seed_other_order():
    design = StudyDesign(seed=5)
    assert _seq(design, 0) == _seq(design, 0)
    assert _seq(design, 0) != _seq(design, 1)
    assert _seq(design, 0) != _seq(StudyDesign(seed=6), 0)
    # Training first, then every main and catch case exactly once.
    seq = _seq(design, 3)
    assert sorted(seq[:3]) == TRAIN
    assert sorted(seq[3:]) == sorted(MAIN + CATCH)


def test_positions_of_each_case_are_balanced_across_readers():
    design = StudyDesign(seed=9, n_position_blocks=4)
    main_only = [[c for c in _seq(design, k, catch_ids=[], training_ids=[])] for k in range(8)]
    quarter = {c: Counter() for c in MAIN}
    for seq in main_only:
        for pos, c in enumerate(seq):
            quarter[c][pos * 4 // len(seq)] += 1
    # Two full Williams cycles: every case sits exactly twice in every quarter.
    assert all(q == Counter({0: 2, 1: 2, 2: 2, 3: 2}) for q in quarter.values())
    mean_pos = np.array([np.mean([seq.index(c) for seq in main_only]) for c in MAIN])
    assert np.all(np.abs(mean_pos - 23.5) <= 6)  # a per-reader shuffle alone spreads far wider
    # Neighbours differ between readers: no fixed pairs.
    pairs = Counter(p for seq in main_only for p in zip(seq, seq[1:]))
    assert max(pairs.values()) <= 3


def test_position_groups_keep_the_truth_ratio():
    syn = [i % 3 == 0 for i in range(48)]
    groups = position_groups(MAIN, syn, n_groups=5, seed=1)
    assert sorted(c for g in groups for c in g) == MAIN
    counts = [sum(syn[MAIN.index(c)] for c in g) for g in groups]
    assert max(counts) - min(counts) <= 1 and max(map(len, groups)) - min(map(len, groups)) <= 1


def test_jittered_ratio_varies_per_reader_within_range():
    design = StudyDesign(seed=2, synthetic_fraction_range=(0.4, 0.6))
    fractions = []
    for k in range(12):
        main = [c for c in _seq(design, k, catch_ids=[], training_ids=[])]
        fractions.append(np.mean([SYN[MAIN.index(c)] for c in main]))
        assert len(set(main)) == len(main)
    assert all(0.4 - 0.03 <= f <= 0.6 + 0.03 for f in fractions)  # rounding to whole cases
    assert max(fractions) - min(fractions) > 0.05
    assert kept_counts(24, 24, 0.4) == (24, 16)
    assert kept_counts(24, 24, 0.5) == (24, 24)


def test_duplicates_come_far_from_their_original_and_originals_are_kept():
    design = StudyDesign(seed=4, n_duplicates=4, duplicate_min_gap=12, synthetic_fraction_range=(0.4, 0.6))
    dups = {900: MAIN[0], 901: MAIN[1], 902: MAIN[5], 903: MAIN[-1]}
    for k in range(10):
        seq = _seq(design, k, duplicates=dups)
        for copy, original in dups.items():
            assert seq.count(copy) == 1 and seq.count(original) == 1
            assert abs(seq.index(copy) - seq.index(original)) >= 12


def test_catch_cases_are_in_the_main_block_at_varying_positions():
    design = StudyDesign(seed=8)
    positions = [_seq(design, k).index(300) for k in range(8)]
    assert all(p >= len(TRAIN) for p in positions) and len(set(positions)) > 3


def test_pool_checks_name_the_problem():
    with pytest.raises(ValueError, match="duplicate_min_gap 30"):
        check_pool(StudyDesign(seed=0, n_duplicates=2, duplicate_min_gap=30), n_real=24, n_synthetic=24,
                   n_catch=0)
    check_pool(StudyDesign(seed=0, n_duplicates=2, duplicate_min_gap=24), n_real=24, n_synthetic=24,
               n_catch=0)
    with pytest.raises(ValueError, match="real and synthetic"):
        check_pool(StudyDesign(seed=0), n_real=0, n_synthetic=5, n_catch=0)
    with pytest.raises(ValueError, match="n_position_blocks 9"):
        check_pool(StudyDesign(seed=0, n_position_blocks=9), n_real=4, n_synthetic=4, n_catch=0)
    with pytest.raises(ValueError, match="synthetic_fraction_range"):
        StudyDesign(seed=0, synthetic_fraction_range=(0.6, 0.4))


def test_design_round_trips_through_json():
    design = StudyDesign(seed=3, n_duplicates=2, synthetic_fraction_range=(0.45, 0.55))
    assert StudyDesign.from_json(design.to_json()) == design
