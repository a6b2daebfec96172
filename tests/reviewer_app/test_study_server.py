"""The study server as a process: SIGKILL mid-study loses no acknowledged rating, and no
reader or owner event can be called through the Gradio API clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reviewer_app.study_backend import StudyServing
from reviewer_app.tabs.study import build_study_app
from studies import crud
from studies.db import integrity_check
from tests.reviewer_app.study_support import (
    add_reader,
    create_study,
    open_link,
    rate,
    wait_case,
    write_he_manifest,
)

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(db: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = (tmp / f"server-{port}.log").open("w")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "reviewer_app.cli", "study", "serve", "--db", str(db),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {(tmp / f'server-{port}.log').read_text()}")
        try:
            if httpx.get(f"{url}/study", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("server did not come up in 120 s")


@pytest.mark.browser
@pytest.mark.slow  # two cold server processes: about a minute on two shared cores
def test_sigkill_mid_study_keeps_every_acknowledged_rating(shared_data, tmp_path, browser):
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=8)
    db = tmp_path / "vtt.sqlite"
    backend, study_id = create_study(db, manifest)
    token = add_reader(backend, study_id)
    proc, url = _start(db, tmp_path)
    try:
        page = browser.new_context().new_page()
        open_link(page, url, token)
        page.click("#sdx-start")
        calls = ["real", "synthetic", "synthetic"]
        for k, call in enumerate(calls, start=1):
            wait_case(page, k, 8)
            rate(page, call)
        wait_case(page, 4, 8)  # the UI acknowledged the third answer by showing case 4
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    page.context.close()

    assert integrity_check(backend.engine) == ["ok"]
    with backend.session() as session:
        rows = crud.export_rows(session=session, study_id=study_id)
    assert [(r["position"], r["call"]) for r in rows] == list(enumerate(calls))

    proc, url = _start(db, tmp_path)
    try:
        page = browser.new_context().new_page()
        assert open_link(page, url, token) == "Continue with case 4 of 8"
        page.click("#sdx-start")
        wait_case(page, 4, 8)
        rate(page, "real")
        wait_case(page, 5, 8)
        page.context.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with backend.session() as session:
        rows = crud.export_rows(session=session, study_id=study_id)
    assert [(r["position"], r["call"]) for r in rows] == list(enumerate([*calls, "real"]))


def test_no_study_event_is_callable_through_the_api_clients(shared_data, tmp_path, serve):
    from gradio_client import Client

    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=4)
    backend, study_id = create_study(tmp_path / "s.sqlite", manifest)
    token = add_reader(backend, study_id)
    url = serve(build_study_app(StudyServing(db=str(tmp_path / "s.sqlite"))))
    config = httpx.get(f"{url}/config").json()
    fn_ids = [d["id"] for d in config["dependencies"]]
    assert len(fn_ids) > 20 and all(d["api_visibility"] == "private" for d in config["dependencies"])
    info = httpx.get(f"{url}/gradio_api/info").json()
    assert info["named_endpoints"] == {} and info["unnamed_endpoints"] == {}
    client = Client(url, verbose=False)
    assert client.view_api(return_format="dict") == {"named_endpoints": {}, "unnamed_endpoints": {}}
    for fn_index in fn_ids:
        with pytest.raises(ValueError, match="Invalid function index"):
            client.predict(token, fn_index=fn_index)
    with pytest.raises(ValueError):
        client.predict(token, api_name="/open_link")
    with backend.session() as session:
        assert crud.reader_progress(session=session, study_id=study_id)[0].answered == 0
        assert all(ev.action != "show" for ev in crud.audit_events(session=session, study_id=study_id))
