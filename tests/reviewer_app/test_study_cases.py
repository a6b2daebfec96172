"""Manifests -> cases: real files decoded onto the study grid, and bad manifests refused by line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from reviewer_app.study_cases import load_manifest, read_manifest
from studies.stimuli import StimulusSpec
from tests.reviewer_app.study_support import GENERATOR, ct_crops, write_ct_manifest, write_he_manifest

SPEC = StimulusSpec(image_size=(48, 48), volume_shape=(8, 40, 40))


def test_he_manifest_decodes_roles_strata_and_provenance(shared_data, tmp_path):
    manifest = write_he_manifest(tmp_path, shared_data, n_main=6, n_training=2)
    cases = load_manifest(manifest, SPEC)
    assert len(cases) == 8
    assert all(c.kind == "image2d" and c.array.shape == (48, 48, 3) and c.array.dtype == np.uint8 for c in cases)
    assert [c.training for c in cases] == [False] * 6 + [True] * 2
    assert {c.strata["site"] for c in cases} == {"dermis", "epidermis"}
    synthetic = [c for c in cases if c.truth == "synthetic"]
    assert synthetic and all(c.provenance["generator"] == GENERATOR for c in synthetic)
    # the file name is kept as provenance (so the audit can look for it in served names)
    assert all(c.provenance["source_file"].startswith("tiles/") for c in cases)
    # pixels are the tile resized onto the grid, not something else
    first = np.asarray(Image.open(tmp_path / cases[0].provenance["source_file"]).convert("RGB").resize(
        (48, 48), Image.Resampling.LANCZOS))
    assert np.abs(cases[0].array.astype(int) - first.astype(int)).mean() < 1.0


def test_ct_manifest_gives_int16_hu_volumes(shared_data, tmp_path):
    manifest = write_ct_manifest(tmp_path, ct_crops(shared_data, 4))
    cases = load_manifest(manifest, SPEC)
    assert all(c.kind == "volume" and c.array.shape == (8, 40, 40) and c.array.dtype == np.int16 for c in cases)
    assert all(c.strata == {"organ": "limb"} for c in cases)
    assert min(int(c.array.min()) for c in cases) < -500  # air/fat in HU, not rescaled


def test_dicom_series_folder_is_a_volume(shared_data, tmp_path):
    dicom = shared_data / "ct" / "totalseg" / "example_ct_dicom"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,truth\n{dicom.name},real\n")
    (tmp_path / dicom.name).symlink_to(dicom)
    (case,) = load_manifest(manifest, StimulusSpec(volume_shape=(16, 64, 64)))
    assert case.kind == "volume" and case.array.shape == (16, 64, 64)


@pytest.mark.parametrize("body, message", [
    ("path,label\na.png,real\n", "header lacks truth"),
    ("path,truth\na.png,Real\n", "m.csv:2: truth must be 'real' or 'synthetic', got 'Real'"),
    ("path,truth,role\na.png,real,test\n", "m.csv:2: role must be one of main, training, catch"),
    ("path,truth,organn\na.png,real,liver\n", "unknown manifest column 'organn'"),
    ("path,truth\n../outside.png,real\n", "leaves the manifest's folder"),
    ("path,truth\n/etc/passwd,real\n", "is absolute"),
    ("path,truth\na.png,real\na.png,synthetic\n", "m.csv:3: a.png is listed twice (also on line 2)"),
    ("path,truth\na.png,real\nv.nii,synthetic\n", "line 2 is a 2D image and line 3 a volume"),
    ("path,truth\nnotes.txt,real\n", "m.csv:2: notes.txt: unknown file type"),
    ("path,truth\n", "no cases below the header"),
    ("path,truth\na.png,real,extra\n", "m.csv:2: 3 fields, the header has 2"),
])
def test_bad_manifests_name_the_line_and_the_problem(tmp_path, body, message):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "v.nii", "notes.txt", "../outside.png"):
        (tmp_path / "sub" / name).write_bytes(b"x")
    manifest = tmp_path / "sub" / "m.csv"
    manifest.write_text(body)
    with pytest.raises(InputError, match=None) as err:
        read_manifest(manifest)
    assert message in str(err.value)


def test_missing_file_and_undecodable_file(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,truth\nnope.png,real\n")
    with pytest.raises(FileNotFoundError, match="m.csv:2: nope.png not found"):
        read_manifest(manifest)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    manifest.write_text("path,truth\nbroken.png,synthetic\n")
    with pytest.raises(InputError, match=r"m.csv:2: broken.png: "):
        load_manifest(manifest, SPEC)


def test_uploaded_manifest_resolves_paths_under_the_given_root(shared_data, tmp_path):
    root = tmp_path / "files"
    write_he_manifest(root, shared_data, n_main=2)
    upload = tmp_path / "upload" / "cases.csv"  # the owner page keeps uploads elsewhere
    upload.parent.mkdir()
    upload.write_text((root / "cases.csv").read_text())
    assert len(load_manifest(upload, SPEC, root=root, name="cases.csv")) == 2
    with pytest.raises(FileNotFoundError):
        read_manifest(upload)  # relative to its own folder the files do not exist
