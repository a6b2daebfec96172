"""Reader-study load benchmark: N readers rating at once against the running study server.

    python bench/study_load.py [--readers 20] [--seconds 30] [--baseline-seconds 15] [--think-seconds 0]

Builds a 2D study of real H&E tiles (``../shared/data/histo``, or ``SYNTHDX_SHARED_DATA``) in
a temporary SQLite file, starts ``synthdx study serve`` as its own process on loopback, and
drives it the way the reader page does. The reader events are private (no API, not callable
through gradio_client), so this speaks Gradio's HTTP/SSE protocol directly: ``POST
/gradio_api/queue/join`` with the event's ``fn_index`` and a session hash, then the event
stream ``GET /gradio_api/queue/data``; after each answer it downloads the next case's PNG as
a browser would.

Measured in one run, on the same server: one reader alone (baseline), then ``--readers``
readers at once for ``--seconds``. Per submitted answer: the event's round trip (join ->
``process_completed``, which the server sends after the rating is committed and the next case
rendered) and the case round trip (plus the PNG download). Reported: p50/p95 of both, their
ratio to the baseline, errors, throughput, and ratings lost: answers the server acknowledged
(``success`` and the next case on screen) that are not rows of the database afterwards (must be 0).
With the default ``--think-seconds 0`` every reader answers the moment a case appears (a
closed-loop stress test: latency then measures queueing for the server's CPU); people take
seconds per case, which ``--think-seconds`` models. Writes ``bench/results/study_load.json``
and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_study(folder: Path, n_cases: int, readers: int) -> tuple[Path, list[str]]:
    """A 2D study of ``n_cases`` real 128-px H&E tiles, randomly labelled; returns (db, reader tokens)."""
    from PIL import Image

    from reviewer_app.study_backend import open_backend
    from reviewer_app.study_ops import StudyOptions, create_from_manifest
    from studies import crud
    from studies.design import StudyDesign
    from studies.stimuli import StimulusSpec

    shared = Path(os.environ.get("SYNTHDX_SHARED_DATA", ROOT.parent / "shared" / "data"))
    tiles = []
    for name in ("cmu-1-small-region.png", "tcga-cr-7395-01a-01-ts1.png"):
        with Image.open(shared / "histo" / name) as img:
            rgb = np.asarray(img.convert("RGB"))
        tiles += [rgb[y:y + 128, x:x + 128] for y in range(0, rgb.shape[0] - 128, 128)
                  for x in range(0, rgb.shape[1] - 128, 128)]
    tiles = [t for t in tiles if (t.mean(axis=2) < 200).mean() > 0.5][:n_cases]
    truths = np.random.default_rng(0).permutation(["real", "synthetic"] * (len(tiles) // 2))
    (folder / "tiles").mkdir(parents=True)
    lines = ["path,truth"]
    for i, (tile, truth) in enumerate(zip(tiles, truths)):
        Image.fromarray(tile).save(folder / "tiles" / f"{i:04d}.png")
        lines.append(f"tiles/{i:04d}.png,{truth}")
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    db = folder / "load.sqlite"
    backend = open_backend(db, create=True)
    with backend.session() as session:
        study = create_from_manifest(session, backend, manifest=folder / "cases.csv", name="load",
                                     password=secrets.token_hex(8),
                                     options=StudyOptions(design=StudyDesign(seed=1, n_position_blocks=4),
                                                          spec=StimulusSpec(image_size=(256, 256))))
        tokens = [crud.add_reader(session=session, study_id=study.id, display_name=f"load-{i:02d}", role="other",
                                  years_experience=1)[1] for i in range(readers + 1)]
    return db, tokens


def start_server(db: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"), "PYTHONPATH": str(ROOT)}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "reviewer_app.cli", "study", "serve", "--db", str(db),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/study", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


class Protocol:
    """The reader page's events, found in the served config by their buttons' elem_ids."""

    def __init__(self, config: dict) -> None:
        comps = {c["id"]: c for c in config["components"]}
        self.by_elem = {c["props"].get("elem_id"): c["id"] for c in comps.values() if c.get("props")}
        deps = config["dependencies"]
        root = config["page"]["study"]["layout"]["id"]

        def find(target: int, event: str) -> dict:
            return next(d for d in deps if [target, event] in [list(t) for t in d["targets"]]
                        and d["id"] in config["page"]["study"]["dependencies"])

        self.load = find(root, "load")
        self.start = find(self.by_elem["sdx-start"], "click")
        self.submit = find(self.by_elem["sdx-submit"], "click")
        self.position_id = next(c["id"] for c in comps.values() if c["type"] == "number"
                                and c["id"] in self.submit["inputs"])
        self.image_id = self.by_elem["sdx-stimulus"]


def _value(out):
    return out.get("value") if isinstance(out, dict) and out.get("__type__") == "update" else out


async def call(client, url: str, session: str, dep: dict, data: list) -> tuple[float, dict]:
    """One event: join the queue, read the event stream to completion; (seconds, outputs by id)."""
    t0 = time.perf_counter()
    r = await client.post(f"{url}/gradio_api/queue/join", json={
        "data": data, "event_data": None, "fn_index": dep["id"], "trigger_id": None, "session_hash": session})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    async with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                if not msg.get("success"):
                    raise RuntimeError(f"event failed: {json.dumps(msg.get('output'))[:300]}")
                outputs = dict(zip(dep["outputs"], msg["output"]["data"]))
                return time.perf_counter() - t0, outputs
    raise RuntimeError("event stream closed before the event completed")


async def reader(url: str, proto: Protocol, token: str, stop_at: float, record: dict, think: float) -> None:
    """Open the link, start, then answer case after case (``think`` seconds apart) until time is up."""
    session = secrets.token_hex(6)
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            await call(client, url, session, proto.load, [None, token])
            _, out = await call(client, url, session, proto.start, [None])
            position = _value(out[proto.position_id])
            while time.perf_counter() < stop_at and position is not None:
                data = [None, position, "synthetic" if position % 2 else "real", 2, 3, ""]
                t0 = time.perf_counter()
                seconds, out = await call(client, url, session, proto.submit, data)
                new = _value(out.get(proto.position_id))
                image = _value(out.get(proto.image_id))
                if isinstance(image, dict) and image.get("url"):
                    (await client.get(image["url"])).raise_for_status()
                record["event_s"].append(seconds)
                record["case_s"].append(time.perf_counter() - t0)
                record["acknowledged"].append((token, position))
                position = new if new is not None and new != position else None
                await asyncio.sleep(think)
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as err:  # counted, reported; the run goes on
            record["errors"].append(f"{type(err).__name__}: {err}"[:300])


def _stats(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1)}


async def phase(url: str, proto: Protocol, tokens: list[str], seconds: float, think: float) -> dict:
    record = {"event_s": [], "case_s": [], "acknowledged": [], "errors": []}
    t0 = time.perf_counter()
    await asyncio.gather(*(reader(url, proto, t, t0 + seconds, record, think) for t in tokens))
    record["wall_s"] = time.perf_counter() - t0
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=20, help="concurrent readers (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the concurrent phase")
    parser.add_argument("--baseline-seconds", type=float, default=15, help="length of the one-reader phase")
    parser.add_argument("--cases", type=int, default=400, help="cases per reader (enough not to run out)")
    parser.add_argument("--think-seconds", type=float, default=0.0,
                        help="pause between a case appearing and its answer (0: as fast as the server allows; "
                        "people take seconds per case)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "study_load.json"))
    args = parser.parse_args()

    from reviewer_app.study_backend import open_backend
    from studies import crud

    folder = Path(tempfile.mkdtemp(prefix="bench-study-load-"))
    db, tokens = build_study(folder, args.cases, args.readers)
    proc, url = start_server(db, folder)
    try:
        proto = Protocol(httpx.get(f"{url}/config", params={"page": "study"}).json())
        single = asyncio.run(phase(url, proto, tokens[:1], args.baseline_seconds, args.think_seconds))
        many = asyncio.run(phase(url, proto, tokens[1:], args.seconds, args.think_seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    backend = open_backend(db)
    with backend.session() as session:
        stored = {(r["reader"], r["position"]) for r in crud.export_rows(session=session, study_id=1)}
        names = {t: crud.reader_by_token(session=session, token=t).display_name for t in tokens}
    acknowledged = [(names[t], p) for t, p in single["acknowledged"] + many["acknowledged"]]
    lost = [a for a in acknowledged if a not in stored]
    res = {
        "driver": "Gradio HTTP/SSE protocol (queue/join + queue/data) against `synthdx study serve` in its own "
                  "process on loopback; reader events are private, so gradio_client cannot call them",
        "study": {"kind": "image2d", "cases_per_reader": args.cases, "image_px": 256},
        "think_seconds": args.think_seconds,
        "single_reader": {"event": _stats(single["event_s"]), "case_with_png": _stats(single["case_s"]),
                          "errors": single["errors"]},
        "concurrent": {"readers": args.readers, "seconds": round(many["wall_s"], 1),
                       "event": _stats(many["event_s"]), "case_with_png": _stats(many["case_s"]),
                       "ratings_per_s": round(len(many["acknowledged"]) / many["wall_s"], 1),
                       "errors": len(many["errors"]), "error_samples": many["errors"][:5]},
        "acknowledged": len(acknowledged), "in_database": len(stored), "ratings_lost": len(lost),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    for key in ("event", "case_with_png"):
        one, all_ = res["single_reader"][key], res["concurrent"][key]
        if one.get("n") and all_.get("n"):
            res["concurrent"][f"{key}_p50_ratio"] = round(all_["p50_ms"] / one["p50_ms"], 2)
            res["concurrent"][f"{key}_p95_ratio"] = round(all_["p95_ms"] / one["p95_ms"], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
