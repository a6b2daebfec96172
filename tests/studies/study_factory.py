"""Builders shared by the study-engine tests: stored studies on real SQLite files.

Images here are seeded smooth random textures (no shared data needed); tests that need
real H&E or CT take them from the ``shared_data`` fixture instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from sqlmodel import Session

from studies import crud
from studies.db import init_db, make_engine
from studies.design import StudyDesign
from studies.stimuli import CaseInput, StimulusSpec

PASSWORD = "owner-secret-1"


def texture(rng: np.random.Generator, shape: tuple[int, int], *, noise: float = 0.0) -> np.ndarray:
    """uint8 ``(H, W, 3)`` smooth random texture, plus optional white noise of std ``noise``."""
    base = gaussian_filter(rng.normal(size=(*shape, 3)), sigma=(3, 3, 0))
    img = 128 + 40 * base / base.std()
    if noise:
        img = img + rng.normal(0, noise, size=base.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_cases(n_main: int, *, seed: int, n_training: int = 0, n_catch: int = 0,
                shape: tuple[int, int] = (40, 48)) -> list[CaseInput]:
    """Main cases alternating real/synthetic, then training and catch cases."""
    rng = np.random.default_rng(seed)
    cases = [CaseInput(array=texture(rng, shape), truth="synthetic" if i % 2 else "real", kind="image2d",
                       strata={"organ": ("liver", "lung")[i % 3 == 0]},
                       provenance={"source_file": f"/archive/patient_{i:04d}/slice_{i:03d}.dcm", "seed": i})
             for i in range(n_main)]
    cases += [CaseInput(array=texture(rng, shape), truth=("real", "synthetic")[i % 2], kind="image2d",
                        training=True) for i in range(n_training)]
    cases += [CaseInput(array=texture(rng, shape, noise=60), truth="synthetic", kind="image2d", catch=True)
              for _ in range(n_catch)]
    return cases


def new_study(tmp_path: Path, *, n_main: int = 24, design: StudyDesign | None = None, n_training: int = 0,
              n_catch: int = 0, allow_changes: bool = False, name: str = "vtt",
              db_name: str = "study.sqlite"):
    """Engine on ``tmp_path/db_name`` with one stored study; returns ``(engine, study_id, media_dir)``."""
    engine = make_engine(tmp_path / db_name)
    init_db(engine)
    media = tmp_path / "media"
    with Session(engine) as session:
        study = crud.create_study(
            session=session, name=name,
            cases=image_cases(n_main, seed=7, n_training=n_training, n_catch=n_catch),
            design=design or StudyDesign(seed=11, n_position_blocks=4), owner_password=PASSWORD,
            media_dir=media, spec=StimulusSpec(image_size=(32, 32)), allow_changes=allow_changes)
        return engine, study.id, media


def add_readers(engine, study_id: int, n: int) -> list[tuple[int, str]]:
    """Add ``n`` readers; returns ``(reader_id, token)`` pairs."""
    out = []
    with Session(engine) as session:
        for i in range(n):
            reader, token = crud.add_reader(session=session, study_id=study_id, display_name=f"reader {i}",
                                            role="radiologist", years_experience=5)
            out.append((reader.id, token))
    return out


def rate_next(engine, reader_id: int, *, call: str = "real", confidence: int = 2):
    """Rate the reader's next case in a fresh session; returns the rating id (None when done)."""
    with Session(engine) as session:
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        if view is None:
            return None
        crud.mark_shown(session=session, reader_id=reader_id, assignment_id=view.assignment_id)
        return crud.submit_rating(session=session, reader_id=reader_id, assignment_id=view.assignment_id,
                                  call=call, confidence=confidence, likert=3).id
