"""Tiled H&E slides: seams, patch FID/KID, cost per pixel, memory and time at two sizes.

Measured in one run with one model (``--model``, default the shipped ``assets/models/he-tiles``):

* ``seams``: ``core.metrics.seams.seam_ratio`` (gradient across tile boundaries / inside tiles)
  of a ``--seam-size`` image generated with our fused tiling (tile 256, overlap 64) and, same
  model, layout and seed, with naive non-overlapping tiles (overlap 0). Each image is scored
  at its own window edges and both at the naive 256 px grid, and (``ratio_phase_matched``) at
  its own edges against interior pairs at latent-cell edges only (``period`` = the
  autoencoder's factor). Goal: ours within 5 % of 1.0; naive shows the seams. Scored on the
  uint8 images before any JPEG.
* ``patch_fid_kid``: for each training slide, the tissue layout of its held-out region (never
  trained on) is generated at the region's size in that slide's stain style; 128 px patches
  at the same grid positions (>= 50 % tissue in the real layout) are compared with the real
  held-out patches (``core.metrics.he_features.HETextureExtractor``, FID and KID). References
  in the same run: real training-region patches vs the held-out ones (the floor for this
  sample size), and the naive-tiling generation.
* ``scaling``: fresh processes generate ``--sizes`` (default 1024 and 4096 square, example
  layout, streamed into an OME-TIFF) and report wall time, time per megapixel, peak resident
  memory (``ru_maxrss``) and its growth over the loaded model, network evaluations and
  evaluations per output pixel relative to naive tiling. Goals: <= 1.8x evaluations at the
  default overlap; peak memory equal within 10 %; time per megapixel constant (linear).

Writes ``bench/results/slides.json`` (git-ignored) and prints it; ``--update-card`` also
stores the figures in the model card (``metrics.bench``)::

    python bench/slides.py --threads 1                       # about 1.5 h on a shared 2-core CPU
    python bench/slides.py --sizes 512 1024 --parts scaling  # quick look
    python bench/slides.py --parts scaling --steps 5 --update-card   # cost and memory only: same per step
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PATCH = 128
PARTS = ("seams", "fid", "scaling")


def _pipe(model: str, threads: int):
    import torch

    from core.pipelines.histo_tiled import HistoTiledPipeline

    if threads:
        torch.set_num_threads(threads)
    return HistoTiledPipeline.from_pretrained(model)


def seams(pipe, size: int, steps: int, seed: int) -> dict:
    from core.metrics.seams import seam_ratio, tile_boundaries
    from core.tissue import example_layout

    layout = example_layout((size // 32, size // 32), seed=seed)
    result = {"size": size, "steps": steps, "seed": seed, "layout": "core.tissue.example_layout"}
    grid = tile_boundaries(size, 256, 0)
    for name, overlap in (("ours", 64), ("naive", 0)):
        out = pipe(layout, height=size, width=size, tile_size=256, overlap=overlap, num_inference_steps=steps, seed=seed)
        own = tile_boundaries(size, 256, overlap)
        s_own, s_grid = seam_ratio(out.image, own, own), seam_ratio(out.image, grid, grid)
        s_phase = seam_ratio(out.image, own, own, period=pipe.factor)  # interior at latent-cell edges only
        result[name] = {"overlap_px": overlap, "ratio_phase_matched": round(s_phase.ratio, 4),
                        "ratio_at_own_window_edges": round(s_own.ratio, 4),
                        "ratio_at_256px_grid": round(s_grid.ratio, 4), "boundary": round(s_own.boundary, 3),
                        "interior": round(s_own.interior, 3), "time_s": out.provenance["time_s"]["total"]}  # fmt: skip
    result["goal"] = "ours within 5 % of 1.0; naive above"
    result["note"] = (f"ratio_phase_matched compares window edges with interior pairs at latent-cell edges "
                      f"(period {pipe.factor} px, core.metrics.seams): the decoder's own cell texture alone "
                      "lifts the every-pair ratios above 1")
    return result


def _patches(rgb: np.ndarray, layout: np.ndarray, cell: int = 32) -> np.ndarray:
    """128 px patches on a 128 px grid with >= 50 % tissue in ``layout``."""
    out = []
    k = PATCH // cell
    for y in range(0, rgb.shape[0] - PATCH + 1, PATCH):
        for x in range(0, rgb.shape[1] - PATCH + 1, PATCH):
            if (layout[y // cell : y // cell + k, x // cell : x // cell + k] > 0).mean() >= 0.5:
                out.append(rgb[y : y + PATCH, x : x + PATCH])
    return np.stack(out)


def patch_fid_kid(pipe, data_dir: Path, steps: int, seed: int) -> dict:
    from core.metrics import compare_features
    from core.metrics.he_features import HETextureExtractor
    from core.tissue import tissue_layout
    from core.training.train_autoencoder import load_slides

    ex = HETextureExtractor()
    real_h, real_t, ours, naive, per_slide = [], [], [], [], {}
    for ls in load_slides(data_dir):
        x, y, w, h = ls.slide.holdout
        w, h = w // 32 * 32, h // 32 * 32
        real = ls.rgb[y : y + h, x : x + w]
        layout = tissue_layout(real, reference=ls.reference)
        tx, ty, tw, th = ls.slide.train
        train_rgb = ls.rgb[ty : ty + th // 32 * 32, tx : tx + tw // 32 * 32]
        train_p = _patches(train_rgb, tissue_layout(train_rgb, reference=ls.reference))
        held = _patches(real, layout)
        gens = {}
        for name, overlap in (("ours", 64), ("naive", 0)):
            out = pipe(layout, height=h, width=w, tile_size=256, overlap=overlap, num_inference_steps=steps,
                       seed=seed, style=ls.slide.name)
            gens[name] = _patches(out.image, layout)
        real_h.append(held)
        real_t.append(train_p[np.random.default_rng(seed).choice(len(train_p), min(len(train_p), 2 * len(held)), replace=False)])
        ours.append(gens["ours"])
        naive.append(gens["naive"])
        per_slide[ls.slide.name] = {"holdout_xywh": [x, y, w, h], "patches": len(held)}
    feats = {k: ex.extract(np.concatenate(v)) for k, v in
             (("held", real_h), ("train", real_t), ("ours", ours), ("naive", naive))}

    def score(a, b):
        s = compare_features(feats[a], feats[b], kid_subsets=100, kid_subset_size=min(len(feats[a]), len(feats[b]), 100))
        return {"fid": round(s.fid, 3), "kid_mean": round(s.kid_mean, 5), "kid_std": round(s.kid_std, 5),
                "n_real": s.n_real, "n_fake": s.n_fake}

    return {"extractor": ex.name, "patch_px": PATCH, "steps": steps, "seed": seed, "slides": per_slide,
            "ours_vs_heldout": score("held", "ours"), "naive_vs_heldout": score("held", "naive"),
            "real_train_vs_heldout": score("held", "train")}  # fmt: skip


def child(model: str, size: int, steps: int, threads: int, out_dir: str) -> dict:
    """One generation in this (fresh) process; peak RSS is the process's."""
    from core.tissue import example_layout

    pipe = _pipe(model, threads)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.time(), time.process_time()
    out = pipe(example_layout((size // 32, size // 32), seed=0), height=size, width=size, tile_size=256, overlap=64,
               num_inference_steps=steps, seed=0, output_dir=out_dir)
    wall, cpu = time.time() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = out.provenance["counts"]
    return {"size": size, "megapixels": size * size / 1e6, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "wall_s_per_megapixel": round(wall / (size * size / 1e6), 2), "cpu_s_per_megapixel": round(cpu / (size * size / 1e6), 2),
            "denoise_s": out.provenance["time_s"]["denoise"], "peak_rss_mb": round(peak, 1), "rss_after_load_mb": round(loaded, 1),
            "peak_rss_growth_during_generation_mb": round(peak - loaded, 1),
            "evaluations": c["evaluations"], "windows_per_step": c["windows_per_step"],
            "evaluations_per_pixel_vs_naive": c["evaluations_per_pixel_vs_naive"], "levels": out.provenance["output"]["levels"]}  # fmt: skip


def scaling(model: str, sizes: list[int], steps: int, threads: int, work: Path) -> dict:
    runs = []
    for size in sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--model", model, "--steps", str(steps),
               "--threads", str(threads), "--work", str(work / f"slide_{size}")]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    a, b = runs[0], runs[-1]
    return {"steps": steps, "runs": runs, "peak_rss_ratio_largest_vs_smallest": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
            "wall_s_per_megapixel_ratio": round(b["wall_s_per_megapixel"] / a["wall_s_per_megapixel"], 3),
            "cpu_s_per_megapixel_ratio": round(b["cpu_s_per_megapixel"] / a["cpu_s_per_megapixel"], 3),
            "goals": "evaluations/pixel vs naive <= 1.8; peak memory ratio <= 1.1; time per megapixel ratio about 1"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REPO / "assets/models/he-tiles"))
    p.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seam-size", type=int, default=1024)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default: all)")
    p.add_argument("--work", default=str(REPO / "bench/results/slides_work"))
    p.add_argument("--out", default=str(REPO / "bench/results/slides.json"))
    p.add_argument("--update-card", action="store_true", help="store the figures in the model card (metrics.bench)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.model, a.child, a.steps, a.threads, a.work)))
        return 0
    from core.training.export import machine

    t0 = time.time()
    pipe = _pipe(a.model, a.threads)
    result = {"model": a.model, "machine": machine(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "threads": a.threads}
    if "seams" in a.parts:
        result["seams"] = seams(pipe, a.seam_size, a.steps, a.seed)
        print(json.dumps(result["seams"]), flush=True)
    if "fid" in a.parts:
        result["patch_fid_kid"] = patch_fid_kid(pipe, Path(a.data_dir), a.steps, a.seed)
        print(json.dumps(result["patch_fid_kid"]), flush=True)
    if "scaling" in a.parts:
        result["scaling"] = scaling(a.model, a.sizes, a.steps, a.threads, Path(a.work))
    result["bench_wall_s"] = round(time.time() - t0, 1)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if a.update_card:
        card_path = Path(a.model) / "model_card.json"
        card = json.loads(card_path.read_text())
        bench = card.setdefault("metrics", {}).setdefault("bench", {})  # parts not measured now are kept
        bench.update({k: v for k, v in result.items() if k != "model"})
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
