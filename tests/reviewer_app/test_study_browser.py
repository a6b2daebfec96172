"""Reader studies in Chromium: a reader's whole study with a closed page, the owner's view, and
everything the reader's browser receives checked for truth, provenance and format leaks."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

from reviewer_app.study_backend import StudyServing
from reviewer_app.tabs.study import build_study_app
from studies import crud
from studies.design import StudyDesign
from studies.simulate import simulate
from studies.stimuli import load_image, png_chunks, png_header
from tests.reviewer_app.study_support import (
    GENERATOR,
    IMG,
    MASK_PREFIX,
    PASSWORD,
    add_reader,
    create_study,
    ct_crops,
    open_link,
    rate,
    shown_src,
    wait_case,
    write_ct_manifest,
    write_he_manifest,
)

pytestmark = pytest.mark.browser

@pytest.fixture
def he_study(shared_data, tmp_path):
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=6, n_training=1)
    backend, study_id = create_study(tmp_path / "vtt.sqlite", manifest, instructions="Rate each tile.",
                                     design=StudyDesign(seed=4, n_position_blocks=2, n_duplicates=1,
                                                        duplicate_min_gap=2))
    return backend, study_id, tmp_path / "vtt.sqlite"


def test_reader_closes_midway_resumes_and_the_owner_sees_the_ratings(he_study, serve, browser, page):
    backend, study_id, db = he_study
    token = add_reader(backend, study_id, "Dr A")
    url = serve(build_study_app(StudyServing(db=str(db))))
    total = 8  # 1 training + 6 main + 1 hidden repeat

    assert open_link(page, url, token) == f"Start ({total} cases)"
    assert "Rate each tile." in page.locator("#sdx-instructions").inner_text()
    page.click("#sdx-start")
    wait_case(page, 1, total)
    rate(page, "synthetic", training=True)
    for k in (2, 3):
        wait_case(page, k, total)
        rate(page, "real")
    wait_case(page, 4, total)  # the third answer was acknowledged: the next case is on screen
    page.close()

    second = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    errors: list[str] = []
    second.on("pageerror", lambda exc: errors.append(str(exc)))
    assert open_link(second, url, token) == f"Continue with case 4 of {total}"
    second.click("#sdx-start")
    wait_case(second, 4, total)
    with backend.session() as session:
        reader = crud.reader_by_token(session=session, token=token)
        expected = crud.next_case_for_reader(session=session, reader_id=reader.id)
    served = np.asarray(Image.open(io.BytesIO(second.request.get(shown_src(second)).body())).convert("RGB"))
    np.testing.assert_array_equal(served, load_image(backend.media_dir / f"{expected.public_id}.png"))
    for k in range(4, total + 1):
        wait_case(second, k, total)
        rate(second, "synthetic")
    second.locator("#sdx-notice").filter(has_text="You have answered every case").wait_for(timeout=30000)

    with backend.session() as session:
        rows = crud.export_rows(session=session, study_id=study_id)
        simulate(session=session, study_id=study_id, readers=3, accuracy=0.8, seed=1)
    assert [r["position"] for r in rows] == list(range(total))
    assert [r["call"] for r in rows] == ["synthetic", "real", "real"] + ["synthetic"] * 5
    assert all(r["confidence"] == 2 and r["likert"] == 3 for r in rows)

    owner = second.context.new_page()
    owner.goto(f"{url}/owner")
    owner.fill("#sdx-o-name input, #sdx-o-name textarea", "vtt")
    owner.fill("#sdx-o-password input", "wrong password")
    owner.click("#sdx-o-open")
    owner.locator("#sdx-o-status").filter(has_text="Wrong study name or password").wait_for(timeout=30000)
    owner.fill("#sdx-o-password input", PASSWORD)
    owner.click("#sdx-o-open")
    owner.locator("#sdx-o-progress").filter(has_text="Dr A").wait_for(timeout=30000)
    table = owner.locator("#sdx-o-progress").inner_text()
    assert re.search(rf"Dr A\s+{total}\s+{total}\s+yes", table), table
    owner.get_by_role("tab", name="Analysis").click()
    owner.click("#sdx-o-analyse")
    owner.locator("#sdx-o-plot-accuracy .js-plotly-plot").wait_for(timeout=90000)
    assert "4 readers" in owner.locator("#sdx-o-analysis").inner_text()
    owner.get_by_role("tab", name="Readers").click()
    owner.fill("#sdx-o-reader-name input, #sdx-o-reader-name textarea", "Dr B")
    owner.click("#sdx-o-add")
    owner.wait_for_function("() => { const t = document.querySelector('#sdx-o-link textarea, #sdx-o-link input');"
                            " return t && t.value.includes('#token='); }", timeout=30000)
    link = owner.locator("#sdx-o-link textarea, #sdx-o-link input").first.input_value()
    assert link.startswith(f"{url}/study#token=")
    with backend.session() as session:
        assert crud.reader_by_token(session=session, token=link.split("#token=")[1]).display_name == "Dr B"
    assert page.js_errors == [] and errors == []


def _record(page) -> tuple[list, dict]:
    """Every response, and the full bodies of the event streams.

    Chromium hands streamed bodies to ``response.body()`` only sometimes, so the event
    streams are fetched through a route and handed to the page whole (each stream closes
    when its events are done, so the app works unchanged).
    """
    responses, streams = [], {}

    def through(route):
        fetched = route.fetch()
        body = fetched.body()
        streams.setdefault(route.request.url, []).append(body)
        route.fulfill(response=fetched, body=body)

    page.route("**/gradio_api/queue/data*", through)
    page.on("response", lambda r: responses.append(r))
    return responses, streams


@pytest.mark.parametrize("kind", ["image2d", "volume"])
def test_nothing_the_reader_receives_reveals_truth_or_provenance(kind, shared_data, tmp_path, serve, page):
    if kind == "image2d":
        manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=6)
    else:
        manifest = write_ct_manifest(tmp_path / "data", ct_crops(shared_data, 6))
    # Instructions without the class words, so any "real" or "synthetic" in an event would be a leak.
    backend, study_id = create_study(tmp_path / "s.sqlite", manifest, instructions="Rate each image.",
                                     design=StudyDesign(seed=5, n_position_blocks=1, n_duplicates=1,
                                                        duplicate_min_gap=2))
    token = add_reader(backend, study_id)
    url = serve(build_study_app(StudyServing(db=str(tmp_path / "s.sqlite"))))
    responses, streams = _record(page)
    open_link(page, url, token)
    page.click("#sdx-start")
    srcs = []
    for k in range(1, 8):
        wait_case(page, k, 7)
        if kind == "volume":  # scroll and switch windows: more served slices
            before = shown_src(page)
            page.keyboard.press("ArrowUp")
            page.wait_for_function("([s, old]) => document.querySelector(s).src !== old", arg=[IMG, before])
            page.keyboard.press("2")
            page.wait_for_function("() => document.querySelector('#sdx-r-preset input:checked')"
                                   " && document.querySelector('#sdx-r-preset input:checked').value === 'Lung'")
        srcs.append(shown_src(page))
        rate(page, "real" if k % 2 else "synthetic")
    page.locator("#sdx-notice").filter(has_text="You have answered every case").wait_for(timeout=30000)

    with backend.session() as session:
        cases = crud.list_cases(session=session, study_id=study_id)
        rows = crud.export_rows(session=session, study_id=study_id)
    secrets = {GENERATOR, MASK_PREFIX, "tiles/", "vol/", "genimage", "scanslide", "genvolume", "scanvolume"}
    secrets |= {c.public_id for c in cases} | {c.file_sha256 for c in cases}
    secrets |= {str(v) for c in cases for v in c.provenance.values() if isinstance(v, str) and len(str(v)) > 3}
    bodies, skipped = {}, []
    for r in responses:
        if "/heartbeat/" in r.url or "/queue/data" in r.url:  # keep-alive; streams are in `streams`
            continue
        try:
            bodies[r.url + " " + str(id(r))] = (r, r.body())
        except PlaywrightError:  # redirects and aborted requests have no body
            skipped.append(r.url)
    assert not [u for u in skipped if "view.png" in u or "/study" in u or "/queue/" in u], skipped
    events = [b.decode("utf-8") for chunks in streams.values() for b in chunks]
    for text in events:
        assert not [s for s in secrets if s in text], text[:500]
        # event outputs never name a class: answers go up in requests and never come back
        assert not re.search(r"real|synthetic|truth|fake", text, re.IGNORECASE), text[:500]
    # every event's outputs were seen: load, start, 7 submits (+ a scroll and a preset per CT case)
    n_events = 9 + (14 if kind == "volume" else 0)
    assert sum(text.count('"msg":"process_completed"') for text in events) == n_events
    kinds = {"png": 0, "html": 0, "js": 0, "json": 0}
    for r, body in bodies.values():
        ctype = r.headers.get("content-type", "")
        text = body.decode("latin-1")
        leaked = [s for s in secrets if s in text or s in r.url]
        assert not leaked, f"{r.url} ({ctype}) carries {leaked}"
        if "json" in ctype:
            kinds["json"] += 1
        elif ctype.startswith("image/png"):
            kinds["png"] += 1
        elif "html" in ctype:
            kinds["html"] += 1
        elif "javascript" in ctype:
            kinds["js"] += 1
    assert kinds["png"] >= 7 and kinds["html"] >= 1 and kinds["js"] >= 1 and kinds["json"] >= 7, kinds

    # the PNG of each case on screen, grouped by that case's truth: same format, same headers
    truth_at = {r["position"]: r["truth"] for r in rows}
    by_truth: dict[str, list] = {"real": [], "synthetic": []}
    for position, src in enumerate(srcs):
        matches = [v for k, v in bodies.items() if k.startswith(src + " ")]
        assert matches and src.endswith("/view.png"), f"no response recorded for {src}"
        by_truth[truth_at[position]].append(matches[0])
    assert by_truth["real"] and by_truth["synthetic"]
    varying = ("date", "etag", "last-modified", "content-length")  # per file, never per class

    def signature(r, body) -> tuple:
        return (tuple(sorted(k for k in r.headers if k not in varying)), r.headers["content-type"],
                tuple(sorted(png_header(body).items())), tuple(dict.fromkeys(t for t, _ in png_chunks(body))))

    signatures = {truth: {signature(r, b) for r, b in items} for truth, items in by_truth.items()}
    assert len(signatures["real"]) == 1 and signatures["real"] == signatures["synthetic"], signatures
    assert len(set(srcs)) == len(srcs)  # the hidden repeat is served under its own URL
