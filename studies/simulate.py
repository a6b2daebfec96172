"""Simulated readers of known skill, rating a stored study through the same crud calls as people.

Used to rehearse a study (does the analysis recover a known accuracy? is the design
balanced?) and in tests. Each reader is added with :func:`studies.crud.add_reader`,
resolved from the link token, and then loops ``next_case_for_reader`` ->
``mark_shown`` -> ``record_telemetry`` -> ``submit_rating`` until done. The simulator
alone peeks at truth (it plays an oracle of given skill).

Reader model (equal-variance signal detection): for a case of truth ``s`` (+1 synthetic,
-1 real) the reader perceives ``z = s * mu + u_case + e``, ``mu = Phi^-1(accuracy)``,
``u_case ~ N(0, case_sd^2)`` shared by every reader and by a hidden duplicate (case
difficulty, so readers agree beyond chance) and ``e ~ N(0, 1 - case_sd^2)``. Since
``u + e ~ N(0, 1)``, a reader calls correctly with probability ``accuracy`` exactly.

* call: "synthetic" when ``z > 0``;
* confidence 1..K: ``|z|`` binned at ``Phi^-1(0.5 + 0.5 j / K)``, so a chance-level reader
  uses the levels uniformly and errors come with lower confidence than hits;
* realism Likert: ``round(3 - 1.2 z)`` clipped to 1..5, so its gap between truths grows
  with skill;
* catch cases ("obvious fakes") are called correctly with probability 0.98;
* telemetry: volumes get a contiguous run of slices around the middle and one or two
  window presets.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sqlmodel import Session

from studies import crud

CATCH_ACCURACY = 0.98
ROLES_CYCLE = ("radiologist", "pathologist", "other")


def _confidence(z: float, levels: int) -> int:
    edges = norm.ppf(0.5 + 0.5 * np.arange(1, levels) / levels)  # (levels - 1,) increasing
    return 1 + int(np.sum(abs(z) > edges))


def simulate(*, session: Session, study_id: int, readers: int, accuracy: float, seed: int,
             case_sd: float = 0.5, name_prefix: str = "sim") -> list[int]:
    """Add simulated readers and submit all their ratings.

    Args:
        session: database session.
        study_id: a stored study with no lock.
        readers: number of readers to add, >= 1.
        accuracy: probability of a correct call on main and training cases, in [0, 1].
        seed: seed of every draw (case difficulties, reader noise, telemetry).
        case_sd: standard deviation of the shared case difficulty, in [0, 1).
        name_prefix: display names are ``<prefix>-01``, ``<prefix>-02`` ...

    Returns:
        The database ids of the new readers.
    """
    if readers < 1:
        raise ValueError(f"readers must be >= 1, got {readers}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if not 0.0 <= case_sd < 1.0:
        raise ValueError(f"case_sd must be in [0, 1), got {case_sd}")
    study = crud.get_study(session=session, study_id=study_id)
    levels, presets = study.confidence_levels, sorted(study.window_presets)
    n_slices = study.design["stimulus"]["volume_shape"][0] if study.kind == "volume" else 0
    cases = crud.list_cases(session=session, study_id=study_id)
    by_public = {c.public_id: c for c in cases}
    # Case difficulty is keyed by the original, so a duplicate copy looks as hard as its original.
    difficulty_rng = np.random.default_rng([seed, 0])
    difficulty = {c.id: difficulty_rng.normal(0.0, case_sd) for c in cases}
    mu = float(norm.ppf(np.clip(accuracy, 1e-6, 1 - 1e-6)))
    mu_catch = float(norm.ppf(CATCH_ACCURACY))
    noise_sd = float(np.sqrt(1.0 - case_sd**2))

    reader_ids = []
    existing = len(crud.reader_progress(session=session, study_id=study_id))
    for r in range(readers):
        rng = np.random.default_rng([seed, 1, r])
        _, token = crud.add_reader(session=session, study_id=study_id,
                                   display_name=f"{name_prefix}-{existing + r + 1:02d}",
                                   role=ROLES_CYCLE[r % len(ROLES_CYCLE)],
                                   years_experience=float(rng.integers(1, 30)))
        reader = crud.reader_by_token(session=session, token=token)
        reader_ids.append(reader.id)
        while (view := crud.next_case_for_reader(session=session, reader_id=reader.id)) is not None:
            crud.mark_shown(session=session, reader_id=reader.id, assignment_id=view.assignment_id)
            case = by_public[view.public_id]
            sign = 1.0 if case.truth == "synthetic" else -1.0
            if case.is_catch:
                z = sign * mu_catch + rng.normal()
            else:
                z = sign * mu + difficulty[case.duplicate_of or case.id] + rng.normal(0.0, noise_sd)
            slices, windows = [], []
            if n_slices:
                width = int(rng.integers(1, n_slices + 1))
                start = int(rng.integers(0, n_slices - width + 1))
                slices = list(range(start, start + width))
                windows = [str(w) for w in rng.choice(presets, size=int(rng.integers(1, 3)), replace=False)]
                crud.record_telemetry(session=session, reader_id=reader.id, assignment_id=view.assignment_id,
                                      slices=slices)
            crud.submit_rating(session=session, reader_id=reader.id, assignment_id=view.assignment_id,
                               call="synthetic" if z > 0 else "real", confidence=_confidence(z, levels),
                               likert=int(np.clip(np.rint(3.0 - 1.2 * z), 1, 5)), windows=windows)
    return reader_ids
