"""Evaluate the checkpoints of a training run: ``voicetrain eval RUN``.

For each chosen checkpoint the validation sentences of the run's dataset (and any
extra texts, e.g. the Harvard sentences) are synthesized and scored with
:func:`voicetrain.evaluation.evaluate_audio.evaluate_utterance`; the real
validation recordings are scored the same way once, as the ceiling. The models
behind the metrics are loaded once per process: one
:class:`~voicetrain.evaluation.models.Evaluator` serves every checkpoint.

What is measured, per synthesized utterance
--------------------------------------------
* intelligibility: CER / WER of Whisper tiny.en's transcript (faster-whisper, offline)
  against the text, with pocketsphinx's beside it (``asr='both'``, the default); the
  same figures for the real recordings are always reported beside them;
* voice similarity: resemblyzer cosine to the target speaker's centroid (mean
  embedding of at most ``max_reference_wavs`` *training* recordings of that
  speaker, so no validation recording is compared with itself) and to every other
  speaker's centroid; ``speaker_mismatch`` flags an utterance whose nearest
  centroid is not the target;
* quality: DNSMOS (P.835 / P.808); for validation sentences MCD-DTW, F0 RMSE and
  voicing error against the real recording;
* speed: real-time factor of synthesis (acoustic model + vocoder seconds per
  second of audio).

Overfitting (from RUN/metrics.csv), see :func:`overfitting_analysis`: the step
of the lowest validation loss, and the step where the train/validation gap
opens, defined as the first validation after which validation loss rises at two
consecutive validations while the training loss keeps falling.

Checkpoint selection (``select_best``), see :func:`select_checkpoint`: the quality score
training tracks (:mod:`voicetrain.evaluation.quality`), per sentence
``speaker similarity - min(CER, 1)`` over the validation sentences and --texts together;
every checkpoint is compared with the highest-scoring one by a paired bootstrap over the
same sentences, and the latest one not worse beyond noise wins; the report says why each
won or lost. The choice is written atomically to RUN/selected_checkpoint.txt (a file name
inside RUN/checkpoints), which ``find_checkpoint(run, 'best')`` — and so ``voicetrain
synth`` — honours before the checkpoints training kept by quality.

Outputs in ``out`` (default RUN/eval): eval.json, report.html, plots/*.png,
audio/real/ID.wav (copies of the real recordings) and audio/step_N/{val,texts}/ID.wav.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from voicetrain.audio.io import load_mono, save_wav
from voicetrain.config import AudioConfig
from voicetrain.evaluation import metrics
from voicetrain.evaluation.evaluate_audio import (
    TranscriptError,
    UtteranceEval,
    evaluate_utterance,
    load_transcripts,
    summarize,
)
from voicetrain.evaluation.checkpoints import RunEvalError, resolve_checkpoints, select_checkpoint, write_selection
from voicetrain.evaluation.history import overfitting_analysis, read_metrics_csv
from voicetrain.evaluation.models import ASR_CHOICES, Evaluator, torch_threads
from voicetrain.evaluation.quality import mean_quality, sentence_quality
from voicetrain.evaluation.results import json_ready, run_info
from voicetrain.fileio import atomic_path, atomic_write_json

EVAL_SCHEMA_VERSION = 1

HARVARD = "harvard"
"""``texts=HARVARD`` uses the Harvard sentences shipped with voicetrain (held-out text for ARCTIC-trained voices)."""


@dataclass(frozen=True)
class RunEvalConfig:
    run: str
    """RUN folder written by ``voicetrain train``."""
    dataset: str | None = None
    """Prepared DATASET folder; default: the one named in RUN/config.yaml."""
    texts: str | None = None
    """Extra sentences to synthesize: 'id<TAB>text' TSV, LJSpeech metadata.csv, one sentence per
    line, or ``'harvard'`` for the bundled Harvard sentences. Scored without a reference recording."""
    checkpoints: str | None = None
    """'best', 'last', 'all' or comma-separated steps ('1000,2000'). Default: 'all' with
    ``select_best``, else 'best'."""
    select_best: bool = False
    """Choose a checkpoint by the documented score and write RUN/selected_checkpoint.txt."""
    max_utterances: int = 20
    """Cap on validation sentences, and separately on extra texts (first N of each)."""
    out: str | None = None
    """Output folder; default RUN/eval."""
    dnsmos: bool = True
    speaker_similarity: bool = True
    max_reference_wavs: int = 20
    """Training recordings per speaker that form its centroid (spread over the speaker's list)."""
    griffin_lim_iters: int = 32
    vocoder: str | None = None
    """'griffin-lim' or a vocoder RUN folder / checkpoint for every checkpoint; None = the vocoder the run names."""
    synth_threads: int | None = 1
    """torch threads during synthesis (restored after each call); None leaves the process setting. One
    thread measured 3-5x faster than two for the tiny model + Griffin-Lim on a loaded 2-core machine."""
    asr: str = "both"
    """'whisper', 'pocketsphinx' or 'both' (Whisper's figures fill cer/wer; pocketsphinx's sit beside them)."""
    asr_model: str | None = None
    """A faster-whisper model folder instead of the bundled Whisper tiny.en."""
    progress: bool = True
    """Show a progress bar with ETA on stderr."""


# ----------------------------------------------------------------------------- inputs


def read_texts(spec: str | os.PathLike) -> list[tuple[str, str]]:
    """Extra sentences as [(id, text)]: ``'harvard'``, a TSV / metadata.csv, or one sentence per line."""
    if str(spec) == HARVARD:
        path = Path(__file__).resolve().parents[1] / "data" / "prompts" / "harvard_sentences.tsv"
    else:
        path = Path(spec)
    if not path.is_file():
        raise RunEvalError(f"{path}: texts file not found (give a TSV 'id<TAB>text', metadata.csv, "
                           f"one sentence per line, or '{HARVARD}')")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise RunEvalError(f"{path}: no sentences in the texts file")
    if path.suffix.lower() == ".csv" or "\t" in lines[0] or "|" in lines[0]:
        try:
            return list(load_transcripts(path).items())
        except TranscriptError as e:
            raise RunEvalError(str(e)) from None
    return [(f"text_{i:04d}", ln.strip()) for i, ln in enumerate(lines, 1)]


def _spread(items: Sequence, n: int) -> list:
    """At most ``n`` items spread evenly over the sequence (deterministic)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


# ----------------------------------------------------------------------------- evaluation


@dataclass
class _Item:
    set: str
    """'val' (has a real recording) or 'texts'."""
    id: str
    text: str
    speaker: str
    real_path: Path | None = None


def _mean(vals: Iterable[float | None]) -> float | None:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    evals = [r["_eval"] for r in rows]
    means, counts = summarize(evals)
    synth = sum(r.get("synth_seconds") or 0.0 for r in rows)
    dur = sum(r["duration"] for r in rows)
    mism = [r["speaker_mismatch"] for r in rows if r.get("speaker_mismatch") is not None]
    return {
        "n": len(rows), "means": means, "counts": counts, "audio_seconds": dur,
        "synth_seconds": synth if any(r.get("synth_seconds") is not None for r in rows) else None,
        "rtf": synth / dur if dur > 0 and any(r.get("synth_seconds") is not None for r in rows) else None,
        "speaker_mismatch_rate": float(np.mean(mism)) if mism else None,
    }


def _row(ev: UtteranceEval, item: _Item, rel_audio: str, real_rel: str | None, synth_s: float | None,
         match: metrics.SpeakerMatch | None) -> dict[str, Any]:
    row = asdict(ev)
    row.update({
        "set": item.set, "speaker": item.speaker, "audio": rel_audio, "real_audio": real_rel,
        "synth_seconds": synth_s, "rtf": synth_s / ev.duration if synth_s is not None and ev.duration > 0 else None,
        "nearest_speaker": match.nearest if match else None,
        "speaker_similarities": match.similarities if match else None,
        "speaker_mismatch": match.mismatch if match else None,
        "_eval": ev,
    })
    return row


def _strip_private(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


class _Progress:
    """A rich progress bar with ETA over all units of work, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               console=Console(stderr=True), transient=False)
            self._task = self._p.add_task("eval", total=total)

    def __enter__(self):
        if self._p:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p:
            self._p.stop()

    def step(self, description: str) -> None:
        if self._p:
            self._p.update(self._task, advance=1, description=description)

    def describe(self, description: str) -> None:
        if self._p:
            self._p.update(self._task, description=description)


