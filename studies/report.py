"""Plotly figures and a self-contained HTML report of a reader-study summary.

``build_figures`` returns the figures one by one (the owner page shows them with
``gr.Plot``); ``write_report`` writes ``summary.json`` and ``report.html``. The HTML
embeds plotly.js once (no CDN: the review machines are offline).

    summary = analyze(ratings)
    write_report(summary=summary, ratings=ratings, out_dir="results/study1")
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from studies.analysis.roc import roc_curve
from studies.ratings import LIKERT_LEVELS, Ratings

TITLES = {
    "accuracy": "Per-reader accuracy (exact 95% CI)",
    "auc": "Reader-averaged AUC (ORH, random readers and cases)",
    "roc": "ROC curves per reader (from confidence scores)",
    "likert": "Realism Likert ratings: real vs synthetic",
    "learning": "Accuracy over trials (learning the tell?)",
}


def _pct(level: float) -> str:
    return f"{100 * level:g}%"


def _errors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # Asymmetric error bars from (value, ci_low, ci_high) dicts; None (undefined) -> 0 length.
    v = np.array([r["value"] if r["value"] is not None else np.nan for r in rows], float)
    lo = np.array([r["ci_low"] if r["ci_low"] is not None else np.nan for r in rows], float)
    hi = np.array([r["ci_high"] if r["ci_high"] is not None else np.nan for r in rows], float)
    return {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - v).tolist(),
            "arrayminus": np.nan_to_num(v - lo).tolist()}


def _chance_band(fig: go.Figure, margin: float) -> None:
    fig.add_hrect(y0=0.5 - margin, y1=0.5 + margin, fillcolor="seagreen", opacity=0.12, line_width=0)
    fig.add_hline(y=0.5, line_dash="dash", line_color="gray")


def _accuracy_figure(summary: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    level = summary["settings"]["level"]
    for m, sec in summary["binary"]["per_modality"].items():
        names = list(sec["per_reader"]) + ["pooled"]
        rows = [sec["per_reader"][r]["accuracy"] for r in sec["per_reader"]] + [sec["pooled"]["accuracy"]]
        fig.add_trace(go.Scatter(x=names, y=[r["value"] for r in rows], mode="markers", name=f"modality {m}",
                                 error_y=_errors(rows), marker={"size": 10}, offsetgroup=m))
    _chance_band(fig, summary["settings"]["tost_margin"])
    # scattermode "group" sets the modalities side by side instead of on top of each other.
    fig.update_layout(title=TITLES["accuracy"].replace("95%", _pct(level)), xaxis_title="reader",
                      yaxis_title="accuracy", yaxis_range=[0, 1], scattermode="group")
    return fig


def _auc_figure(summary: dict[str, Any]) -> go.Figure:
    orh = summary["orh"]
    fig = go.Figure()
    test = orh["rrrc"] or orh["frrc"]
    mods = [e["modality"] for e in test["modalities"]]
    for j, reader in enumerate(orh["readers"]):
        fig.add_trace(go.Scatter(x=mods, y=[orh["auc"][i][j] for i in range(len(mods))], mode="markers",
                                 name=f"reader {reader}", marker={"size": 7, "opacity": 0.6}))
    rows = [{"value": e["auc"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]} for e in test["modalities"]]
    fig.add_trace(go.Scatter(x=mods, y=[r["value"] for r in rows], mode="markers",
                             name=f"mean ({test['analysis']})", error_y=_errors(rows),
                             marker={"size": 14, "symbol": "diamond", "color": "black"}))
    _chance_band(fig, summary["settings"]["tost_margin"])
    fig.update_layout(title=TITLES["auc"], xaxis_title="modality", yaxis_title="AUC", yaxis_range=[0, 1])
    return fig


def _roc_figure(ratings: Ratings) -> go.Figure:
    fig = go.Figure()
    for m in ratings.modalities():
        for r in ratings.readers():
            sel = (ratings.modality == m) & (ratings.reader == r)
            t = ratings.truth[sel]
            if not 0 < t.sum() < t.size:
                continue
            fpr, tpr, _ = roc_curve(truth=t, score=ratings.score[sel])
            name = f"{r}" if len(ratings.modalities()) == 1 else f"{r} ({m})"
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines+markers", name=name, line_shape="linear"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dash", "color": "gray"}))
    fig.update_layout(title=TITLES["roc"], xaxis_title="false-positive rate (real called synthetic)",
                      yaxis_title="true-positive rate (synthetic called synthetic)",
                      xaxis_range=[0, 1], yaxis_range=[0, 1])
    return fig


def _likert_figure(summary: dict[str, Any]) -> go.Figure:
    pooled = summary["likert"]["pooled"]
    fig = go.Figure()
    for label, key, n in (("real", "counts_real", pooled["n_real"]),
                          ("synthetic", "counts_synthetic", pooled["n_synthetic"])):
        counts = [pooled[key][str(lv)] for lv in LIKERT_LEVELS]
        fig.add_trace(go.Bar(x=list(LIKERT_LEVELS), y=[c / n if n else 0 for c in counts],
                             name=f"{label} (n={n})", text=counts, textposition="outside"))
    ps = pooled["prob_superiority"]
    sub = f"P(synthetic rated more realistic) = {ps:.2f}" if ps is not None else ""
    fig.update_layout(title={"text": f"{TITLES['likert']}<br><sub>{sub}</sub>"}, barmode="group",
                      xaxis_title="realism (1 = clearly artificial, 5 = fully realistic)",
                      yaxis_title="fraction of ratings")
    return fig


def _learning_figure(summary: dict[str, Any]) -> go.Figure:
    le = summary["learning"]
    fig = go.Figure()

    def centres(blocks: list[dict[str, Any]]) -> list[float]:
        return [(b["first_trial"] + b["last_trial"]) / 2 for b in blocks]

    for r, blocks in le["blocks_per_reader"].items():
        fig.add_trace(go.Scatter(x=centres(blocks), y=[b["accuracy"]["value"] for b in blocks],
                                 mode="lines", name=f"reader {r}", opacity=0.45))
    rows = [b["accuracy"] for b in le["blocks"]]
    fig.add_trace(go.Scatter(x=centres(le["blocks"]), y=[r["value"] for r in rows], mode="lines+markers",
                             name="all readers", error_y=_errors(rows), line={"color": "black", "width": 3}))
    _chance_band(fig, summary["settings"]["tost_margin"])
    pooled = le["pooled"]
    sub = (f"trend {pooled['slope_per_100_trials']:+.3f} per 100 trials, p = {pooled['p']:.3g}"
           if pooled["p"] is not None else "")
    fig.update_layout(title={"text": f"{TITLES['learning']}<br><sub>{sub}</sub>"},
                      xaxis_title="trial (position in the reader's sequence)", yaxis_title="accuracy",
                      yaxis_range=[0, 1])
    return fig


_NONE = {"value": None, "ci_low": None, "ci_high": None}


def _stratum_figure(name: str, levels: dict[str, Any], modalities: list[str], margin: float) -> go.Figure:
    fig = go.Figure()
    names = [v if v else "(none)" for v in levels]
    acc = [e["binary"]["accuracy"] if e["binary"] else _NONE for e in levels.values()]
    if any(a["value"] is not None for a in acc):
        fig.add_trace(go.Scatter(x=names, y=[a["value"] for a in acc], mode="markers", name="accuracy",
                                 error_y=_errors(acc), marker={"size": 10}, offsetgroup="accuracy"))
    for m in modalities:
        auc = []
        for e in levels.values():
            test = None if "error" in e["orh"] else (e["orh"]["rrrc"] or e["orh"]["frrc"])
            est = next((x for x in test["modalities"] if x["modality"] == m), None) if test else None
            auc.append({"value": est["auc"], "ci_low": est["ci_low"], "ci_high": est["ci_high"]} if est
                       else _NONE)
        if any(a["value"] is not None for a in auc):
            label = "reader-averaged AUC" + (f" ({m})" if len(modalities) > 1 else "")
            fig.add_trace(go.Scatter(x=names, y=[a["value"] for a in auc], mode="markers", name=label,
                                     error_y=_errors(auc), marker={"size": 10, "symbol": "diamond"},
                                     offsetgroup=f"auc {m}"))
    _chance_band(fig, margin)
    fig.update_layout(title=f"Results by {name}", xaxis_title=name, yaxis_title="accuracy / AUC",
                      yaxis_range=[0, 1], scattermode="group")
    return fig


def build_figures(*, summary: dict[str, Any], ratings: Ratings) -> dict[str, go.Figure]:
    """The report's figures, each on its own (only those the study supports).

    Args:
        summary: output of :func:`studies.analysis.summary.analyze`.
        ratings: the ratings it was computed from (for the ROC curves).

    Returns:
        Ordered ``{key: Figure}`` with keys among ``accuracy, auc, roc, likert, learning`` and
        ``stratum:<name>`` for each strata column.
    """
    for key in ("settings", "binary", "orh", "likert", "learning", "strata"):
        if key not in summary:
            raise ValueError(f"summary lacks {key!r}; pass the output of studies.analysis.summary.analyze")
    figs: dict[str, go.Figure] = {}
    if summary["binary"]:
        figs["accuracy"] = _accuracy_figure(summary)
    if "error" not in summary["orh"]:
        figs["auc"] = _auc_figure(summary)
    figs["roc"] = _roc_figure(ratings.main_analysis())
    if summary["likert"]:
        figs["likert"] = _likert_figure(summary)
    if summary["learning"]:
        figs["learning"] = _learning_figure(summary)
    for name, levels in (summary["strata"] or {}).items():
        figs[f"stratum:{name}"] = _stratum_figure(name, levels, summary["modalities"],
                                                  summary["settings"]["tost_margin"])
    return figs


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else html.escape(str(x))


def _key_numbers(summary: dict[str, Any]) -> str:
    rows = [("readers", summary["counts"]["readers"]), ("cases (real / synthetic)",
            f"{summary['counts']['real_cases']} / {summary['counts']['synthetic_cases']}"),
            ("ratings in the main analysis", summary["counts"]["ratings"])]
    if summary["binary"]:
        p = summary["binary"]["pooled"]
        acc = p["accuracy"]
        rows += [("pooled accuracy", f"{_fmt(acc['value'])} ({_fmt(acc['ci_low'])}-{_fmt(acc['ci_high'])})"),
                 ("fooled (synthetic called real)", _fmt(p["fooled"]["value"])),
                 (f"accuracy equivalent to chance (TOST, margin {p['tost']['margin']})",
                  f"{p['tost']['equivalent']} (p = {_fmt(p['tost']['p'], 4)})")]
    if "error" not in summary["orh"]:
        test = summary["orh"]["rrrc"] or summary["orh"]["frrc"]
        for e in test["modalities"]:
            rows.append((f"AUC modality {e['modality']} ({test['analysis']})",
                         f"{_fmt(e['auc'])} ({_fmt(e['ci_low'])}-{_fmt(e['ci_high'])}); "
                         f"equivalent to chance: {e['tost_vs_chance']['equivalent']}"))
        for d in test["differences"]:
            rows.append((f"AUC {d['modality_a']} - {d['modality_b']}",
                         f"{_fmt(d['estimate'])} ({_fmt(d['ci_low'])}-{_fmt(d['ci_high'])}), "
                         f"p = {_fmt(d['p'], 4)}"))
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def write_report(*, summary: dict[str, Any], ratings: Ratings, out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json`` and a self-contained ``report.html`` (plotly.js embedded once).

    Args:
        summary: output of :func:`studies.analysis.summary.analyze`.
        ratings: the ratings it was computed from.
        out_dir: folder to write into (created if missing).

    Returns:
        ``{"summary": path, "report": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = build_figures(summary=summary, ratings=ratings)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_height="480px")
             for i, fig in enumerate(figs.values())]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Reader study report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "th{text-align:left;padding-right:1em}</style></head><body>"
        "<h1>Reader study report</h1>" + _key_numbers(summary)
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "".join(f"<div class='figure'>{p}</div>" for p in parts)
        + "<p>Full numbers: summary.json</p></body></html>"
    )
    report_path = out / "report.html"
    report_path.write_text(page, encoding="utf-8")
    return {"summary": summary_path, "report": report_path}
