"""The run evaluation report: PNG plots and report.html, from the eval.json content.

Pure presentation: everything shown comes from the dict that
:func:`voicetrain.evaluation.evaluate_run.evaluate_run` also writes as eval.json,
so a report can be rebuilt from an eval.json alone (:func:`write_report`).
Figures are drawn with matplotlib's ``Figure`` (no pyplot: no global backend state).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from voicetrain.fileio import atomic_write_bytes
from voicetrain.templates import write_page

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


def save_figure(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path`` (atomic: a reader never sees half a file)."""
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
    save_figure(fig, path)
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
    save_figure(fig, path)
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

_TABLE = (  # (split, key, header, format)
    ("val", "cer", "CER", "pct"), ("val", "wer", "WER", "pct"), ("texts", "cer", "CER texts", "pct"),
    ("val", "cer_pocketsphinx", "CER ps", "pct"), ("texts", "cer_pocketsphinx", "CER ps texts", "pct"),
    ("val", "mcd_db", "MCD dB", ".2f"), ("val", "f0_rmse_cents", "F0 RMSE ¢", ".0f"),
    ("val", "voicing_error", "V/UV err", "pct"), ("all", "speaker_similarity", "spk cos", ".3f"),
    ("all", "dnsmos_ovrl", "DNSMOS", ".2f"), ("all", "dnsmos_p808", "P.808", ".2f"),
)


def _samples(result: dict[str, Any], split: str) -> list[tuple[dict, dict | None, list[tuple[str, dict | None]]]]:
    """Per sentence of ``split``: its first row, the real recording's row, and (checkpoint, row or None) pairs."""
    order: dict[str, dict[str, Any]] = {}
    for c in result["checkpoints"]:
        for r in c["utterances"]:
            if r["set"] == split:
                order.setdefault(r["id"], r)
    real = {}
    if split == "val":  # validation sentences appear even when every checkpoint skipped them
        real = {r["id"]: r for r in result["real"]["utterances"]}
        for uid, r in real.items():
            order.setdefault(uid, r)
    return [(first, real.get(uid), [(c["name"], next((u for u in c["utterances"] if u["id"] == uid
                                                      and u["set"] == split), None)) for c in result["checkpoints"]])
            for uid, first in order.items()]


def write_report(out: str | os.PathLike, result: dict[str, Any]) -> Path:
    """report.html in ``out`` from the eval.json content (paths inside it are relative to ``out``)."""
    out = Path(out)
    cks, real = result["checkpoints"], result["real"]
    columns = [c for c in _TABLE if any(ck[c[0]]["counts"].get(c[1]) for ck in cks)
               or real["counts"].get(c[1]) and c[0] != "texts"]
    prep_report = (result.get("qc") or {}).get("report_html")
    return write_page(out / "report.html", "eval_report.html", r=result, columns=columns,
                      run_name=Path(result["run"]).name, val=_samples(result, "val"), texts=_samples(result, "texts"),
                      n_texts=max((c["texts"]["n"] for c in cks), default=0),
                      qc_link=Path(os.path.relpath(prep_report, out)).as_posix() if prep_report else None)
