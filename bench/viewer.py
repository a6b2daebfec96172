"""Viewer benchmark: server-side slice rendering and the slice-change round trip.

    python bench/viewer.py [--repeats 200] [--requests 60]

Writes ``bench/results/viewer.json`` with, all measured in this run on the demo phantom
(512 x 512 axial slices):

* render: ``core.render.render_view`` of a windowed slice (and with the organ overlay,
  and with the PNG encoding the app does) vs the bare numpy clip + scale of the same
  slice (goal: at most 2x);
* round trip: a slice change through the running app (``/slice_axial``: render, PNG,
  response, image download) vs a no-op event of the same app (``/set_active``, which
  only updates the session state), both via gradio_client on loopback (goal: at most 2x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timeit(fn, repeats: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _summary(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
            "n": len(ms)}


def bench_render(volume, palette, repeats: int) -> dict:
    from core.render import render_view
    from reviewer_app.components import encode_png

    k = volume.shape[0] // 2
    a = volume.array
    low, high = -160.0, 240.0
    scale = np.float32(255.0 / (high - low))

    def bare():
        return ((np.clip(a[k], low, high) - low) * scale).astype(np.uint8)

    def ours():
        return render_view(a, plane="axial", index=k, low=low, high=high, spacing=volume.spacing)

    def ours_overlay():
        return render_view(a, plane="axial", index=k, low=low, high=high, spacing=volume.spacing,
                           labels=volume.labels.array, palette=palette, opacity=0.35)

    base = _summary(_timeit(bare, repeats))
    res = {"slice_shape": list(a[k].shape), "numpy_clip_scale": base}
    for name, fn in (("render_view", ours), ("render_view_overlay", ours_overlay),
                     ("render_view_plus_png", lambda: encode_png(ours())),
                     ("render_view_overlay_plus_png", lambda: encode_png(ours_overlay()))):
        res[name] = _summary(_timeit(fn, repeats))
        res[f"{name}_ratio_to_numpy"] = round(res[name]["median_ms"] / base["median_ms"], 3)
    return res


def bench_round_trip(services, requests: int) -> dict:
    from gradio_client import Client

    from reviewer_app.app import build_app, launch

    demo = build_app(services)
    _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        key = services.catalog[0].key
        client.predict(key, api_name="/open_image")
        n = services.open(key).volume.shape[0]
        counter = iter(range(10**9))

        def slice_change():
            client.predict(next(counter) % n, api_name="/slice_axial")

        def noop():
            client.predict("axial", api_name="/set_active")

        # interleave so that both see the same machine load
        slice_t, noop_t = [], []
        for _ in range(requests):
            slice_t += _timeit(slice_change, 1)
            noop_t += _timeit(noop, 1)
        res = {"slice_change": _summary(slice_t), "noop_event": _summary(noop_t)}
        res["ratio_median"] = round(res["slice_change"]["median_ms"] / res["noop_event"]["median_ms"], 3)
        return res
    finally:
        demo.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="render repetitions")
    parser.add_argument("--requests", type=int, default=60, help="round trips per event")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "viewer.json"))
    args = parser.parse_args()

    import os

    from reviewer_app.services import build_services

    tmp = tempfile.mkdtemp(prefix="bench-viewer-")
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tmp, "gradio"))
    services = build_services(demo=True, data_dir=None, db=None, work_dir=Path(tmp))
    opened = services.open(services.catalog[0].key)
    result = {
        "render": bench_render(opened.volume, opened.palette, args.repeats),
        "round_trip": bench_round_trip(services, args.requests),
        "goals": {"render_ratio_max": 2.0, "round_trip_ratio_max": 2.0},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