def evaluate_run(cfg: RunEvalConfig, *, evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Synthesize and score the chosen checkpoints of ``cfg.run``; write eval.json, plots and report.html.

    Returns the eval.json content (a dict). Raises :class:`RunEvalError` for a run
    without checkpoints, a missing dataset, an unreadable texts file, etc.
    """
    from voicetrain.config import ConfigError
    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation import report
    from voicetrain.inference.checkpoint import CheckpointError, load_model
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.text.tokenizer import NoSpeakableTextError

    t_start = time.perf_counter()
    run = Path(cfg.run)
    if not run.is_dir():
        raise RunEvalError(f"{run}: no such run folder (the --out folder of `voicetrain train`)")
    which = cfg.checkpoints or ("all" if cfg.select_best else "best")
    ckpts = resolve_checkpoints(run, which)
    if cfg.max_utterances < 1:
        raise RunEvalError(f"--max-utterances must be at least 1, got {cfg.max_utterances}")

    # ---- dataset
    settings = run_info(run / "config.yaml")
    ds_path = cfg.dataset or settings.get("dataset") or ""
    if not ds_path:
        raise RunEvalError(f"{run / 'config.yaml'} names no dataset; pass --dataset DATASET")
    try:
        ds = PreparedDataset.open(ds_path)
    except FileNotFoundError as e:
        hint = "" if cfg.dataset else f" (named in {run / 'config.yaml'}; pass --dataset DATASET if it moved)"
        raise RunEvalError(f"{e}{hint}") from None
    val_utts = ds.manifest("val")[: cfg.max_utterances]
    items = [_Item("val", u.id, u.text, u.speaker, ds.root / u.audio) for u in val_utts]
    for it in items:
        if not it.real_path.is_file():
            raise RunEvalError(f"{it.real_path}: validation recording missing; re-run `voicetrain prepare`")
    extra = read_texts(cfg.texts)[: cfg.max_utterances] if cfg.texts else []
    if not items and not extra:
        raise RunEvalError(f"{ds.root}: the validation split is empty and no --texts were given; nothing to synthesize")
    val_speakers = list(dict.fromkeys(it.speaker for it in items))
    speakers_for_texts = val_speakers or list(settings.get("speakers") or ds.info.speakers)
    for i, (tid, text) in enumerate(extra):
        items.append(_Item("texts", tid, text, speakers_for_texts[i % len(speakers_for_texts)] if speakers_for_texts else ""))
    n_val = sum(it.set == "val" for it in items)

    out = Path(cfg.out) if cfg.out else run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    audio_cfg: AudioConfig = ds.info.audio
    if cfg.asr not in ASR_CHOICES:
        raise RunEvalError(f"--asr {cfg.asr!r}: expected one of {', '.join(ASR_CHOICES)}")
    evaluator = evaluator or Evaluator(asr=cfg.asr, asr_model=cfg.asr_model)
    if cfg.progress and evaluator.asr_note:
        import sys
        print(f"note: {evaluator.asr_note}", file=sys.stderr)
    for name in evaluator.asr_names:  # load now: a missing or broken model fails before any synthesis
        evaluator.asr_engine(name)
    timings: dict[str, float] = {}

    train_utts = ds.manifest("train")
    by_speaker: dict[str, list] = {}
    for u in train_utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    ref_utts = {s: _spread(sorted(us, key=lambda u: u.id), cfg.max_reference_wavs) for s, us in by_speaker.items()}
    n_ref = sum(len(v) for v in ref_utts.values()) if cfg.speaker_similarity else 0
    total = n_ref + n_val + len(ckpts) * len(items)

    with _Progress(cfg.progress, total) as prog:
        # ---- speaker centroids from training recordings
        centroids: dict[str, np.ndarray] = {}
        if cfg.speaker_similarity:
            for spk, us in ref_utts.items():
                embs = []
                for u in us:
                    prog.step(f"speaker centroids ({spk})")
                    t0 = time.perf_counter()
                    embs.append(evaluator.speaker_encoder.embed(*load_mono(ds.root / u.audio)))
                    timings["speaker"] = timings.get("speaker", 0.0) + time.perf_counter() - t0
                if embs:
                    centroids[spk] = metrics.mean_embedding(embs)

        def speaker_match(audio, sr, spk) -> metrics.SpeakerMatch | None:
            if spk not in centroids:
                return None
            t0 = time.perf_counter()
            emb = evaluator.speaker_encoder.embed(audio, sr)
            timings["speaker"] = timings.get("speaker", 0.0) + time.perf_counter() - t0
            return metrics.speaker_similarity(emb, centroids, spk)

        # ---- the ceiling: real validation recordings
        real_rows: list[dict[str, Any]] = []
        real_audio: dict[str, tuple[np.ndarray, int]] = {}
        real_rel: dict[str, str] = {}
        for it in items:
            if it.set != "val":
                continue
            prog.step(f"real recordings: {it.id}")
            rel = f"audio/real/{it.id}.wav"
            with atomic_path(out / rel) as tmp:
                shutil.copyfile(it.real_path, tmp)  # a copy: the report must survive moving DIR
            audio, sr = load_mono(it.real_path)
            real_audio[it.id], real_rel[it.id] = (audio, sr), rel
            ev = evaluate_utterance(evaluator, audio, sr, id=it.id, path=rel, text=it.text, dnsmos=cfg.dnsmos,
                                    audio_cfg=audio_cfg, timings=timings)
            match = speaker_match(audio, sr, it.speaker)
            if match:
                ev.speaker_similarity = match.target_similarity
            real_rows.append(_row(ev, it, rel, rel, None, match))

        # ---- each checkpoint
        ck_results = []
        for ck in ckpts:
            prog.describe(f"{ck.name}: loading")
            try:
                loaded = load_model(ck.path)
            except (CheckpointError, ConfigError) as e:
                raise RunEvalError(f"{ck.path}: cannot load this checkpoint: {e}") from None
            try:
                synth = Synthesizer.from_parts(loaded.model, loaded.voice, loaded.symbols, loaded.stats,
                                               vocoder=cfg.vocoder, griffin_lim_iters=cfg.griffin_lim_iters,
                                               checkpoint=str(ck.path))
            except (CheckpointError, ConfigError, FileNotFoundError) as e:
                raise RunEvalError(f"vocoder for {ck.path}: {e}") from None
            rows, skipped = [], []
            for it in items:
                prog.step(f"{ck.name}: {it.set}/{it.id}")
                spk = it.speaker if synth.knows_speaker(it.speaker) else None
                t0 = time.perf_counter()
                try:
                    with torch_threads(cfg.synth_threads):
                        wav, sr = synth.synthesize(it.text, spk)
                except NoSpeakableTextError as e:
                    skipped.append({"id": it.id, "set": it.set, "reason": str(e)})
                    continue
                synth_s = time.perf_counter() - t0
                rel = f"audio/{ck.label}/{it.set}/{it.id}.wav"
                save_wav(out / rel, wav, sr)
                ref = real_audio.get(it.id) if it.set == "val" else None
                try:
                    ev = evaluate_utterance(evaluator, wav, sr, id=it.id, path=rel, text=it.text, reference=ref,
                                            reference_path=real_rel.get(it.id) if ref else None,
                                            dnsmos=cfg.dnsmos, audio_cfg=audio_cfg, timings=timings)
                except Exception as e:  # name the utterance: a metric failure deep inside is otherwise anonymous
                    raise RuntimeError(f"{ck.path}: evaluating {it.set} utterance {it.id!r} failed: {e}") from e
                match = speaker_match(wav, sr, it.speaker)
                if match:
                    ev.speaker_similarity = match.target_similarity
                rows.append(_row(ev, it, rel, real_rel.get(it.id) if it.set == "val" else None, synth_s, match))
            val_rows = [r for r in rows if r["set"] == "val"]
            text_rows = [r for r in rows if r["set"] == "texts"]
            quality_values = {f"{r['set']}/{r['id']}": sentence_quality(r["cer"], r["speaker_similarity"])
                              for r in rows}
            ck_results.append({
                "name": ck.name, "path": str(ck.path), "step": ck.step, "label": ck.label,
                "vocoder": synth.vocoder.name,
                "val": _summary(val_rows), "texts": _summary(text_rows), "all": _summary(rows),
                "score": {"quality": mean_quality(list(quality_values.values())),
                          "quality_values": quality_values, "cer": _mean(r["cer"] for r in rows),
                          "speaker_similarity": _mean(r["speaker_similarity"] for r in rows),
                          "mcd_db": _mean(r["mcd_db"] for r in val_rows)},
                "skipped": skipped, "utterances": rows,
            })
            del synth, loaded

    # ---- selection, overfitting, outputs
    selection = None
    if cfg.select_best:
        selection = select_checkpoint([{"name": c["name"], "step": c["step"], **c["score"]} for c in ck_results])
        selection["written"] = str(write_selection(run, selection["selected"]))
    overfit = None
    if (run / "metrics.csv").is_file():
        mrows = read_metrics_csv(run / "metrics.csv")
        overfit = {"loss": overfitting_analysis(mrows, "loss"), "mel": overfitting_analysis(mrows, "mel")}
    qc = report.qc_summary(ds.root)

    result: dict[str, Any] = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run.resolve()), "dataset": str(ds.root.resolve()), "out": str(out.resolve()),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("run", "out", "progress")} | {"checkpoints": which},
        "speakers": {"target_speakers": val_speakers or speakers_for_texts, "centroids": sorted(centroids),
                     "reference_wavs_per_speaker": {s: len(v) for s, v in ref_utts.items()} if cfg.speaker_similarity else {}},
        "real": {**_summary(real_rows), "utterances": real_rows},
        "checkpoints": ck_results,
        "selection": selection,
        "overfitting": overfit,
        "qc": qc,
        "asr": {"names": list(evaluator.asr_names), "primary": evaluator.asr_names[0],
                "model": evaluator.asr_model or ("bundled Whisper tiny.en" if "whisper" in evaluator.asr_names else None),
                "note": evaluator.asr_note or None},
        "timings": {"compute_seconds": timings, "load_seconds": dict(evaluator.load_seconds),
                    "wall_seconds": None},
        "plots": {}, "report": "report.html",
    }
    result["plots"] = report.write_plots(out, result)
    result["timings"]["wall_seconds"] = time.perf_counter() - t_start
    clean = _clean(result)
    report.write_report(out, clean)
    atomic_write_json(out / "eval.json", clean)
    return clean


def _clean(result: dict[str, Any]) -> dict[str, Any]:
    """Drop the in-memory UtteranceEval objects and make the result JSON-ready (NaN -> None)."""
    r = dict(result)
    r["real"] = {**r["real"], "utterances": _strip_private(r["real"]["utterances"])}
    r["checkpoints"] = [{**c, "utterances": _strip_private(c["utterances"])} for c in r["checkpoints"]]
    return json_ready(r)
