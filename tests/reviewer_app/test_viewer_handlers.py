"""Viewer handlers on a small real NIfTI: navigation, windows, clicks, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.catalog import CatalogEntry
from core.errors import InputError
from core.render import render_view
from reviewer_app import viewer_handlers as h
from reviewer_app.services import Services
from reviewer_app.state import ViewerState


@pytest.fixture
def services(tmp_path: Path) -> Services:
    ct = np.full((40, 30, 12), -1000, np.int16)  # NIfTI order (x, y, z): 40 x 30 x 12
    ct[5:35, 5:25, :] = 40
    ct[10:14, 10:14, 6] = 300
    seg = np.zeros(ct.shape, np.uint8)
    seg[10:14, 10:14, 6] = 1
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(seg, affine), str(tmp_path / "seg.nii.gz"))
    entry = CatalogEntry("ct", "test CT", "volume", str(tmp_path / "ct.nii.gz"), labels=str(tmp_path / "seg.nii.gz"))
    return Services(catalog=[entry], work_dir=tmp_path)


def test_open_starts_on_the_segmentation(services: Services) -> None:
    state, out = h.open_image(services, ViewerState(), "ct")
    assert state.index["axial"] == 6  # the labelled slice
    assert out["sliders_max"] == {"axial": 11, "coronal": 29, "sagittal": 39}
    assert out["axial"].shape == (30, 40, 3)  # overlay on: RGB
    assert out["coronal"].shape == (12 * 3 / 0.8, 40, 3)  # 3 mm slices shown 3.75x taller
    assert "seg" in out["legend"]


def test_keyboard_steps_and_bounds(services: Services) -> None:
    state, _ = h.open_image(services, ViewerState(), "ct")
    state, out = h.step(services, state, "up")
    assert state.index["axial"] == 7 and out["axial_slider"] == 7 and set(out) >= {"axial", "position"}
    assert "coronal" not in out  # only the scrolled view is re-rendered
    state, _ = h.step(services, state, "pageup")
    assert state.index["axial"] == 11  # clamped at the last slice
    state, _ = h.step(services, state, "home")
    assert state.index["axial"] == 0
    reverse = ViewerState(**{**state.__dict__, "up_is_cranial": False})
    reverse, _ = h.step(services, reverse, "down")
    assert reverse.index["axial"] == 1


def test_preset_changes_the_image_as_the_window_says(services: Services) -> None:
    state, _ = h.open_image(services, ViewerState(overlay=False), "ct")
    state, soft = h.set_preset(services, state, "Soft tissue")
    state, bone = h.set_preset(services, state, "Bone")
    assert (bone["width"], bone["level"]) == (2500, 480)
    vol = services.open("ct").volume
    expected = render_view(vol.array, plane="axial", index=6, low=480 - 1250, high=480 + 1250, spacing=vol.spacing)
    np.testing.assert_array_equal(bone["axial"], expected)
    assert soft["axial"][15, 20] == 128 and bone["axial"][15, 20] < soft["axial"][15, 20]  # 40 HU


def test_click_reads_hu_and_moves_other_views(services: Services) -> None:
    state, _ = h.open_image(services, ViewerState(), "ct")
    # file (i, j) = (10..13, 10..13) with an RAS affine lands at x = 39 - i, y = 29 - j in (z, y, x) LPS
    state, out = h.click(services, state, "axial", 27, 17)  # col 27, row 17: inside the 300 HU block
    assert "**300 HU**" in out["pixel"] and "label: seg" in out["pixel"]
    assert state.index == {"axial": 6, "coronal": 17, "sagittal": 27}
    assert set(out) >= {"coronal", "sagittal"} and "axial" not in out


def test_bad_input_gives_input_errors(services: Services, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pick an image"):
        h.step(services, ViewerState(), "up")
    with pytest.raises(InputError, match="unknown image"):
        h.open_image(services, ViewerState(), "nope")
    (tmp_path / "broken.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(InputError, match="broken.nii.gz"):
        h.open_upload(services, ViewerState(), str(tmp_path / "broken.nii.gz"))
    state, _ = h.open_image(services, ViewerState(), "ct")
    with pytest.raises(InputError, match="width must be > 0"):
        h.set_window(services, state, 0, 40)


def test_labels_can_be_hidden(services: Services) -> None:
    state, _ = h.open_image(services, ViewerState(), "ct")
    state, out = h.set_labels_shown(services, state, [])
    assert state.hidden == ("seg",) and out["axial"].ndim == 3
    assert np.ptp(out["axial"], axis=2).max() == 0  # grey everywhere: nothing drawn
    assert "seg" not in out["legend"]


def test_slide_opens_with_overview_and_zooms_at_level_0(shared_data: Path, tmp_path: Path) -> None:
    from core.io.slide import open_slide

    svs = shared_data / "histo" / "cmu-1-small-region.svs"
    services = Services(catalog=[CatalogEntry("svs", "cmu", "slide", str(svs))], work_dir=tmp_path)
    state, out = h.open_image(services, ViewerState(), "svs")
    assert state.kind == "slide" and out["slide_panel"] == {"visible": True}  # an Update (a dict)
    thumb = out["thumb"]
    assert max(thumb.shape[:2]) == h.SLIDE_VIEW and thumb.shape[2] == 3
    assert out["slide_levels"]["value"].startswith("0: 2220 x 2967")
    # click the centre of the overview: a 256 px level-0 region around the slide's centre
    state, zoom = h.slide_zoom(services, state, out["slide_levels"]["value"], 256,
                               thumb.shape[1] / 2, thumb.shape[0] / 2)
    with open_slide(svs) as slide:
        expected = slide.read_region(level=0, x=1110 - 128, y=1483 - 128, width=256, height=256)
    assert zoom["zoom"].shape == (256, 256, 3)
    assert np.abs(zoom["zoom"].astype(int) - expected.astype(int)).mean() < 1.0  # same place, +-1 px rounding
    with pytest.raises(InputError, match="slide"):
        h.step(services, state, "up")
