"""qc.json and the preparation report (report.html + plots/*.png) written by ``prepare``."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from voicetrain.config import SCHEMA_VERSION, atomic_write_text
from voicetrain.data.qc import Issue, count_phones

if TYPE_CHECKING:
    from voicetrain.data.formats import Corpus
    from voicetrain.data.manifest import Utterance
    from voicetrain.data.prepare import AudioResult, PrepareConfig, _TextResult


def _num(x: float, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def write_qc_json(path: Path, corpus: "Corpus", cfg: "PrepareConfig", issues: dict[str, list[Issue]],
                  audio: dict[str, "AudioResult"], val_ids: set[str]) -> None:
    """Per-utterance results and the quarantine list with reasons (the machine-readable QC record)."""
    rows, quarantine = [], []
    for it in corpus.items:
        lst = issues[it.id]
        errors = [i for i in lst if i.is_error]
        r = audio.get(it.id)
        status = "quarantined" if errors else "kept"
        rows.append({
            "id": it.id, "speaker": it.speaker, "source": str(it.audio) if it.audio else None,
            "status": status, "split": None if errors else ("val" if it.id in val_ids else "train"),
            "duration": _num(r.duration) if r else None, "source_sample_rate": r.source_sr if r else None,
            "channels": r.channels if r else None, "snr_db": _num(r.snr_db, 1) if r else None,
            "loudness_lufs": _num(r.loudness_lufs, 1) if r else None,
            "source_sha256": r.source_sha256 if r else None,
            "issues": [i.to_dict() for i in lst],
        })
        if errors:
            quarantine.append({"id": it.id, "speaker": it.speaker, "source": rows[-1]["source"],
                               "reasons": [i.code.value for i in errors], "messages": [i.message for i in errors]})
    summary = {"n_items": len(rows), "n_kept": len(rows) - len(quarantine), "n_quarantined": len(quarantine)}
    data = {"schema_version": SCHEMA_VERSION, "source": str(corpus.root), "format": corpus.format,
            "qc_config": asdict(cfg.qc), "summary": summary, "corpus_warnings": corpus.warnings,
            "quarantine": quarantine, "utterances": rows}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False))


def _subplots(figure_cls, figsize: tuple[float, float]):
    fig = figure_cls(figsize=figsize)
    return fig, fig.add_subplot()


def _plots(root: Path, utts: dict[str, "Utterance"], audio: dict[str, "AudioResult"]) -> list[str]:
    # Figure objects without pyplot: no global backend switch, no display needed.
    from matplotlib.figure import Figure

    from voicetrain.config import atomic_write_bytes

    out = root / "plots"
    out.mkdir(exist_ok=True)
    names = []
    speakers = sorted({u.speaker for u in utts.values()})

    def save(fig, name: str) -> None:
        import io

        buf = io.BytesIO()
        # fixed margins: tight_layout costs as much as drawing the figure
        fig.subplots_adjust(left=0.12, right=0.97, top=0.95, bottom=0.42 if name.startswith("loudness") else 0.18)
        fig.savefig(buf, format="png", dpi=80)
        atomic_write_bytes(out / name, buf.getvalue())
        names.append(name)

    fig, ax = _subplots(Figure, figsize=(6, 3))
    ax.hist([u.duration for u in utts.values()], bins=30, color="#4a7")
    ax.set_xlabel("duration after trimming (s)")
    ax.set_ylabel("utterances")
    save(fig, "durations.png")

    fig, ax = _subplots(Figure, figsize=(6, 3))
    for spk in speakers:
        rates = [count_phones(u.phonemes) / u.duration for u in utts.values() if u.speaker == spk and u.duration > 0]
        ax.hist(rates, bins=20, alpha=0.5, label=spk)
    ax.set_xlabel("speaking rate (phonemes/s)")
    ax.set_ylabel("utterances")
    if 1 < len(speakers) <= 12:
        ax.legend(fontsize=6)
    save(fig, "speaking_rate.png")

    fig, ax = _subplots(Figure, figsize=(max(4, 0.6 * len(speakers) + 2), 4.5))
    data = [[audio[u.id].loudness_lufs for u in utts.values()
             if u.speaker == spk and math.isfinite(audio[u.id].loudness_lufs)] or [float("nan")] for spk in speakers]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(speakers) + 1), speakers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("source loudness (LUFS)")
    save(fig, "loudness_per_speaker.png")
    return names


def write_report(root: Path, corpus: "Corpus", issues: dict[str, list[Issue]], audio: dict[str, "AudioResult"],
                 utts: dict[str, "Utterance"], text: dict[str, "_TextResult"]) -> None:
    """report.html: totals, plots, the quarantine table with reasons, and the warnings."""
    plots = _plots(root, utts, audio) if utts else []
    hours = sum(u.duration for u in utts.values()) / 3600.0
    speakers = sorted({u.speaker for u in utts.values()})
    by_id = {it.id: it for it in corpus.items}
    e = html.escape
    q_rows = "".join(
        f"<tr><td>{e(uid)}</td><td>{e(str(by_id[uid].audio or ''))}</td>"
        f"<td>{e(', '.join(sorted({i.code.value for i in lst if i.is_error})))}</td>"
        f"<td>{'<br>'.join(e(i.message) for i in lst if i.is_error)}</td></tr>"
        for uid, lst in issues.items() if any(i.is_error for i in lst))
    w_rows = "".join(
        f"<tr><td>{e(uid)}</td><td>{e(i.code.value)}</td><td>{e(i.message)}</td></tr>"
        for uid, lst in issues.items() for i in lst if not i.is_error and uid in utts)
    spk_rows = "".join(
        f"<tr><td>{e(s)}</td><td>{sum(u.speaker == s for u in utts.values())}</td>"
        f"<td>{sum(u.duration for u in utts.values() if u.speaker == s) / 60:.1f}</td></tr>" for s in speakers)
    n_q = sum(any(i.is_error for i in lst) for lst in issues.values())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>voicetrain prepare report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}}</style></head><body>
<h1>Dataset preparation report</h1>
<p>Source <code>{e(str(corpus.root))}</code> ({e(corpus.format)}).</p>
<table><tr><th>hours kept</th><th>utterances kept</th><th>quarantined</th><th>speakers</th></tr>
<tr><td>{hours:.3f}</td><td>{len(utts)}</td><td>{n_q}</td><td>{len(speakers)}</td></tr></table>
<h2>Speakers</h2><table><tr><th>speaker</th><th>utterances</th><th>minutes</th></tr>{spk_rows}</table>
<h2>Plots</h2>{''.join(f'<img src="plots/{p}" alt="{p}">' for p in plots)}
<h2>Quarantine ({n_q})</h2><table><tr><th>id</th><th>source</th><th>reasons</th><th>details and fix</th></tr>{q_rows}</table>
<h2>Warnings on kept utterances</h2><table><tr><th>id</th><th>code</th><th>message</th></tr>{w_rows}</table>
<h2>Corpus notes</h2><ul>{''.join(f'<li>{e(w)}</li>' for w in corpus.warnings)}</ul>
</body></html>"""
    atomic_write_text(root / "report.html", doc)
