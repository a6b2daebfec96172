"""The Slides tab through gradio_client: a drawing becomes a layout, Generate writes a slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from reviewer_app.app import build_app
from reviewer_app.services import Services
from tests.reviewer_app.test_slides import models  # noqa: F401 - the tiny model fixture


def test_draw_then_generate(serve, models, tmp_path: Path) -> None:  # noqa: F811
    from gradio_client import Client, handle_file

    services = Services(catalog=[], work_dir=tmp_path / "work", model_dirs=[models])
    client = Client(serve(build_app(services)), verbose=False)
    drawing = np.full((512, 512, 4), 255, np.uint8)
    drawing[:256, :, :3] = (236, 120, 160)  # top half eosinophilic, bottom half glass
    Image.fromarray(drawing).save(tmp_path / "c.png")
    value = {"background": handle_file(str(tmp_path / "c.png")), "layers": [],
             "composite": handle_file(str(tmp_path / "c.png"))}
    outputs = client.predict(value, api_name="/slide_layout_from_drawing")
    assert any("eosinophilic 50%" in str(o) and "background 50%" in str(o) for o in outputs)
    [model] = services.slide_models()
    outputs = client.predict(model, 128, 128, 128, 32, 5, 3, "cmu-1", api_name="/generate_slide")
    files = [f for o in outputs if isinstance(o, list) for f in o]
    names = {Path(f["path"] if isinstance(f, dict) else f).name for f in files}
    assert {"slide.ome.tif", "provenance.json"} <= names
    assert len(list((tmp_path / "work" / "slides").glob("*/slide.ome.tif"))) == 1
