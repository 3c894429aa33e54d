"""``voicetrain prepare``: raw recordings -> a validated, normalized, feature-cached DATASET folder.

Stages (each one idempotent; see :mod:`voicetrain.data.manifest` for the output layout):

1. read    the corpus (:mod:`voicetrain.data.formats`); transcripts decoded, nothing written.
2. text    normalize every transcript and phonemize them in ONE batched espeak call
           (about 100x cheaper than one call per text).
3. audio   per utterance, in a process pool: decode (read-only), QC the source, mono,
           resample (soxr), trim silence, QC, loudness-normalize, write 16-bit PCM
           atomically, extract features into the content-addressed cache. Each finished
           utterance leaves a done marker keyed by the source's sha256 and the config,
           so a re-run (or a run after a crash) redoes only what changed.
4. dataset QC: duplicate audio, speaking-rate outliers per speaker.
5. split   per speaker, deterministic, validation spread over utterance lengths.
6. write   symbols.json, stats.json, manifests, metadata.csv, qc.json, report; dataset.yaml
           last, so a dataset.yaml always describes a complete dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from voicetrain.config import SCHEMA_VERSION, AudioConfig, QCConfig, TextConfig
from voicetrain.data.cache import FEATURE_VERSION, FeatureStats, audio_hash, cache_path, load_features, save_features
from voicetrain.data.formats import Corpus, CorpusFormatError, SourceItem, read_corpus
from voicetrain.data.manifest import DatasetInfo, PreparedDataset, Utterance, write_jsonl
from voicetrain.data.qc import (MIN_SOURCE_RATE, Issue, RateItem, Reason, check_source, check_trimmed, count_phones,
                                duplicates, estimate_snr_db, rate_outliers, remove_dc)
from voicetrain.fileio import atomic_write_text, sha256_file
from voicetrain.text.phonemize import Phonemizer
from voicetrain.workers import main_is_importable, run_chunks

PREPARE_VERSION = 1
"""Bump when the audio stage changes meaning (invalidates every done marker)."""
MIN_JOBS_FOR_POOL = 16
"""Below this many utterances to process, starting worker processes costs more than it saves."""
WORK_DIR = ".work"
T = TypeVar("T")
# Imported once by the forkserver so that workers start warm; librosa loads its
# submodules lazily (seconds on first use), hence the explicit names.
_PRELOAD = ["voicetrain.data.prepare", "voicetrain.audio.features", "voicetrain.audio.trim", "librosa.effects",
            "librosa.feature", "librosa.core.pitch", "pyloudnorm", "scipy.signal"]


class PrepareError(RuntimeError):
    """prepare cannot produce a dataset; the message names the cause and the fix."""


@dataclass(frozen=True)
class PrepareConfig:
    input: str
    out: str
    format: str = "auto"
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 2
    progress: bool = False


@dataclass(frozen=True)
class AudioJob:
    """Everything one worker needs for one utterance (picklable, no open handles)."""

    id: str
    source: str
    out_wav: str
    """Absolute path of the prepared wav."""
    rel_wav: str
    root: str
    marker: str
    audio_cfg: AudioConfig
    qc_cfg: QCConfig


@dataclass
class AudioResult:
    id: str
    source_sha256: str = ""
    issues: list[dict] = field(default_factory=list)
    duration: float = 0.0
    """Seconds after trimming."""
    source_seconds: float = 0.0
    n_frames: int = 0
    audio_hash: str = ""
    source_sr: int = 0
    channels: int = 0
    snr_db: float = float("nan")
    loudness_lufs: float = float("nan")
    """Integrated loudness of the trimmed audio before normalization."""
    wav_size: int = 0
    feature_size: int = 0
    reused: bool = False

    @property
    def ok(self) -> bool:
        return not any(Issue.from_dict(i).is_error for i in self.issues)


@dataclass
class PrepareResult:
    root: Path
    format: str
    n_items: int
    n_kept: int
    n_quarantined: int
    n_train: int
    n_val: int
    hours: float
    speakers: list[str]
    reasons: dict[str, int]
    warnings: dict[str, int]
    n_reused: int
    audio_seconds: float
    """Seconds of source audio decoded by this run (reused utterances count zero)."""
    elapsed: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of 'read', 'audio' (worker start-up and the text stage overlap it) and 'write'."""


