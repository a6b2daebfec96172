"""Speed of CT inpainting: overhead over the bare UNet, and the cost of a large slice.

Measured in one run, on one machine (median of ``--repeats`` timings each):

* ``overhead``: wall time of one ``CTInpaintPipeline`` request divided by (UNet evaluations
  x time of one bare UNet forward at the same batch size and resolution). Goal: <= 1.2.
* ``large_vs_small``: wall time of a request for the same lesion-sized mask on a 512 x 512
  slice vs a 128 x 128 image. Goal: about 1 (only the crop around the mask is sampled).

Writes ``bench/results/inpaint_speed.json`` (git-ignored) and prints it::

    python bench/inpaint_speed.py                       # the demo model, 25 DPM-Solver++ steps
    python bench/inpaint_speed.py --samples 4 --sampler ddim --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_slice(size: int, seed: int = 0) -> np.ndarray:
    """A body-like slice (soft tissue in air, CT-like noise) of ``size`` x ``size`` pixels, HU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    body = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.46) ** 2 < 1
    return np.where(body, 45.0, -1000.0).astype(np.float32) + rng.normal(0, 12, (size, size)).astype(
        np.float32
    )


def lesion_mask(size: int, radius: float = 12.0) -> np.ndarray:
    """A round lesion of ``radius`` px near the centre of a ``size`` x ``size`` slice."""
    yy, xx = np.mgrid[:size, :size]
    return (yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 <= radius**2


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy imports, scheduler tables
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(model: Path, *, steps: int, sampler: str, samples: int, repeats: int, threads: int) -> dict:
    import torch

    from core.pipelines.ct_inpaint import CTInpaintPipeline

    torch.set_num_threads(threads)
    pipe = CTInpaintPipeline.from_pretrained(model)
    r, unet = pipe.resolution, pipe.unets[0]
    evals = pipe.unet_evaluations(steps, sampler)

    # 1. One bare UNet forward at the request's batch size and resolution
    x = torch.randn(samples, 3, r, r)
    t = torch.full((samples,), 500, dtype=torch.long)
    labels = torch.ones(samples, dtype=torch.long) if pipe.content_classes else None

    def forward() -> None:
        with torch.no_grad():
            unet(x, t, class_labels=labels)

    # 2. Whole requests: a lesion on a 128 x 128 image and on a 512 x 512 slice
    requests = {size: (synthetic_slice(size), lesion_mask(size)) for size in (128, 512)}

    def request(size: int):
        img, mask = requests[size]
        return lambda: pipe(
            img, mask, num_inference_steps=steps, sampler=sampler, seed=0, num_samples=samples
        )

    # Interleave the three measurements so a busy machine slows them alike.
    rounds = {"forward": [], 128: [], 512: []}
    for _ in range(repeats):
        rounds["forward"].append(median_time(forward, 5))
        for size in (128, 512):
            rounds[size].append(median_time(request(size), 1))
    t_fwd, t_small, t_large = (statistics.median(rounds[k]) for k in ("forward", 128, 512))
    crop = pipe(*requests[512], num_inference_steps=1, sampler="ddim").crop_box.size
    return {
        "model": str(model),
        "resolution": r,
        "sampler": sampler,
        "steps": steps,
        "samples": samples,
        "unet_evaluations": evals,
        "unet_forward_s": round(t_fwd, 5),
        "request_128_s": round(t_small, 4),
        "request_512_s": round(t_large, 4),
        "crop_size_on_512_px": crop,
        "overhead": round(t_small / (evals * t_fwd), 3),
        "overhead_512": round(t_large / (evals * t_fwd), 3),
        "large_vs_small": round(t_large / t_small, 3),
        "goals": {"overhead": "<= 1.2", "large_vs_small": "about 1"},
        "repeats": repeats,
        "threads": threads,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        type=Path,
        default=REPO / "assets" / "models" / "ct-inpaint",
        help="model folder (default: the demo model)",
    )
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="dpmsolver++", choices=("dpmsolver++", "ddim", "repaint"))
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on a shared machine)"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inpaint_speed.json")
    args = p.parse_args(argv)
    result = run(
        args.model,
        steps=args.steps,
        sampler=args.sampler,
        samples=args.samples,
        repeats=args.repeats,
        threads=args.threads,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
