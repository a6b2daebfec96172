"""End to end in Chromium: open the demo, scroll, switch a preset, check the pixels shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.render import TISSUE_CLASSES
from core.windowing import PRESETS
from reviewer_app.app import build_app
from reviewer_app.services import build_services
from reviewer_app.state import ViewerState
from reviewer_app.viewer_handlers import render

pytestmark = pytest.mark.browser

AXIAL_IMG = "#sdx-view-axial img"


def _shown(page, selector: str) -> tuple[str, np.ndarray]:
    """URL and decoded pixels of the image the browser displays."""
    src = page.locator(selector).get_attribute("src")
    body = page.request.get(src).body()
    return src, np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _wait_new_src(page, old: str) -> None:
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i && i.src && i.src !== old; }",
        arg=[AXIAL_IMG, old],
        timeout=15000,
    )


def _slider_value(page, plane: str) -> int:
    return int(page.locator(f"#sdx-slider-{plane} input[type=number]").input_value())


def _expected(services, key: str, index: int, preset: str) -> np.ndarray:
    """The server-side render of the demo's axial slice, organs overlaid, tissue classes hidden."""
    opened = services.open(key)
    width, level = PRESETS[preset]
    hidden = tuple(n for n in opened.label_names.values() if n in TISSUE_CLASSES)
    assert {"liver", "lesion"} <= set(opened.label_names.values()) and hidden
    state = ViewerState(key=key, index={"axial": index, "coronal": 0, "sagittal": 0}, width=width, level=level,
                        hidden=hidden)
    img = render(services, state, "axial")
    return img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    """One demo server for the module: the phantom is generated once."""
    import os

    tmp = tmp_path_factory.mktemp("viewer")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    from reviewer_app.app import launch

    services = build_services(demo=True, data_dir=None, db=None, work_dir=tmp)
    demo = build_app(services)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    yield services, url.rstrip("/")
    demo.close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


def test_demo_scroll_and_preset_show_the_right_pixels(demo_app, page) -> None:
    services, url = demo_app
    key = services.catalog[0].key
    page.goto(url)
    page.wait_for_selector(AXIAL_IMG, timeout=60000)
    start = _slider_value(page, "axial")
    src0, img0 = _shown(page, AXIAL_IMG)
    np.testing.assert_array_equal(img0, _expected(services, key, start, "Soft tissue"))

    # Up arrow: one slice towards the head, re-rendered by the server
    page.locator("#sdx-position").click()
    page.keyboard.press("ArrowUp")
    _wait_new_src(page, src0)
    assert _slider_value(page, "axial") == start + 1
    src1, img1 = _shown(page, AXIAL_IMG)
    np.testing.assert_array_equal(img1, _expected(services, key, start + 1, "Soft tissue"))

    # PageDown: ten slices towards the feet
    page.keyboard.press("PageDown")
    _wait_new_src(page, src1)
    assert _slider_value(page, "axial") == start - 9
    src2, _ = _shown(page, AXIAL_IMG)

    # key 2 = Lung preset: the W/L sliders follow and the image is the lung-window render
    page.keyboard.press("2")
    _wait_new_src(page, src2)
    src3, img3 = _shown(page, AXIAL_IMG)
    np.testing.assert_array_equal(img3, _expected(services, key, start - 9, "Lung"))
    assert float(page.locator("#sdx-width input[type=number]").input_value()) == 1500
    assert float(page.locator("#sdx-level input[type=number]").input_value()) == -600

    # mouse wheel over the axial view scrolls it
    page.locator(AXIAL_IMG).hover()
    page.mouse.wheel(0, -120)
    _wait_new_src(page, src3)
    assert _slider_value(page, "axial") == start - 8
    assert page.js_errors == []



def test_bad_upload_shows_an_error_and_the_viewer_keeps_working(demo_app, page, tmp_path) -> None:
    _, url = demo_app
    page.goto(url)
    page.wait_for_selector(AXIAL_IMG, timeout=60000)
    start = _slider_value(page, "axial")
    broken = tmp_path / "scan.nii.gz"
    broken.write_bytes(b"\x1f\x8b this is not a NIfTI file")
    page.locator("input[type=file]").first.set_input_files(str(broken))
    toast = page.locator(".toast-body").filter(has_text="not a readable NIfTI file")
    toast.first.wait_for(timeout=30000)
    assert "scan.nii.gz" in toast.first.inner_text()
    # the app is still up and the demo still scrolls
    src = page.locator(AXIAL_IMG).get_attribute("src")
    page.locator("#sdx-position").click()
    page.keyboard.press("ArrowDown")
    _wait_new_src(page, src)
    assert _slider_value(page, "axial") == start - 1
