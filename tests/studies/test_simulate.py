"""Simulated readers: known skill in, the same skill out, through the real crud path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sqlmodel import Session

from studies import crud
from studies.analysis.agreement import retest_agreement
from studies.analysis.orh import orh_from_ratings
from studies.db import init_db, make_engine
from studies.design import StudyDesign
from studies.simulate import simulate
from studies.stimuli import CaseInput, StimulusSpec
from studies.validation import DEFAULT_WINDOW_PRESETS
from tests.studies.study_factory import PASSWORD, new_study


def _simulated(tmp_path, accuracy: float, *, readers: int = 6, seed: int = 1, n_main: int = 48):
    design = StudyDesign(seed=4, n_duplicates=4, duplicate_min_gap=10)
    engine, study_id, _ = new_study(tmp_path, n_main=n_main, design=design, n_training=2, n_catch=2)
    with Session(engine) as session:
        simulate(session=session, study_id=study_id, readers=readers, accuracy=accuracy, seed=seed)
        return crud.build_ratings(session=session, study_id=study_id), engine, study_id


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Studies rated by 6 simulated readers of accuracy 0.5 and 0.8 (simulated once per module)."""
    return {p: _simulated(tmp_path_factory.mktemp(f"p{p}"), p) for p in (0.5, 0.8)}


@pytest.mark.parametrize("accuracy", [0.5, 0.8])
def test_observed_accuracy_is_near_the_simulated_skill(simulated, accuracy):
    ratings, _, _ = simulated[accuracy]
    main = ratings.main_analysis()
    assert len(main) == 6 * 48
    # SD of the observed accuracy ~0.03 here (288 calls, 48 case difficulties).
    observed = float(np.mean(main.call == main.truth))
    assert abs(observed - accuracy) < 0.07, observed


def test_confidence_and_realism_follow_the_calls(simulated):
    ratings, engine, study_id = simulated[0.8]
    main = ratings.main_analysis()
    correct = main.call == main.truth
    assert main.confidence[correct].mean() > main.confidence[~correct].mean() + 0.3
    assert main.likert[main.truth == 0].mean() > main.likert[main.truth == 1].mean() + 0.8
    catch = ratings.subset(ratings.flag("is_catch"))
    assert len(catch) == 12 and np.mean(catch.call == catch.truth) >= 0.9
    # The analysis runs on a simulated study and sees a skilled panel.
    result = orh_from_ratings(main)
    assert 0.78 < float(np.mean(result.auc)) < 0.95
    assert retest_agreement(ratings, n_boot=0).pooled.kappa > 0.3
    with Session(engine) as session:
        events = crud.audit_events(session=session, study_id=study_id)
        progress = crud.reader_progress(session=session, study_id=study_id)
    assert sum(e.action == "submit_rating" for e in events) == len(ratings)
    assert all(p.finished for p in progress) and len(progress) == 6


def test_chance_readers_give_realism_independent_of_truth(simulated):
    ratings, _, _ = simulated[0.5]
    main = ratings.main_analysis()
    assert abs(main.likert[main.truth == 0].mean() - main.likert[main.truth == 1].mean()) < 0.25


def test_same_seed_same_answers(tmp_path):
    a, _, _ = _simulated(tmp_path / "a", 0.7, readers=2, n_main=20)
    b, _, _ = _simulated(tmp_path / "b", 0.7, readers=2, n_main=20)
    c, _, _ = _simulated(tmp_path / "c", 0.7, readers=2, n_main=20, seed=2)
    assert np.array_equal(a.score, b.score) and not np.array_equal(a.score, c.score)


def test_volume_readers_leave_telemetry(tmp_path):
    rng = np.random.default_rng(0)
    cases = [CaseInput(array=gaussian_filter(rng.normal(40, 300, (6, 24, 24)), 1.0), kind="volume",
                       truth=("real", "synthetic")[i % 2]) for i in range(12)]
    engine = make_engine(tmp_path / "vol.sqlite")
    init_db(engine)
    with Session(engine) as session:
        study = crud.create_study(session=session, name="ct", cases=cases, owner_password=PASSWORD,
                                  design=StudyDesign(seed=1, n_position_blocks=2),
                                  media_dir=tmp_path / "media",
                                  spec=StimulusSpec(volume_shape=(4, 16, 16)))
        simulate(session=session, study_id=study.id, readers=2, accuracy=0.7, seed=0)
        ratings = crud.list_ratings(session=session, study_id=study.id)
    assert len(ratings) == 24
    assert all(r.slices_visited and set(r.slices_visited) <= set(range(4)) for r in ratings)
    assert all(r.windows_used and set(r.windows_used) <= set(DEFAULT_WINDOW_PRESETS) for r in ratings)


def test_bad_arguments_are_refused(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    with Session(engine) as session:
        with pytest.raises(ValueError, match="accuracy"):
            simulate(session=session, study_id=study_id, readers=1, accuracy=1.5, seed=0)
        with pytest.raises(ValueError, match="readers"):
            simulate(session=session, study_id=study_id, readers=0, accuracy=0.5, seed=0)
