"""The run evaluation report: PNG plots and report.html, from the eval.json content.

Pure presentation: everything shown comes from the dict that
:func:`voicetrain.evaluation.evaluate_run.evaluate_run` also writes as eval.json,
so a report can be rebuilt from an eval.json alone (:func:`write_report`).
Figures are drawn with matplotlib's ``Figure`` (no pyplot: no global backend state).
"""

from __future__ import annotations

import html
import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from voicetrain.config import atomic_write_bytes, atomic_write_text

# ----------------------------------------------------------------------------- QC summary


def qc_summary(dataset_root: str | os.PathLike) -> dict[str, Any] | None:
    """The preparation QC in brief, from DATASET/qc.json: counts, quarantine reasons, warnings by code."""
    root = Path(dataset_root)
    path = root / "qc.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"{path}: unreadable ({e}); re-run `voicetrain prepare`"}
    utts = data.get("utterances") or []
    reasons = Counter(r for q in data.get("quarantine") or [] for r in q.get("reasons") or [])
    warnings = Counter(i.get("code") for u in utts if u.get("status") == "kept"
                       for i in u.get("issues") or [] if i.get("severity") != "error")
    kept = [u for u in utts if u.get("status") == "kept"]
    snr = [u["snr_db"] for u in kept if isinstance(u.get("snr_db"), (int, float))]
    return {
        "qc_json": str(path), "report_html": str(root / "report.html") if (root / "report.html").is_file() else None,
        "source": data.get("source"), "format": data.get("format"), "summary": data.get("summary") or {},
        "hours_kept": sum(u.get("duration") or 0.0 for u in kept) / 3600.0,
        "quarantine_reasons": dict(reasons.most_common()), "warnings": dict(warnings.most_common()),
        "corpus_warnings": list(data.get("corpus_warnings") or []),
        "median_snr_db": sorted(snr)[len(snr) // 2] if snr else None,
    }


# ----------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(path, buf.getvalue())


def style_panel(ax, title: str, xlabel: str, legend: bool) -> None:
    """Title, small labels, grid and (optionally) legend of one panel in a row of metric plots."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6)


def _tidy(ax) -> None:
    """Integer step ticks; no '+5.1' offset on near-constant linear axes (it hides the actual values)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def _plot_overfitting(overfit: dict[str, Any], path: Path) -> bool:
    from matplotlib.figure import Figure

    panels = [a for a in (overfit.get("loss"), overfit.get("mel")) if a and a["steps"]]
    if not panels:
        return False
    fig = Figure(figsize=(6.2 * len(panels), 3.6))
    for k, a in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        if a["train_points"]:
            s, v = zip(*a["train_points"])
            ax.plot(s, v, "-", color="#1f77b4", alpha=0.35, lw=1, label=f"train/{a['key']} (logged)")
        tv = [(s, t) for s, t in zip(a["steps"], a["train"]) if t is not None]
        if tv:
            s, v = zip(*tv)
            ax.plot(s, v, "s-", color="#1f77b4", ms=3, label=f"train/{a['key']} (mean per validation)")
        ax.plot(a["steps"], a["val"], "o-", color="#d62728", ms=4, label=f"val/{a['key']}")
        if a["min_val_step"] is not None:
            ax.axvline(a["min_val_step"], color="#2ca02c", ls="--", lw=1, label=f"min val (step {a['min_val_step']})")
        if a["gap_opens_step"] is not None:
            ax.axvline(a["gap_opens_step"], color="#ff7f0e", ls=":", lw=2, label=f"gap opens (step {a['gap_opens_step']})")
        vals = [x for x in a["val"] if x is not None] + [t for _, t in a["train_points"]]
        if vals and min(vals) > 0 and max(vals) / min(vals) > 20:  # log only where it spans decades
            ax.set_yscale("log")
        _tidy(ax)
        ax.set_xlabel("step")
        ax.set_title(f"{a['key']}: train vs validation", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.subplots_adjust(left=0.06, right=0.80 if len(panels) == 1 else 0.83, top=0.9, bottom=0.14,
                        wspace=0.75 if len(panels) > 1 else 0.2)
    _save(fig, path)
    return True


_CURVES = (  # (key, title, smallest y span shown: differences below it are measurement noise, not a trend)
    ("cer", "CER (lower is better)", 0.05),
    ("cer_pocketsphinx", "pocketsphinx CER (second opinion)", 0.05),
    ("mcd_db", "MCD-DTW dB (lower is better)", 0.5),
    ("speaker_similarity", "speaker cosine (higher is better)", 0.05),
    ("dnsmos_ovrl", "DNSMOS OVRL (higher is better)", 0.2),
)


def _plot_metrics(result: dict[str, Any], path: Path) -> bool:
    from matplotlib.figure import Figure

    cks = result["checkpoints"]
    real = result["real"]["means"]
    curves = [(k, t, span) for k, t, span in _CURVES
              if any(c["val"]["means"].get(k) is not None or c["texts"]["means"].get(k) is not None for c in cks)]
    if not cks or not curves:
        return False
    fig = Figure(figsize=(3.3 * len(curves), 3.2))
    steps = [c["step"] for c in cks]
    for i, (key, title, span) in enumerate(curves):
        ax = fig.add_subplot(1, len(curves), i + 1)
        for split, style, label in (("val", "o-", "validation sentences"), ("texts", "^--", "extra texts")):
            ys = [c[split]["means"].get(key) for c in cks]
            pts = [(s, y) for s, y in zip(steps, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), style, ms=4, label=f"synth, {label}")
        if real.get(key) is not None:
            ax.axhline(real[key], color="k", ls="--", lw=1, label="real recordings")
        sel = (result.get("selection") or {}).get("step")
        if sel is not None:
            ax.axvline(sel, color="#2ca02c", ls=":", lw=1.5, label="selected")
        lo, hi = ax.get_ylim()
        if hi - lo < span:
            mid = (hi + lo) / 2
            ax.set_ylim(mid - span / 2, mid + span / 2)
        _tidy(ax)
        style_panel(ax, title, "checkpoint step", legend=i == 0)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.16, wspace=0.35)
    _save(fig, path)
    return True


def write_plots(out: str | os.PathLike, result: dict[str, Any]) -> dict[str, str]:
    """plots/overfitting.png and plots/metrics.png under ``out``; returns {name: relative path} of those drawn."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    made = {}
    if result.get("overfitting") and _plot_overfitting(result["overfitting"], out / "plots" / "overfitting.png"):
        made["overfitting"] = "plots/overfitting.png"
    if _plot_metrics(result, out / "plots" / "metrics.png"):
        made["metrics"] = "plots/metrics.png"
    return made


# ----------------------------------------------------------------------------- HTML

_e = html.escape

_TABLE = (  # (split, key, header, format)
    ("val", "cer", "CER", "pct"), ("val", "wer", "WER", "pct"), ("texts", "cer", "CER texts", "pct"),
    ("val", "cer_pocketsphinx", "CER ps", "pct"), ("texts", "cer_pocketsphinx", "CER ps texts", "pct"),
    ("val", "mcd_db", "MCD dB", "f2"), ("val", "f0_rmse_cents", "F0 RMSE ¢", "f0"),
    ("val", "voicing_error", "V/UV err", "pct"), ("all", "speaker_similarity", "spk cos", "f3"),
    ("all", "dnsmos_ovrl", "DNSMOS", "f2"), ("all", "dnsmos_p808", "P.808", "f2"),
)


def _fmt(v: Any, kind: str = "f2") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "f3":
        return f"{v:.3f}"
    if kind == "f0":
        return f"{v:.0f}"
    return f"{v:.2f}"


def _audio(src: str | None) -> str:
    if not src:
        return "–"
    return f'<audio controls preload="none" src="{_e(src)}"></audio>'


def _summary_table(result: dict[str, Any]) -> str:
    sel = (result.get("selection") or {}).get("selected")
    present = [c for c in _TABLE if any(ck[c[0]]["counts"].get(c[1]) for ck in result["checkpoints"])
               or result["real"]["counts"].get(c[1]) and c[0] != "texts"]
    head = "<tr><th>checkpoint</th><th>step</th>" + "".join(f"<th>{_e(h)}</th>" for _, _, h, _ in present)
    head += "<th>nearest ≠ target</th><th>RTF</th></tr>"
    real = result["real"]
    rows = ['<tr class="real"><td>real recordings (ceiling)</td><td></td>' + "".join(
        f"<td>{_fmt(real['means'].get(k), f) if s != 'texts' else '–'}</td>" for s, k, _, f in present)
        + f"<td>{_fmt(real.get('speaker_mismatch_rate'), 'pct')}</td><td>–</td></tr>"]
    for c in result["checkpoints"]:
        cls = ' class="selected"' if c["name"] == sel else ""
        mark = " ✔ selected" if c["name"] == sel else ""
        rows.append(f"<tr{cls}><td><code>{_e(c['name'])}</code>{mark}</td><td>{c['step']}</td>" + "".join(
            f"<td>{_fmt(c[s]['means'].get(k), f)}</td>" for s, k, _, f in present)
            + f"<td>{_fmt(c['all'].get('speaker_mismatch_rate'), 'pct')}</td>"
            f"<td>{_fmt(c['all'].get('rtf'), 'f3')}</td></tr>")
    return f"<table class='summary'>{head}{''.join(rows)}</table>"


def _utt_metrics(r: dict[str, Any], real: bool = False) -> str:
    bits = []
    if r.get("cer") is not None:
        bits.append(f"CER {_fmt(r['cer'], 'pct')}")
    if r.get("cer_pocketsphinx") is not None and r.get("asr") != "pocketsphinx":
        bits.append(f"CER ps {_fmt(r['cer_pocketsphinx'], 'pct')}")
    if r.get("mcd_db") is not None:
        bits.append(f"MCD {_fmt(r['mcd_db'])} dB")
    if r.get("f0_rmse_cents") is not None:
        bits.append(f"F0 {_fmt(r['f0_rmse_cents'], 'f0')}¢")
    if r.get("speaker_similarity") is not None:
        bits.append(f"cos {_fmt(r['speaker_similarity'], 'f3')}")
    if r.get("dnsmos_ovrl") is not None:
        bits.append(f"MOS {_fmt(r['dnsmos_ovrl'])}")
    if r.get("rtf") is not None:
        bits.append(f"RTF {_fmt(r['rtf'], 'f3')}")
    warn = ""
    if r.get("speaker_mismatch"):
        warn = f' <span class="warn">sounds nearest to {_e(str(r.get("nearest_speaker")))}, not {_e(r["speaker"])}</span>'
    return " · ".join(bits) + warn


def _heard(r: dict[str, Any]) -> str:
    """The primary recognizer's transcript, with pocketsphinx's below it when both ran."""
    main = _e(r.get("hypothesis") or "")
    ps = r.get("hypothesis_pocketsphinx")
    if ps is not None and r.get("asr") != "pocketsphinx":
        main += f"<br><span class='spk'>pocketsphinx: {_e(ps)}</span>"
    return main


def _samples(result: dict[str, Any], split: str) -> str:
    real_by_id = {r["id"]: r for r in result["real"]["utterances"]}
    order: dict[str, dict[str, Any]] = {}
    for c in result["checkpoints"]:
        for r in c["utterances"]:
            if r["set"] == split:
                order.setdefault(r["id"], r)
    if split == "val":  # validation sentences appear even when every checkpoint skipped them
        for r in result["real"]["utterances"]:
            order.setdefault(r["id"], r)
    blocks = []
    for uid, first in order.items():
        lines = []
        real = real_by_id.get(uid) if split == "val" else None
        if real:
            lines.append(f"<tr class='real'><td>real recording</td><td>{_audio(real['audio'])}</td>"
                         f"<td>{_heard(real)}</td><td>{_utt_metrics(real, True)}</td></tr>")
        for c in result["checkpoints"]:
            r = next((u for u in c["utterances"] if u["id"] == uid and u["set"] == split), None)
            if r is None:
                lines.append(f"<tr><td><code>{_e(c['name'])}</code></td><td colspan=3>skipped (no speakable text)</td></tr>")
                continue
            lines.append(f"<tr><td><code>{_e(c['name'])}</code></td><td>{_audio(r['audio'])}</td>"
                         f"<td>{_heard(r)}</td><td>{_utt_metrics(r)}</td></tr>")
        blocks.append(
            f"<div class='utt'><div class='utthead'><b>{_e(uid)}</b> <span class='spk'>({_e(first.get('speaker') or '')})</span> "
            f"“{_e(first.get('text') or '')}”</div><table class='samples'><tr><th>source</th><th>audio</th>"
            f"<th>ASR heard</th><th>metrics</th></tr>{''.join(lines)}</table></div>")
    return "".join(blocks)


def _overfit_html(result: dict[str, Any]) -> str:
    of = result.get("overfitting")
    if not of or not of["loss"]["steps"]:
        return "<p>No validation rows in RUN/metrics.csv: nothing to say about overfitting yet.</p>"
    a = of["loss"]
    gap = (f"the gap opens at step <b>{a['gap_opens_step']}</b>" if a["gap_opens_step"] is not None
           else "no sustained rise of validation loss (the gap has not opened)")
    img = f"<img src='{_e(result['plots']['overfitting'])}' alt='train vs validation loss'>" \
        if "overfitting" in result.get("plots", {}) else ""
    return (f"<p>Lowest validation loss {_fmt(a['min_val'], 'f3')} at step <b>{a['min_val_step']}</b>; {gap} "
            f"over {len(a['steps'])} validation(s). Definition: {_e(a['definition'])}.</p>{img}")


def _qc_html(result: dict[str, Any], out: Path) -> str:
    qc = result.get("qc")
    if not qc:
        return "<p>No qc.json in the dataset folder (prepared by an older voicetrain?).</p>"
    if "error" in qc:
        return f"<p class='warn'>{_e(qc['error'])}</p>"
    s = qc["summary"]
    link = ""
    if qc.get("report_html"):
        rel = os.path.relpath(qc["report_html"], out)
        link = f" Full preparation report: <a href='{_e(Path(rel).as_posix())}'>{_e(qc['report_html'])}</a>."
    reasons = ", ".join(f"{_e(k)} {v}" for k, v in qc["quarantine_reasons"].items()) or "none"
    warns = ", ".join(f"{_e(str(k))} {v}" for k, v in qc["warnings"].items()) or "none"
    notes = "".join(f"<li>{_e(w)}</li>" for w in qc["corpus_warnings"])
    return (f"<table><tr><th>items</th><th>kept</th><th>quarantined</th><th>hours kept</th><th>median SNR dB</th></tr>"
            f"<tr><td>{s.get('n_items', '–')}</td><td>{s.get('n_kept', '–')}</td><td>{s.get('n_quarantined', '–')}</td>"
            f"<td>{qc['hours_kept']:.3f}</td><td>{_fmt(qc.get('median_snr_db'), 'f0')}</td></tr></table>"
            f"<p>Quarantine reasons: {reasons}. Warnings on kept utterances: {warns}.{link}</p>"
            + (f"<ul>{notes}</ul>" if notes else ""))


def _selection_html(result: dict[str, Any]) -> str:
    sel = result.get("selection")
    if not sel:
        return ("<p>No checkpoint was selected (run with <code>--select-best</code> to choose one and record it in "
                "RUN/selected_checkpoint.txt).</p>")
    rows = []
    for v in sel.get("verdicts", []):
        ci = "–" if v.get("delta") is None else f"{v['delta']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
        cls = ' class="selected"' if v["name"] == sel["selected"] else ""
        rows.append(f"<tr{cls}><td><code>{_e(v['name'])}</code></td><td>{v['step']}</td>"
                    f"<td>{_fmt(v.get('quality'), 'f3')}</td><td>{ci}</td><td>{_e(v['verdict'])}</td></tr>")
    table = ("<table><tr><th>checkpoint</th><th>step</th><th>quality</th><th>Δ vs the highest score [95% paired "
             "bootstrap]</th><th>why</th></tr>" + "".join(rows) + "</table>")
    return (f"<p class='selbox'>Selected <b><code>{_e(sel['selected'])}</code></b> (step {sel['step']}), written to "
            f"<code>{_e(sel.get('written') or '')}</code>. Rule: {_e(sel['rule'])}.</p>{table}")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;vertical-align:middle}
th{background:#f3f3f3}table.summary td{text-align:right}table.summary td:first-child{text-align:left}
tr.real td{background:#f4f8ff}tr.selected td{background:#eaf7ea;font-weight:600}
.utt{margin:.8em 0 1.2em}.utthead{font-size:14px;margin-bottom:.2em}.spk{color:#777}
table.samples{width:100%;table-layout:fixed}table.samples th:nth-child(1){width:150px}
table.samples th:nth-child(2){width:280px}table.samples td:nth-child(3){color:#555;font-style:italic}
audio{height:30px;width:260px;vertical-align:middle}img{max-width:100%}
.warn{color:#b00;font-weight:600}.selbox{background:#eaf7ea;border:1px solid #9c9;padding:.5em .8em}
.meta{color:#555;font-size:13px}code{font-size:12px}"""


def _asr_words(result: dict[str, Any]) -> str:
    asr = result.get("asr") or {"names": ["pocketsphinx"]}
    names = {"whisper": f"Whisper ({asr.get('model') or 'tiny.en'})", "pocketsphinx": "pocketsphinx"}
    words = names[asr["names"][0]] + " transcript"
    if len(asr["names"]) > 1:
        words += f"; 'CER ps' is {names[asr['names'][1]]}'s, the second opinion"
    return words


def write_report(out: str | os.PathLike, result: dict[str, Any]) -> Path:
    """report.html in ``out`` from the eval.json content (paths inside it are relative to ``out``)."""
    out = Path(out)
    cks = result["checkpoints"]
    n_val = result["real"]["n"]
    n_texts = max((c["texts"]["n"] for c in cks), default=0)
    spk = result.get("speakers") or {}
    single = len(spk.get("centroids") or []) <= 1
    spk_note = ("Only one speaker in the dataset: similarity to other speakers (and the nearest-speaker check) is "
                "not available." if single else
                f"Centroids of {len(spk['centroids'])} speakers from their training recordings; a sample is flagged "
                "when it sounds nearest to a speaker other than its target.")
    metrics_img = (f"<img src='{_e(result['plots']['metrics'])}' alt='metrics per checkpoint'>"
                   if "metrics" in result.get("plots", {}) else "")
    wall = result["timings"].get("wall_seconds")
    texts_section = (f"<h2>Extra texts ({n_texts}, no reference recording)</h2>{_samples(result, 'texts')}"
                     if n_texts else "")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>voicetrain eval: {_e(Path(result['run']).name)}</title>
<style>{_CSS}</style></head><body>
<h1>Evaluation of <code>{_e(result['run'])}</code></h1>
<p class="meta">Dataset <code>{_e(result['dataset'])}</code> · {len(cks)} checkpoint(s) · {n_val} validation sentence(s)
{f'· {n_texts} extra text(s)' if n_texts else ''} · created {_e(result['created'])}{f' · {wall:.0f} s' if wall else ''}</p>
<h2>Checkpoints</h2>
<p class="meta">CER/WER: {_e(_asr_words(result))} of the synthesized validation sentences; the first row
scores the real recordings the same way (the ceiling). MCD-DTW, F0 RMSE and voicing error compare with the real recording of the
same sentence. Speaker cosine: resemblyzer embedding against the target speaker's centroid. RTF: synthesis seconds per
second of audio. {_e(spk_note)}</p>
{_summary_table(result)}
{_selection_html(result)}
{f'<h3>Metrics per checkpoint</h3>{metrics_img}' if metrics_img else ''}
<h2>Overfitting</h2>{_overfit_html(result)}
<h2>Validation sentences ({n_val})</h2>{_samples(result, 'val')}
{texts_section}
<h2>Dataset QC (from prepare)</h2>{_qc_html(result, out)}
<p class="meta">Everything on this page is in <code>eval.json</code> beside it.</p>
</body></html>"""
    path = out / "report.html"
    atomic_write_text(path, doc)
    return path
