"""Leakage audit: passes on indistinguishable stimuli, fails on each kind of leak."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from sqlmodel import Session

from studies import crud
from studies.audit import AuditItem, auc_delong, audit_study, cross_validated_auc, run_audit
from studies.db import init_db, make_engine
from studies.design import StudyDesign
from studies.stimuli import CaseInput, StimulusSpec, new_public_id, write_stimulus
from tests.studies.study_factory import PASSWORD, texture

SPEC = StimulusSpec(image_size=(96, 96), volume_shape=(8, 64, 64))


def _he_tiles(shared_data: Path, n: int, size: int = 96) -> list[np.ndarray]:
    """``n`` tissue tiles (mostly non-background) from the real H&E region, in a fixed order."""
    with Image.open(shared_data / "histo" / "cmu-1-small-region.png") as img:
        rgb = np.asarray(img.convert("RGB"))  # (2967, 2220, 3)
    tiles = [rgb[y:y + size, x:x + size] for y in range(0, rgb.shape[0] - size, size)
             for x in range(0, rgb.shape[1] - size, size)]
    tissue = [t for t in tiles if (t.mean(axis=2) < 200).mean() > 0.5]
    return tissue[:n]


def _store(tmp_path: Path, arrays, truths, kind="image2d", provenance=None) -> list[AuditItem]:
    items = []
    for i, (array, truth) in enumerate(zip(arrays, truths)):
        pid = new_public_id()
        path = write_stimulus(CaseInput(array=array, truth=truth, kind=kind), spec=SPEC, media_dir=tmp_path,
                              public_id=pid)
        source = {"source_file": f"/archive/case_{i:05d}_scan.dcm"}
        items.append(AuditItem(public_id=pid, truth=truth, kind=kind, path=path,
                               provenance={**(provenance or {}), **source}))
    return items


def _labels(n: int, seed: int = 0) -> list[str]:
    labels = np.array(["real", "synthetic"] * (n // 2))
    return list(np.random.default_rng(seed).permutation(labels))


def test_real_tiles_with_random_labels_pass(shared_data, tmp_path):
    tiles = _he_tiles(shared_data, 80)
    report = run_audit(_store(tmp_path, tiles, _labels(80)), seed=1)
    assert report.passed, report.summary()
    assert [c.status for c in report.checks] == ["pass"] * 4
    assert report.check("classifier").details["auc"] < 0.7


def test_noisier_synthetic_tiles_fail(shared_data, tmp_path):
    tiles = _he_tiles(shared_data, 80)
    labels = _labels(80)
    rng = np.random.default_rng(3)
    arrays = [t if lab == "real" else np.clip(t + rng.normal(0, 6, t.shape), 0, 255).astype(np.uint8)
              for t, lab in zip(tiles, labels)]
    report = run_audit(_store(tmp_path, arrays, labels), seed=1)
    classifier = report.check("classifier")
    assert not report.passed and classifier.status == "fail", report.summary()
    low, _ = classifier.details["ci"]
    assert classifier.details["auc"] > 0.9 and low > 0.5
    # The other checks still pass: the leak is in the pixels, not the format.
    assert report.check("format_parity").status == "pass"


def test_lower_resolution_synthetic_tiles_fail(shared_data, tmp_path):
    # Synthetic images generated at half resolution and upsampled by the standardisation.
    tiles = _he_tiles(shared_data, 80)
    labels = _labels(80, seed=4)
    half = [np.asarray(Image.fromarray(t).resize((48, 48), Image.Resampling.LANCZOS)) for t in tiles]
    arrays = [t if lab == "real" else h for t, h, lab in zip(tiles, half, labels)]
    report = run_audit(_store(tmp_path, arrays, labels), seed=2)
    assert report.check("classifier").status == "fail", report.summary()
    worst = report.check("classifier").details["univariate_auc"]
    assert min(worst["log_gradient_energy"], worst["hf_fft_share"]) < 0.2  # synthetic are smoother


def test_smooth_textures_pass_and_noisy_ones_fail_without_shared_data(tmp_path):
    rng = np.random.default_rng(0)
    labels = _labels(60, seed=5)
    same = [texture(rng, (96, 96)) for _ in labels]
    assert run_audit(_store(tmp_path / "a", same, labels), seed=0).passed
    noisy = [texture(rng, (96, 96), noise=0 if lab == "real" else 8) for lab in labels]
    assert not run_audit(_store(tmp_path / "b", noisy, labels), seed=0).passed


def test_format_differences_fail(tmp_path):
    rng = np.random.default_rng(1)
    labels = _labels(20)
    items = _store(tmp_path, [texture(rng, (96, 96)) for _ in labels], labels)
    syn = next(it for it in items if it.truth == "synthetic")
    # One synthetic file written by another pipeline: grey PNG with a text chunk.
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "generator v2")
    buffer = io.BytesIO()
    Image.open(syn.path).convert("L").save(buffer, format="PNG", pnginfo=info)
    syn.path.write_bytes(buffer.getvalue())
    parity = run_audit(items, seed=0).check("format_parity")
    assert parity.status == "fail"
    assert "tEXt" in parity.message and "2 PNG formats" in parity.message


def test_names_leaking_source_or_truth_fail(tmp_path):
    rng = np.random.default_rng(2)
    labels = _labels(10)
    items = _store(tmp_path, [texture(rng, (96, 96)) for _ in labels], labels)
    assert run_audit(items).check("names").status == "pass"
    leaky = [replace(it, served_name=f"case_{i:05d}_scan.png") for i, it in enumerate(items)]
    names = run_audit(leaky).check("names")
    assert names.status == "fail" and "case_00000_scan.png" in names.message
    truthy = [replace(it, served_name=f"{it.truth}_{i}.png") for i, it in enumerate(items)]
    problems = run_audit(truthy).check("names").details["problems"]
    assert sum("contains ['real']" in m for m in problems) == 5
    assert sum("contains ['synth']" in m for m in problems) == 5


def test_identical_files_across_cases_fail_unless_declared_duplicates(tmp_path):
    rng = np.random.default_rng(3)
    img = texture(rng, (96, 96))
    a, b = _store(tmp_path, [img, img], ["real", "synthetic"])
    assert run_audit([a, b]).check("identical_files").status == "fail"
    copy = replace(b, truth="real", duplicate_of=a.public_id)
    assert run_audit([a, copy]).check("identical_files").status == "pass"


def test_too_few_cases_skip_the_classifier(tmp_path):
    rng = np.random.default_rng(4)
    report = run_audit(_store(tmp_path, [texture(rng, (96, 96)) for _ in range(6)], _labels(6)))
    assert report.check("classifier").status == "skip" and report.passed
    assert "SKIP classifier" in report.summary()


@pytest.fixture(scope="module")
def ct_blocks(shared_data: Path) -> tuple[list[np.ndarray], list[str]]:
    """Four 8-slice blocks per real CT, labelled two real / two synthetic within each patient.

    Labels balanced within patients make a clean null: with labels drawn across the
    pooled blocks, the classifier could learn the patient and the chance link between
    patient and label (14 patients only).
    """
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(6)
    blocks, labels = [], []
    for patient in sorted((shared_data / "ct" / "ibsi_sts").glob("STS_*")):
        hu = np.asarray(nib.load(patient / "CT_image.nii.gz").dataobj).transpose(2, 1, 0)  # (z, y, x)
        blocks += [hu[z0:z0 + 8, :128, :128] for z0 in range(0, 48, 12)]
        labels += list(rng.permutation(["real", "real", "synthetic", "synthetic"]))
    return blocks, labels


@pytest.mark.parametrize("with_renderer", [True, False])
def test_ct_volumes_pass_and_fail_on_added_noise(ct_blocks, tmp_path, with_renderer):
    from core.windowing import apply_window  # the app's windowing, as it would pass it

    def renderer(volume):
        return [apply_window(volume[k], low=-160, high=240) for k in (1, 4, 6)]

    blocks, labels = ct_blocks
    kw = {"seed": 0, "renderer": renderer if with_renderer else None}
    clean = run_audit(_store(tmp_path / "clean", blocks, labels, kind="volume"), **kw)
    assert clean.passed, clean.summary()
    rng = np.random.default_rng(7)
    noisy = [b if lab == "real" else b + rng.normal(0, 40, b.shape) for b, lab in zip(blocks, labels)]
    report = run_audit(_store(tmp_path / "noisy", noisy, labels, kind="volume"), **kw)
    assert report.check("classifier").status == "fail", report.summary()
    assert report.check("format_parity").status == "pass"


def test_audit_study_runs_on_a_stored_study(tmp_path):
    engine = make_engine(tmp_path / "s.sqlite")
    init_db(engine)
    rng = np.random.default_rng(8)
    cases = [CaseInput(array=texture(rng, (80, 80), noise=0 if i % 2 == 0 else 10),
                       truth="synthetic" if i % 2 else "real", kind="image2d") for i in range(40)]
    cases.append(CaseInput(array=texture(rng, (80, 80), noise=80), truth="synthetic", kind="image2d",
                           catch=True))
    with Session(engine) as session:
        study = crud.create_study(session=session, name="leaky", cases=cases,
                                  design=StudyDesign(seed=1, n_duplicates=2, duplicate_min_gap=3),
                                  owner_password=PASSWORD, media_dir=tmp_path / "media", spec=SPEC)
        report = audit_study(session=session, study_id=study.id, media_dir=tmp_path / "media")
    assert report.check("names").status == "pass" and report.check("identical_files").status == "pass"
    assert report.check("classifier").status == "fail" and report.check("classifier").details["n"] == 40


def test_auc_and_cross_validation_on_known_signal():
    y = np.array([0] * 50 + [1] * 50)
    assert auc_delong(np.arange(100.0), y)[0] == 1.0
    assert auc_delong(np.zeros(100), y)[0] == 0.5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    x[:, 0] += 1.5 * y  # d' = 1.5: AUC = Phi(1.5 / sqrt 2) = 0.86
    auc, se, _ = cross_validated_auc(x, y, seed=0)
    assert 0.75 < auc < 0.95 and 0.02 < se < 0.08
    null_auc, _, _ = cross_validated_auc(rng.normal(size=(100, 3)), y, seed=0)
    assert 0.3 < null_auc < 0.7
