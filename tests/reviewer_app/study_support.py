"""Builders for the reader-study tests: manifests of real files and stored studies on SQLite.

2D cases are tissue tiles cut from the real H&E region in ``../shared/data/histo``; volumes
are crops of a real CT from ``../shared/data/ct/ibsi_sts`` written as small NIfTI files.
Truth labels are drawn at random over real images, so an honest audit cannot find them
(the "indistinguishable" set); ``leaky=True`` makes the synthetic ones noisier or smoother.
File names and provenance carry distinctive tokens (``PROVENANCE_MARKERS``) that tests look
for in everything a browser receives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PASSWORD = "owner-secret-1"
GENERATOR = "ddpmhistogen7"  # provenance values nobody else would write
MASK_PREFIX = "maskhash"


def he_tiles(shared_data: Path, n: int, size: int = 64) -> list[np.ndarray]:
    """``n`` tissue tiles (mostly non-background) of the real H&E region, in a fixed order."""
    with Image.open(shared_data / "histo" / "cmu-1-small-region.png") as img:
        rgb = np.asarray(img.convert("RGB"))  # (2967, 2220, 3)
    tiles = [rgb[y:y + size, x:x + size] for y in range(0, rgb.shape[0] - size, size)
             for x in range(0, rgb.shape[1] - size, size)]
    tissue = [t for t in tiles if (t.mean(axis=2) < 200).mean() > 0.5]
    if len(tissue) < n:
        raise ValueError(f"only {len(tissue)} tissue tiles of {size} px, asked for {n}")
    return tissue[:n]


def labels(n: int, seed: int) -> list[str]:
    """Balanced random truth labels."""
    return list(np.random.default_rng(seed).permutation(["real", "synthetic"] * (n // 2) + ["real"] * (n % 2)))


def write_he_manifest(folder: Path, shared_data: Path, *, n_main: int = 20, n_training: int = 0,
                      leaky: bool = False, seed: int = 0, name: str = "cases.csv") -> Path:
    """PNG tiles + a manifest with roles, a stratum and provenance columns; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    tiles = he_tiles(shared_data, n_main + n_training)
    truths = labels(n_main, seed) + labels(n_training, seed + 1)
    rng = np.random.default_rng(seed)
    lines = ["path,truth,role,stratum_site,generator,model_version,mask_hash"]
    for i, (tile, truth) in enumerate(zip(tiles, truths)):
        if leaky and truth == "synthetic":
            tile = np.clip(tile + rng.normal(0, 12, tile.shape), 0, 255).astype(np.uint8)
        rel = f"tiles/{'genimage' if truth == 'synthetic' else 'scanslide'}_{i:03d}.png"
        (folder / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(tile).save(folder / rel)
        role = "training" if i >= n_main else "main"
        prov = f"{GENERATOR},unetv{i:03d}zq,{MASK_PREFIX}{i:04d}" if truth == "synthetic" else ",,"
        lines.append(f"{rel},{truth},{role},{('dermis', 'epidermis')[i % 2]},{prov}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ct_crops(shared_data: Path, n: int, shape: tuple[int, int, int] = (10, 56, 56)) -> list[np.ndarray]:
    """``n`` HU crops of two real soft-tissue sarcoma CTs, on a grid of non-overlapping boxes."""
    import nibabel as nib

    crops = []
    for case in ("STS_002", "STS_003"):
        hu = np.asarray(nib.load(shared_data / "ct" / "ibsi_sts" / case / "CT_image.nii.gz").dataobj,
                        dtype=np.float32).transpose(2, 1, 0)  # (z, y, x)
        z, y, x = shape
        for k in range(0, hu.shape[0] - z + 1, z):
            for j in range(0, hu.shape[1] - y + 1, y):
                for i in range(0, hu.shape[2] - x + 1, x):
                    crops.append(hu[k:k + z, j:j + y, i:i + x])
    if len(crops) < n:
        raise ValueError(f"only {len(crops)} crops, asked for {n}")
    return crops[:n]


def write_ct_manifest(folder: Path, crops: list[np.ndarray], *, leaky: bool = False, seed: int = 0) -> Path:
    """Uncompressed NIfTI volumes (1 mm voxels) + a manifest; synthetic ones smoothed when ``leaky``."""
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    folder.mkdir(parents=True, exist_ok=True)
    truths = labels(len(crops), seed)
    lines = ["path,truth,organ,generator,seed"]
    for i, (hu, truth) in enumerate(zip(crops, truths)):
        if leaky and truth == "synthetic":
            hu = gaussian_filter(hu, sigma=(0, 1.5, 1.5))
        rel = f"vol/{'genvolume' if truth == 'synthetic' else 'scanvolume'}_{i:03d}.nii"
        (folder / rel).parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), np.eye(4)), folder / rel)
        lines.append(f"{rel},{truth},limb,{GENERATOR if truth == 'synthetic' else ''},{i if truth == 'synthetic' else ''}")
    path = folder / "volumes.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def create_study(db: Path, manifest: Path, *, name: str = "vtt", **options):
    """Store a study with study_ops (as the CLI does); returns ``(backend, study_id)``."""
    from reviewer_app.study_backend import open_backend
    from reviewer_app.study_ops import StudyOptions, create_from_manifest
    from studies.design import StudyDesign
    from studies.stimuli import StimulusSpec

    design = options.pop("design", StudyDesign(seed=3, n_position_blocks=2))
    spec = StimulusSpec(image_size=(64, 64), volume_shape=(8, 48, 48))
    backend = open_backend(db, create=True)
    with backend.session() as session:
        study = create_from_manifest(session, backend, manifest=manifest, name=name, password=PASSWORD,
                                     options=StudyOptions(design=design, spec=spec, **options))
        return backend, study.id


def add_reader(backend, study_id: int, name: str = "Dr A") -> str:
    """Add a reader; returns the link token."""
    from studies import crud

    with backend.session() as session:
        return crud.add_reader(session=session, study_id=study_id, display_name=name, role="pathologist",
                               years_experience=6)[1]


# ----------------------------------------------------------------------------- browser steps
IMG = "#sdx-stimulus img[src*='view.png']"


def shown_src(page) -> str:
    return page.locator(IMG).get_attribute("src")


def wait_case(page, number: int, total: int) -> None:
    """Wait until case ``number`` (1-based) is on screen with its image."""
    page.wait_for_function("([n, t]) => { const p = document.querySelector('#sdx-progress');"
                           " return p && p.innerText.includes(`Case ${n} of ${t}`); }", arg=[number, total],
                           timeout=30000)
    page.wait_for_selector(IMG, timeout=30000)


def rate(page, call: str, *, training: bool = False) -> None:
    """Answer with the keyboard: R/S, Shift+2 confidence, C = realism 3, Enter."""
    page.keyboard.press("r" if call == "real" else "s")
    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("c")
    page.keyboard.press("Enter")
    if training:
        page.locator("#sdx-feedback").wait_for(state="visible", timeout=30000)
        page.keyboard.press("n")


def open_link(page, url: str, token: str) -> str:
    page.goto(f"{url}/study#token={token}")
    page.wait_for_selector("#sdx-start", state="visible", timeout=60000)
    return page.locator("#sdx-start").inner_text()
