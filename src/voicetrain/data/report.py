"""The preparation report written by ``prepare``: report.html and plots/*.png."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from voicetrain.data.qc import Issue, count_phones
from voicetrain.templates import write_page

if TYPE_CHECKING:
    from voicetrain.data.formats import Corpus
    from voicetrain.data.manifest import Utterance


def _subplots(figure_cls, figsize: tuple[float, float]):
    fig = figure_cls(figsize=figsize)
    return fig, fig.add_subplot()


def _plots(root: Path, utts: dict[str, "Utterance"], loudness: dict[str, float]) -> list[str]:
    # Figure objects without pyplot: no global backend switch, no display needed.
    from matplotlib.figure import Figure

    from voicetrain.fileio import atomic_write_bytes

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
    data = [[loudness[u.id] for u in utts.values() if u.speaker == spk and math.isfinite(loudness[u.id])]
            or [float("nan")] for spk in speakers]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(speakers) + 1), speakers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("source loudness (LUFS)")
    save(fig, "loudness_per_speaker.png")
    return names


def write_report(root: Path, corpus: "Corpus", issues: dict[str, list[Issue]], utts: dict[str, "Utterance"],
                 loudness: dict[str, float]) -> None:
    """report.html: totals, plots, the quarantine table with reasons, and the warnings.

    ``loudness``: each kept utterance's source loudness (LUFS) for the per-speaker plot.
    """
    from voicetrain.data.enough import advise, load_curve

    errors = {uid: [i for i in found if i.is_error] for uid, found in issues.items()}
    minutes = sum(u.duration for u in utts.values()) / 60
    write_page(root / "report.html", "dataset_report.html", corpus=corpus, issues=issues, utts=utts,
               enough=advise(minutes, load_curve()),
               plots=_plots(root, utts, loudness) if utts else [],
               quarantined={uid: e for uid, e in errors.items() if e},
               sources={it.id: it.audio or "" for it in corpus.items})
