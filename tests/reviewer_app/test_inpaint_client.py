"""A painted mask sent as an ImageEditor value through gradio_client round-trips to the pixel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from core.catalog import CatalogEntry
from reviewer_app.app import build_app
from reviewer_app.services import Services


def test_painted_mask_round_trips_at_pixel_accuracy(serve, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    ct = np.full((96, 80, 4), -1000, np.int16)  # a non-square slice: rows 80, cols 96 after reorientation
    ct[10:86, 10:70, :] = 40
    nib.save(nib.Nifti1Image(ct, np.diag([-0.7, -0.7, 3.0, 1.0])), str(tmp_path / "ct.nii.gz"))
    services = Services(catalog=[CatalogEntry("ct", "CT", "volume", str(tmp_path / "ct.nii.gz"))], work_dir=tmp_path)
    client = Client(serve(build_app(services)), verbose=False)
    client.predict("ct", api_name="/open_image")
    client.predict(api_name="/take_slice")

    # an irregular painted region with antialiased (partial alpha) edges, as a brush leaves
    rng = np.random.default_rng(3)
    alpha = np.zeros((80, 96), np.uint8)
    alpha[20:50, 30:70] = 255
    alpha[rng.integers(0, 80, 200), rng.integers(0, 96, 200)] = rng.integers(1, 255, 200)
    layer = np.zeros((80, 96, 4), np.uint8)
    layer[..., 1], layer[..., 3] = 230, alpha
    background = np.full((80, 96, 4), 255, np.uint8)
    for name, arr in (("bg", background), ("layer", layer), ("composite", background)):
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
    value = {
        "background": handle_file(str(tmp_path / "bg.png")),
        "layers": [handle_file(str(tmp_path / "layer.png"))],
        "composite": handle_file(str(tmp_path / "composite.png")),
    }
    outputs = client.predict(value, api_name="/mask_from_editor")

    images = [np.asarray(Image.open(o)) for o in outputs if isinstance(o, str) and Path(o).is_file()]
    masks = [im for im in images if im.ndim == 2]  # the mask view is the one grey image
    assert len(masks) == 1
    np.testing.assert_array_equal(masks[0] > 0, alpha > 0)
    assert any(f"{int((alpha > 0).sum())} px" in str(o) for o in outputs)
