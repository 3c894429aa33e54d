"""Fine-tuning vs training from scratch at the same wall-clock budget; one JSON line per run.

Set-up (cached under --work, re-runs reuse it):
  (a) a multi-speaker base: the 9-voice synthetic demo corpus (`--voices multi`), prepared,
      trained for --base-minutes (or --base RUN: an existing base run, e.g. from
      recipes/base_model_cpu.sh);
  (b) the held-out voice, flite slt (never in the base corpus), --target-utterances ARCTIC
      prompts (~3 minutes of audio at 60), prepared with the same settings.
Runs (recreated each time), each with the SAME wall-clock budget --minutes and --threads:
  speaker-embedding, freeze-encoder, full (`voicetrain.training.finetune.finetune` from the
  base), and scratch (`voicetrain.training.train.train` on the slt dataset, default RunConfig;
  only the budget, thread count and validation cadence are set). No early stopping: every run
  spends the whole budget; the run's best checkpoint by validation loss is evaluated.
Figures per run (one JSON line each):
  speaker_similarity   resemblyzer cosine of the synthesized held-out sentences to the mean
                       embedding of real slt recordings (the slt dataset's training wavs),
                       averaged over sentences;
  nearest_base_voice / similarity_to_nearest_base
                       the base voice whose centroid (its training wavs) the synthesized
                       sentences are closest to on average, and that cosine;
  target_nearest_rate  share of sentences whose nearest centroid (slt or a base voice) is slt;
  cer                  pocketsphinx CER of --sentences held-out Harvard sentences;
  val_loss (final), best_val_loss, steps, trainable_parameters, train_wall_s.
Ceilings in every line: real_cer and real_speaker_similarity of flite slt itself speaking the
same Harvard sentences.

    .venv/bin/python bench/finetune.py [--base-minutes 10] [--minutes 3] [--threads 2]
    .venv/bin/python bench/finetune.py --base work/base-cpu/run --minutes 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("speaker-embedding", "freeze-encoder", "full")
TARGET_VOICE = "slt"


def log(msg: str) -> None:
    print(f"[bench/finetune] {msg}", file=sys.stderr, flush=True)


def ensure_prepared(corpus: Path, dataset: Path, voices: list[str], utterances: int, seed: int) -> Path:
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    if not (dataset / "dataset.yaml").exists():
        make_demo_corpus(corpus, voices, utterances=utterances, seed=seed)
        prepare(PrepareConfig(input=str(corpus), out=str(dataset), workers=2))
    return dataset


def ensure_base(args, work: Path) -> tuple[Path, Path, float | None]:
    """(base run, base dataset, base training seconds or None when reused)."""
    import yaml

    from voicetrain.run_config import RunConfig, TrainConfig
    from voicetrain.training.train import train

    if args.base:
        run = Path(args.base)
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        return run, Path(cfg["dataset"]), None
    root = work / f"base-multi{args.base_utterances}"
    ds = ensure_prepared(root / "corpus", root / "dataset", ["multi"], args.base_utterances, 0)
    run = root / f"run-{args.base_minutes:g}min"
    if (run / "result.json").exists():
        log(f"reusing base run {run}")
        return run, ds, None
    shutil.rmtree(run, ignore_errors=True)
    log(f"training the base for {args.base_minutes} min into {run}")
    cfg = RunConfig(train=TrainConfig(max_steps=10_000_000, max_minutes=args.base_minutes, threads=args.threads,
                                      val_every_steps=args.val_every * 4, checkpoint_every_steps=args.val_every * 4))
    t0 = time.time()
    train(ds, run, cfg)
    return run, ds, time.time() - t0


def harvard(n: int) -> list[tuple[str, str]]:
    from voicetrain.evaluation.evaluate_run import HARVARD, read_texts

    return read_texts(HARVARD)[:n]


def real_target(work: Path, sentences) -> dict[str, tuple[np.ndarray, int]]:
    """flite slt speaking the held-out sentences: the ceiling for CER and similarity."""
    import soundfile as sf

    out = work / f"harvard_{TARGET_VOICE}"
    out.mkdir(parents=True, exist_ok=True)
    audio = {}
    for sid, text in sentences:
        p = out / f"{sid}.wav"
        if not p.exists():
            subprocess.run(["flite", "-voice", TARGET_VOICE, "-t", text, "-o", str(p)], check=True)
        a, sr = sf.read(p, dtype="float32")
        audio[sid] = (a, sr)
    return audio


def centroids(ev, ds_dir: Path, per_speaker: int) -> dict[str, np.ndarray]:
    from voicetrain.audio.io import load_audio, to_mono
    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.evaluate_run import _spread
    from voicetrain.evaluation.metrics import mean_embedding

    ds = PreparedDataset.open(ds_dir)
    by: dict[str, list] = {}
    for u in ds.manifest("train"):
        by.setdefault(u.speaker, []).append(u)
    out = {}
    for spk, us in sorted(by.items()):
        embs = []
        for u in _spread(sorted(us, key=lambda u: u.id), per_speaker):
            a, sr = load_audio(ds.root / u.audio)
            embs.append(ev.speaker_encoder.embed(to_mono(a), sr))
        out[spk] = mean_embedding(embs)
    return out


def score(ev, wavs: list[tuple[str, np.ndarray, int]], sentences: dict[str, str], target: np.ndarray,
          base: dict[str, np.ndarray]) -> dict:
    from voicetrain.evaluation.metrics import cosine_similarity, error_rates

    cers, sims, nearest_target = [], [], []
    base_sims = {k: [] for k in base}
    for sid, wav, sr in wavs:
        cers.append(error_rates(sentences[sid], ev.pocketsphinx.transcribe(wav, sr)).cer)
        emb = ev.speaker_encoder.embed(wav, sr)
        s = cosine_similarity(emb, target)
        sims.append(s)
        bs = {k: cosine_similarity(emb, c) for k, c in base.items()}
        for k, v in bs.items():
            base_sims[k].append(v)
        nearest_target.append(s > max(bs.values(), default=-1.0))
    means = {k: float(np.mean(v)) for k, v in base_sims.items() if v}
    nearest = max(means, key=means.get) if means else None
    return {"cer": round(float(np.mean(cers)), 4), "speaker_similarity": round(float(np.mean(sims)), 4),
            "nearest_base_voice": nearest,
            "similarity_to_nearest_base": round(means[nearest], 4) if nearest else None,
            "target_nearest_rate": round(float(np.mean(nearest_target)), 3)}


def best_val_loss(run: Path) -> float | None:
    from voicetrain.evaluation.history import read_metrics_csv

    vals = [r["val/loss"] for r in read_metrics_csv(run / "metrics.csv") if "val/loss" in r]
    return round(min(vals), 4) if vals else None


def _train_one(name: str, run: Path, args, base_run: Path, target_ds: Path, snaps: list[float]):
    """Train one run under the shared budget; returns (RunResult, trainable parameter count)."""
    from voicetrain.inference.checkpoint import find_checkpoint, load_model
    from voicetrain.run_config import RunConfig
    from voicetrain.training.finetune import FinetuneConfig, finetune
    from voicetrain.training.train import train

    if name == "scratch":
        d = RunConfig()  # the defaults; only the budget, threads and validation cadence are set
        cfg = dataclasses.replace(d, train=dataclasses.replace(
            d.train, max_steps=10_000_000, max_minutes=args.minutes, threads=args.threads,
            val_every_steps=args.val_every, checkpoint_every_steps=args.val_every,
            sample_every_steps=args.val_every * 5, snapshot_minutes=snaps))
        res = train(target_ds, run, cfg)
        model = load_model(find_checkpoint(run, "last")).model
        return res, sum(p.numel() for p in model.parameters())
    res = finetune(target_ds, base_run, run, FinetuneConfig(
        strategy=name, max_steps=10_000_000, max_minutes=args.minutes, threads=args.threads,
        val_every_steps=args.val_every, early_stopping_patience=0, snapshot_minutes=snaps))
    return res, sum(res.extra["trainable_parameters"].values())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/voicetrain-bench-finetune")
    ap.add_argument("--base", default=None, help="An existing base RUN folder (skips building the base).")
    ap.add_argument("--base-minutes", type=float, default=10.0, help="Base training budget (cached per value).")
    ap.add_argument("--base-utterances", type=int, default=60, help="ARCTIC prompts per base voice.")
    ap.add_argument("--target-utterances", type=int, default=60, help="slt prompts (~3 min of audio at 60).")
    ap.add_argument("--minutes", type=float, default=3.0, help="Wall-clock budget of EACH run.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-every", type=int, default=20, help="Validate (and checkpoint) every N steps.")
    ap.add_argument("--sentences", type=int, default=10, help="Held-out Harvard sentences to score.")
    ap.add_argument("--runs", default="speaker-embedding,freeze-encoder,full,scratch")
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                    help="Also write a `voicetrain compare` report of the runs to WORK/compare-Mmin.")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in (*STRATEGIES, "scratch")]
    if unknown:
        ap.error(f"--runs: unknown {unknown}; choose from {', '.join(STRATEGIES)}, scratch")

    import torch

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.models import Evaluator, torch_threads
    from voicetrain.inference.checkpoint import find_checkpoint
    from voicetrain.inference.synthesizer import Synthesizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    base_run, base_ds, base_train_s = ensure_base(args, work)
    troot = work / f"target-{TARGET_VOICE}{args.target_utterances}"
    target_ds = ensure_prepared(troot / TARGET_VOICE, troot / "dataset", [f"flite:{TARGET_VOICE}"],
                                args.target_utterances, 0)
    tds = PreparedDataset.open(target_ds)
    train_s = sum(u.duration for u in tds.manifest("train"))
    val_s = sum(u.duration for u in tds.manifest("val"))
    speaker = (tds.info.speakers or [TARGET_VOICE])[0]
    import soundfile as sf

    source_s = sum(sf.info(str(p)).duration for p in (troot / TARGET_VOICE).rglob("*.wav"))
    base_result = json.loads((base_run / "result.json").read_text()) if (base_run / "result.json").exists() else {}

    runs_root = work / f"runs-{args.minutes:g}min"
    results = {}
    for name in names:
        run = runs_root / name
        shutil.rmtree(run, ignore_errors=True)
        snaps = [round(args.minutes / 2, 4)]
        log(f"{name}: {args.minutes} min budget -> {run}")
        t0 = time.time()
        # Lightning's progress bar writes to stdout; keep stdout for the JSON lines
        with contextlib.redirect_stdout(sys.stderr):
            res, trainable = _train_one(name, run, args, base_run, target_ds, snaps)
        results[name] = (run, res, trainable, time.time() - t0)

    # ---- evaluation (not part of any budget)
    torch.set_num_threads(args.threads)
    ev = Evaluator()
    sentences = harvard(args.sentences)
    texts = dict(sentences)
    real = real_target(work, sentences)
    target_c = centroids(ev, target_ds, 20)[speaker]
    base_c = centroids(ev, base_ds, 10)
    real_scores = score(ev, [(s, *real[s]) for s, _ in sentences], texts, target_c, base_c)
    for name, (run, res, trainable, total_s) in results.items():
        ck = find_checkpoint(run, "best")
        synth = Synthesizer.from_checkpoint(ck)
        spk = speaker if speaker in synth.speakers else None
        wavs = []
        for sid, text in sentences:
            with torch_threads(1):
                wav, sr = synth.synthesize(text, spk)
            wavs.append((sid, wav, sr))
        line = {
            "bench": "finetune", "run": name, "strategy": name if name != "scratch" else "from scratch",
            **score(ev, wavs, texts, target_c, base_c),
            "val_loss": round(res.final_val_loss, 4) if res.final_val_loss is not None else None,
            "best_val_loss": best_val_loss(run), "steps": res.steps,
            "evaluated_checkpoint": ck.name, "trainable_parameters": trainable,
            "train_wall_s": round(res.wall_seconds, 1), "total_wall_s": round(total_s, 1),
            "stopped_because": res.stopped_because, "budget_min": args.minutes, "threads": args.threads,
            "real_cer": real_scores["cer"], "real_speaker_similarity": real_scores["speaker_similarity"],
            "held_out": f"{len(sentences)} Harvard sentences",
            "target_source_audio_s": round(source_s, 1), "target_train_audio_s": round(train_s, 1), "target_val_audio_s": round(val_s, 1),
            "base": str(base_run), "base_steps": base_result.get("steps"),
            "base_train_wall_s": round(base_result["wall_seconds"], 1) if base_result.get("wall_seconds") else None,
            "base_speakers": len(base_c),
            "base_trained_now_s": round(base_train_s, 1) if base_train_s is not None else None, "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_now": round(os.getloadavg()[0], 2), "machine": f"{os.cpu_count()} cpu",
            "run_dir": str(run),
        }
        print(json.dumps(line), flush=True)

    if args.compare and len(results) >= 2:
        from voicetrain.evaluation.compare import CompareConfig, compare_runs

        out = work / f"compare-{args.minutes:g}min"
        compare_runs(CompareConfig(runs=[str(r[0]) for r in results.values()], out=str(out), max_utterances=3,
                                   dnsmos=False, progress=False), evaluator=ev)
        log(f"compare report: {out / 'compare.html'}")


if __name__ == "__main__":
    sys.exit(main())