# ---------------------------------------------------------------- audio stage (runs in workers)

def _job_key(job: AudioJob, source_sha: str) -> str:
    qc = {k: v for k, v in asdict(job.qc_cfg).items() if k != "rate_outlier_factor"}  # dataset-level only
    blob = json.dumps({"prepare": PREPARE_VERSION, "features": FEATURE_VERSION, "audio": asdict(job.audio_cfg),
                       "qc": qc, "source": source_sha, "out": job.rel_wav}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _reusable(job: AudioJob, key: str) -> AudioResult | None:
    """The finished result of an earlier run, when its key matches and its outputs are intact."""
    try:
        data = json.loads(Path(job.marker).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    try:
        res = AudioResult(**data["result"])
    except TypeError:
        return None
    if res.ok:
        feat = cache_path(job.root, job.audio_cfg, res.audio_hash)
        # Sizes catch a deleted or truncated output; a full re-hash would cost as much as redoing it.
        try:
            if os.path.getsize(job.out_wav) != res.wav_size or os.path.getsize(feat) != res.feature_size:
                return None
        except OSError:
            return None
    res.reused = True
    return res


def _trim(mono: np.ndarray, sr: int, qc: QCConfig, vad_model) -> np.ndarray:
    from voicetrain.audio.trim import trim_energy, trim_silero

    if qc.vad == "silero":
        return trim_silero(mono, sr, model=vad_model)
    return trim_energy(mono, sr, top_db=qc.trim_top_db)


@dataclass
class Assessment:
    """What the per-utterance audio checks found (see :func:`assess_audio`)."""

    issues: list[Issue]
    trimmed: np.ndarray | None
    """Mono audio at the target rate, silence trimmed; None after a fatal source finding (silence, NaN, ...)."""
    snr_db: float = float("nan")
    duration: float = 0.0
    """Seconds after trimming."""
    lead_seconds: float = 0.0
    """Silence trimmed from the start (energy trimming only; 0 with silero)."""
    trail_seconds: float = 0.0


_FATAL = (Reason.ZERO_LENGTH, Reason.SILENCE_ONLY, Reason.NON_FINITE, Reason.SAMPLE_RATE_TOO_LOW)


def assess_audio(audio: np.ndarray, sr: int, audio_cfg: AudioConfig, qc_cfg: QCConfig, where: str,
                 vad_model=None) -> Assessment:
    """The audio checks of one utterance, (channels, samples) decoded at ``sr``: the source checks, then mono,
    resampling, SNR, silence trimming and the duration checks. ``prepare`` and ``voicetrain studio`` (each
    take as it is recorded) both call this, so a take judged good in the studio is kept by prepare."""
    from voicetrain.audio.io import resample, to_mono
    from voicetrain.audio.trim import energy_bounds

    issues = check_source(audio, sr, audio_cfg.sample_rate, qc_cfg, where)
    if any(i.is_error and i.code in _FATAL for i in issues):
        return Assessment(issues, None)
    target = audio_cfg.sample_rate
    if any(i.code == Reason.DC_OFFSET for i in issues):  # only then: a clean file's samples stay untouched
        audio = remove_dc(audio)
    mono = resample(to_mono(audio), sr, target)
    snr_db = estimate_snr_db(mono, target)
    lead = trail = 0.0
    if qc_cfg.vad == "silero":
        trimmed = _trim(mono, target, qc_cfg, vad_model)
    else:
        start, end = energy_bounds(mono, target, qc_cfg.trim_top_db)
        trimmed = mono[start:end]
        lead, trail = start / target, (len(mono) - end) / target
    duration = len(trimmed) / target
    issues += check_trimmed(duration, snr_db, qc_cfg, where)
    return Assessment(issues, trimmed, snr_db, duration, lead, trail)


def process_audio(job: AudioJob, vad_model=None) -> AudioResult:
    """Decode, check, normalize and featurize one utterance; write its wav, features and done marker."""
    import soundfile as sf

    from voicetrain.audio.features import extract_features
    from voicetrain.audio.io import AudioReadError, integrated_loudness, load_audio, loudness_normalize, save_wav

    src = Path(job.source)
    where = str(src)
    res = AudioResult(job.id)
    try:
        size = src.stat().st_size
    except OSError as e:
        res.issues.append(Issue(Reason.AUDIO_MISSING, f"{where}: cannot read ({e.strerror})").to_dict())
        return res
    res.source_sha256 = sha256_file(src)
    key = _job_key(job, res.source_sha256)
    cached = _reusable(job, key)
    if cached is not None:
        return cached

    def finish() -> AudioResult:
        atomic_write_text(job.marker, json.dumps({"key": key, "result": asdict(res)}))
        return res

    if size == 0:
        res.issues.append(Issue(Reason.ZERO_LENGTH, f"{where}: the file is empty (0 bytes); re-export the recording").to_dict())
        return finish()
    header = _header_problem(src, job, where)
    if header is not None:
        res.issues.append(header.to_dict())
        return finish()
    try:
        audio, sr = load_audio(src)
    except AudioReadError as e:
        res.issues.append(Issue(Reason.UNREADABLE, f"{e}; the file is corrupt or not audio: re-export it").to_dict())
        return finish()
    res.source_sr, res.channels = sr, int(audio.shape[0])
    res.source_seconds = audio.shape[1] / sr if sr else 0.0
    a = assess_audio(audio, sr, job.audio_cfg, job.qc_cfg, where, vad_model)
    res.issues += [i.to_dict() for i in a.issues]
    if a.trimmed is None:
        return finish()
    target = job.audio_cfg.sample_rate
    trimmed = a.trimmed
    res.snr_db, res.duration = a.snr_db, a.duration
    res.loudness_lufs = integrated_loudness(trimmed, target)
    if not res.ok:
        return finish()

    save_wav(job.out_wav, loudness_normalize(trimmed, target, job.qc_cfg.target_lufs), target)
    # Hash and featurize exactly the samples the wav holds (after 16-bit quantization),
    # so anyone re-reading the wav gets the same cache key and features.
    samples, _ = sf.read(job.out_wav, dtype="float32")
    res.audio_hash = audio_hash(samples)
    feats = extract_features(samples, job.audio_cfg)
    feat_path = cache_path(job.root, job.audio_cfg, res.audio_hash)
    save_features(feat_path, feats)
    res.n_frames = int(feats["mel"].shape[1])
    res.wav_size = os.path.getsize(job.out_wav)
    res.feature_size = os.path.getsize(feat_path)
    return finish()


def _header_problem(src: Path, job, where: str) -> Issue | None:
    """What the file's header alone says is wrong, before decoding a byte of audio.

    A header may claim hours of audio or a 1 Hz rate (a 22,050x resample): decoding such a file
    takes gigabytes. Formats soundfile cannot read (mp3 through ffmpeg) are checked after decoding.
    """
    import soundfile as sf

    try:
        info = sf.info(str(src))
    except Exception:  # noqa: BLE001 - not a format soundfile knows: load_audio decides
        return None
    if info.samplerate < MIN_SOURCE_RATE:
        return Issue(Reason.SAMPLE_RATE_TOO_LOW, f"{where}: the header says {info.samplerate} Hz, below "
                                                 f"{MIN_SOURCE_RATE} Hz; record at {job.audio_cfg.sample_rate} Hz")
    limit = 4 * job.qc_cfg.max_seconds + 60
    if info.duration > limit:
        return Issue(Reason.TOO_LONG, f"{where}: the header says {info.duration:.0f} s of audio, far over the "
                                      f"{job.qc_cfg.max_seconds} s limit (--max-seconds); split the recording "
                                      "into sentences (not decoded)")
    return None


def _load_vad(qc: QCConfig):
    if qc.vad != "silero":
        return None
    from voicetrain.audio.trim import load_silero_model

    return load_silero_model()


def process_chunk(jobs: list[AudioJob]) -> list[AudioResult]:
    """A few utterances per task: amortizes IPC and the silero model load over the chunk."""
    vad_model = _load_vad(jobs[0].qc_cfg) if jobs else None
    return [process_audio(j, vad_model) for j in jobs]


def _run_audio_stage(jobs: list[AudioJob], workers: int, progress: bool,
                     meanwhile: Callable[[], T] = lambda: None) -> tuple[dict[str, AudioResult], T]:
    """Process ``jobs``; ``meanwhile`` runs in this process while the workers start and work.

    Returns the results by id and what ``meanwhile`` returned.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    results: dict[str, AudioResult] = {}
    # refreshed on each update, no refresh thread: both cores are busy with the workers
    bar = Progress(TextColumn("audio"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), TextColumn("{task.fields[speed]}"), console=Console(stderr=True),
                   auto_refresh=False, disable=not progress)
    task = bar.add_task("audio", total=len(jobs), speed="")
    bar.start()
    audio_seconds = 0.0

    def done(chunk_results: list[AudioResult]) -> None:
        nonlocal audio_seconds
        for r in chunk_results:
            results[r.id] = r
            audio_seconds += 0.0 if r.reused else r.source_seconds
        elapsed = bar.tasks[0].elapsed or 0.0
        bar.update(task, advance=len(chunk_results), refresh=True,
                   speed=f"{audio_seconds / elapsed:.0f}x real time" if elapsed > 0 else "")

    try:
        if workers <= 1 or len(jobs) < MIN_JOBS_FOR_POOL or not main_is_importable():
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # small STFTs: one thread is faster than two here
            try:
                side = meanwhile()
                vad_model = _load_vad(jobs[0].qc_cfg) if jobs else None
                for j in jobs:
                    done([process_audio(j, vad_model)])
            finally:
                torch.set_num_threads(threads)
        else:
            size = max(1, min(8, math.ceil(len(jobs) / (workers * 8))))
            side = run_chunks(process_chunk, [jobs[i:i + size] for i in range(0, len(jobs), size)], workers,
                              _PRELOAD, done, meanwhile)
    finally:
        bar.stop()
    return results, side


# ---------------------------------------------------------------- text stage

@dataclass
class _TextResult:
    normalized: str = ""
    phonemes: str = ""
    issues: list[Issue] = field(default_factory=list)


def _text_stage(items: list[SourceItem], phonemizer: Phonemizer) -> dict[str, _TextResult]:
    from voicetrain.text.normalize import normalize_text

    out: dict[str, _TextResult] = {}
    todo: list[str] = []
    for it in items:
        r = _TextResult()
        out[it.id] = r
        if it.text is None:
            continue
        try:
            r.normalized = normalize_text(it.text)
        except Exception as e:  # noqa: BLE001 - num2words raises several types on odd numbers
            r.issues.append(Issue(Reason.NO_PHONEMES, f"{it.audio}: cannot normalize transcript {it.text[:40]!r} ({e}); "
                                                      "write numbers as words"))
            continue
        todo.append(it.id)
    if todo:
        phon = phonemizer([out[i].normalized for i in todo])
        for uid, p in zip(todo, phon):
            out[uid].phonemes = p
    by_id = {it.id: it for it in items}
    for uid in todo:
        r = out[uid]
        if count_phones(r.phonemes) == 0:
            r.issues.append(Issue(Reason.NO_PHONEMES, f"{by_id[uid].audio}: transcript {by_id[uid].text[:40]!r} has "
                                                      "nothing speakable after normalization; fix the transcript"))
    return out


# ---------------------------------------------------------------- split

def split_items(durations: dict[str, list[tuple[str, float]]], val_fraction: float, seed: int) -> set[str]:
    """Validation ids: per speaker, every k-th utterance in order of duration, from a seeded offset.

    Spreading over lengths keeps validation representative (not only short clips).
    A speaker with at least 2 utterances gets at least 1 validation item, and always
    keeps at least 1 for training.
    """
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for spk in sorted(durations):
        items = sorted(durations[spk], key=lambda x: (x[1], x[0]))
        n = len(items)
        n_val = round(n * val_fraction)
        if val_fraction > 0 and n >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, n - 1) if n >= 2 else 0
        if n_val <= 0:
            continue
        offset = float(rng.uniform(0.0, 1.0))
        for k in range(n_val):
            val.add(items[min(n - 1, int((k + offset) * n / n_val))][0])
    return val


# ---------------------------------------------------------------- qc.json

def _num(x: float, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def write_qc_json(path: Path, corpus: Corpus, cfg: PrepareConfig, issues: dict[str, list[Issue]],
                  audio: dict[str, AudioResult], val_ids: set[str]) -> None:
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


# ---------------------------------------------------------------- orchestration

def _check_paths(src: Path, out: Path) -> None:
    s, o = src.resolve(), out.resolve()
    if s == o or s in o.parents or o in s.parents:
        raise PrepareError(f"--out {out} overlaps the input {src}; write the dataset to a separate folder "
                           "(prepare must never write next to, or prune, your recordings)")
    if o.exists() and not o.is_dir():
        raise PrepareError(f"--out {out} is a file; pass a folder")
    if o.is_dir() and any(o.iterdir()) and not (o / WORK_DIR).is_dir() and not (o / "dataset.yaml").exists():
        raise PrepareError(f"--out {out} is a non-empty folder that is not a voicetrain dataset; pick an empty or new folder")


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Run every stage; see the module docstring. Raises CorpusFormatError or PrepareError with a fix."""
    t0 = time.perf_counter()
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise PrepareError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.qc.vad not in ("energy", "silero"):
        raise PrepareError(f"--vad must be 'energy' or 'silero', got {cfg.qc.vad!r}")
    src = Path(cfg.input)
    if not src.exists():
        raise CorpusFormatError(f"input {src} does not exist; pass the folder holding your recordings")
    root = Path(cfg.out)
    _check_paths(src, root)
    # Absolute source paths in the manifest and qc.json stay valid from any working directory.
    corpus = read_corpus(src.resolve(), cfg.format)
    root.mkdir(parents=True, exist_ok=True)
    (root / WORK_DIR).mkdir(exist_ok=True)

    # A bad --language must fail before minutes of audio work, not after.
    phonemizer = Phonemizer(cfg.text.language, cfg.text.phonemizer)
    phonemizer(["a"])

    # Audio does not depend on phonemes: the text stage runs in this process while the
    # audio workers start. Only transcript problems the reader already found skip audio.
    jobs = [AudioJob(it.id, str(it.audio), str(root / "wavs" / it.speaker / f"{it.id}.wav"),
                     f"wavs/{it.speaker}/{it.id}.wav", str(root), str(root / WORK_DIR / "done" / f"{it.id}.json"),
                     cfg.audio, cfg.qc)
            for it in corpus.items if it.audio is not None and not any(i.is_error for i in it.issues)]

    def text_and_imports() -> dict[str, _TextResult]:
        text = _text_stage(corpus.items, phonemizer)
        import matplotlib.backends.backend_agg  # noqa: F401 - the report needs it; importing takes ~1 s
        import matplotlib.figure  # noqa: F401

        return text

    t_read = time.perf_counter()
    audio, text = _run_audio_stage(jobs, max(1, cfg.workers), cfg.progress, text_and_imports)
    t_audio = time.perf_counter()
    issues: dict[str, list[Issue]] = {it.id: list(it.issues) + text[it.id].issues for it in corpus.items}
    for uid, r in audio.items():
        issues[uid] += [Issue.from_dict(d) for d in r.issues]

    def ok(uid: str) -> bool:
        return not any(i.is_error for i in issues[uid])

    by_id = {it.id: it for it in corpus.items}
    cands = sorted(uid for uid in audio if ok(uid))
    for uid, issue in duplicates([(u, audio[u].audio_hash, str(by_id[u].audio)) for u in cands]).items():
        issues[uid].append(issue)
    rate_items = [RateItem(u, by_id[u].speaker, count_phones(text[u].phonemes), audio[u].duration, str(by_id[u].audio))
                  for u in cands if ok(u)]
    for uid, issue in rate_outliers(rate_items, cfg.qc.rate_outlier_factor).items():
        issues[uid].append(issue)
    kept = [u for u in cands if ok(u)]

    per_spk: dict[str, list[tuple[str, float]]] = {}
    for u in kept:
        per_spk.setdefault(by_id[u].speaker, []).append((u, audio[u].duration))
    val_ids = split_items(per_spk, cfg.val_fraction, cfg.seed)

    utts = {u: Utterance(id=u, speaker=by_id[u].speaker, audio=f"wavs/{by_id[u].speaker}/{u}.wav",
                         text=by_id[u].text or "", normalized=text[u].normalized, phonemes=text[u].phonemes,
                         duration=round(audio[u].duration, 4), audio_hash=audio[u].audio_hash,
                         n_frames=audio[u].n_frames, source=str(by_id[u].audio)) for u in kept}
    train = [utts[u] for u in kept if u not in val_ids]
    val = [utts[u] for u in kept if u in val_ids]

    # From here on the old dataset is being replaced: without dataset.yaml it does not
    # count as prepared until every file below is written.
    (root / "dataset.yaml").unlink(missing_ok=True)
    from voicetrain.data.report import write_report

    write_qc_json(root / "qc.json", corpus, cfg, issues, audio, val_ids)
    write_report(root, corpus, issues, utts, {u: audio[u].loudness_lufs for u in utts})
    if not train:
        raise PrepareError(f"no usable utterances in {src} ({len(corpus.items)} found, all quarantined); "
                           f"see the reasons in {root / 'qc.json'} and {root / 'report.html'}")

    from voicetrain.text.symbols import SymbolTable

    SymbolTable.build([u.phonemes for u in utts.values()]).save(root / "symbols.json")
    FeatureStats.compute([(u.speaker, load_features(cache_path(root, cfg.audio, u.audio_hash)))
                          for u in train]).save(root / "stats.json")
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "val.jsonl", val)
    # Coqui's ljspeech formatter reads wavs/<col 1>.wav, so SPEAKER/ID keeps this file loadable there.
    meta = [f"{u.speaker}/{u.id}|{_csv(u.text)}|{_csv(u.normalized)}" for u in sorted(utts.values(), key=lambda x: x.id)]
    atomic_write_text(root / "metadata.csv", "\n".join(meta) + "\n")
    # Wavs of items quarantined only at dataset level (duplicates, rate outliers) stay,
    # so a re-run reuses them and a listener can inspect them.
    _prune_stale_wavs(root, {j.rel_wav for j in jobs if audio[j.id].ok})

    speakers = sorted({u.speaker for u in utts.values()})
    hours = sum(u.duration for u in utts.values()) / 3600.0
    ds = PreparedDataset(root, DatasetInfo(audio=cfg.audio, text=cfg.text, qc=cfg.qc, speakers=speakers,
                                           source=str(src.resolve()), format=corpus.format,
                                           n_train=len(train), n_val=len(val), hours=round(hours, 4)))
    ds.save_info()

    reasons: dict[str, int] = {}
    warnings: dict[str, int] = {}
    for uid, lst in issues.items():
        for code in sorted({i.code.value for i in lst if i.is_error}):
            reasons[code] = reasons.get(code, 0) + 1
        for code in sorted({i.code.value for i in lst if not i.is_error}):
            warnings[code] = warnings.get(code, 0) + 1
    return PrepareResult(root=root, format=corpus.format, n_items=len(corpus.items), n_kept=len(kept),
                         n_quarantined=len(corpus.items) - len(kept), n_train=len(train), n_val=len(val),
                         hours=hours, speakers=speakers, reasons=reasons, warnings=warnings,
                         n_reused=sum(r.reused for r in audio.values()),
                         audio_seconds=sum(r.source_seconds for r in audio.values() if not r.reused),
                         elapsed=time.perf_counter() - t0,
                         stage_seconds={"read": round(t_read - t0, 3), "audio": round(t_audio - t_read, 3),
                                        "write": round(time.perf_counter() - t_audio, 3)})


def _csv(s: str) -> str:
    return " ".join(s.replace("|", " ").split())


def _prune_stale_wavs(root: Path, keep: set[str]) -> None:
    """Remove prepared wavs of utterances no longer in the corpus or failing QC (our outputs only, never sources)."""
    wavs = root / "wavs"
    if not wavs.is_dir():
        return
    for p in wavs.rglob("*.wav"):
        if p.relative_to(root).as_posix() not in keep:
            p.unlink()
