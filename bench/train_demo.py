"""Train from scratch on the built-in single-voice demo corpus under a wall-clock cap; print one JSON line.

Figures: steps, steps/s, samples/s, peak RSS of training, final train/val loss, and the
intelligibility curve: pocketsphinx CER (and MCD-DTW against the real recordings) of 20
held-out Harvard sentences synthesized with the checkpoints kept at 1, 3, 5 and 15
minutes of training, next to the CER of the real recordings of the same sentences (the
demo voice, flite rms, speaking them).

    .venv/bin/python bench/train_demo.py [--minutes 15] [--model fastspeech2] [--threads 2]
    .venv/bin/python bench/train_demo.py --peer piper --minutes 3 --marks 3 --threads 1
        (side by side with Piper's own trainer in its own venv: bench/peer/side_by_side.py)

Corpus and dataset are cached under --work (default /tmp/voicetrain-bench); the run
folder is recreated each time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def load_avg() -> float:
    return os.getloadavg()[0]


def ensure_dataset(work: Path, utterances: int) -> Path:
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    corpus, ds = work / f"corpus{utterances}", work / f"dataset{utterances}"
    if not (ds / "dataset.yaml").exists():
        make_demo_corpus(corpus, ["flite:rms"], utterances=utterances, seed=0)
        prepare(PrepareConfig(input=str(corpus), out=str(ds)))
    return ds


def held_out_sentences(n: int) -> list[tuple[str, str]]:
    from importlib.resources import files

    rows = files("voicetrain.data").joinpath("prompts/harvard_sentences.tsv").read_text(encoding="utf-8").splitlines()
    pairs = [tuple(r.split("\t", 1)) for r in rows if "\t" in r]
    return pairs[:n]


def real_recordings(work: Path, sentences) -> dict[str, tuple[np.ndarray, int]]:
    """The demo voice (flite rms) speaking the held-out sentences: the ceiling for CER."""
    import soundfile as sf

    out = work / "harvard_rms"
    out.mkdir(parents=True, exist_ok=True)
    audio = {}
    for sid, text in sentences:
        p = out / f"{sid}.wav"
        if not p.exists():
            subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(p)], check=True)
        a, sr = sf.read(p, dtype="float32")
        audio[sid] = (a, sr)
    return audio


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--marks", default="1,3,5,15")
    ap.add_argument("--model", default="fastspeech2")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="0 = auto (measured before training)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--sentences", type=int, default=20)
    ap.add_argument("--work", default="/tmp/voicetrain-bench")
    ap.add_argument("--run", default=None, help="Run folder (default WORK/run-MODEL).")
    ap.add_argument("--model-config", default="{}", help="JSON overrides of the model config.")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--peer", choices=["piper"], default=None,
                    help="Also train the same corpus with this peer's own trainer and judge both alike.")
    ap.add_argument("--peer-venv", default=None, help="The peer's venv (default WORK/piper-venv; "
                    "bench/peer/setup_piper_venv.sh builds it).")
    args = ap.parse_args(argv)
    if args.peer:  # one line per system plus their ratios; without --peer this script is unchanged
        from peer.side_by_side import main as side_by_side
        return side_by_side(args)

    import torch

    from voicetrain.run_config import OptimConfig, RunConfig, TrainConfig
    from voicetrain.training.loop import peak_rss_mb
    from voicetrain.training.train import train

    work = Path(args.work)
    ds = ensure_dataset(work, args.utterances)
    run = Path(args.run or work / f"run-{args.model}")
    shutil.rmtree(run, ignore_errors=True)
    marks = [float(m) for m in args.marks.split(",") if float(m) <= args.minutes]
    optim = OptimConfig() if args.lr is None else OptimConfig(lr=args.lr)
    cfg = RunConfig(model=args.model, preset=args.preset, model_config=json.loads(args.model_config), optim=optim,
                    train=TrainConfig(batch_size=args.batch_size, max_steps=10_000_000, max_minutes=args.minutes,
                                      threads=args.threads, snapshot_minutes=marks, val_every_steps=200,
                                      checkpoint_every_steps=500, sample_every_steps=100_000))
    load_before = load_avg()
    t0 = time.time()
    result = train(ds, run, cfg)
    train_wall = time.time() - t0
    train_rss = peak_rss_mb()
    load_during = load_avg()

    # ---- evaluation (not timed as training)
    from voicetrain.evaluation.metrics import error_rates, reference_distance
    from voicetrain.evaluation.models import Evaluator
    from voicetrain.inference.synthesizer import Synthesizer

    torch.set_num_threads(1)  # synthesis is fastest on one thread (bench/synth.py)
    sentences = held_out_sentences(args.sentences)
    real = real_recordings(work, sentences)
    ev = Evaluator()
    real_cer = float(np.mean([error_rates(t, ev.pocketsphinx.transcribe(*real[s])).cer for s, t in sentences]))
    curve = []
    snaps = sorted(run.glob("checkpoints/time=*min-step=*.ckpt"),
                   key=lambda p: float(p.name.split("=")[1].split("min")[0]))
    for ck in snaps:
        synth = Synthesizer.from_checkpoint(ck)
        cers, mcds = [], []
        for sid, text in sentences:
            wav, sr = synth.synthesize(text)
            cers.append(error_rates(text, ev.pocketsphinx.transcribe(wav, sr)).cer)
            mcds.append(reference_distance(wav, sr, *real[sid]).mcd_db)
        minute = float(ck.name.split("=")[1].split("min")[0])
        step = int(ck.stem.split("step=")[1])
        curve.append({"minutes": minute, "step": step, "cer": round(float(np.mean(cers)), 4),
                      "cer_ratio_to_real": round(float(np.mean(cers)) / max(real_cer, 1e-6), 3),
                      "mcd_db": round(float(np.nanmean(mcds)), 3)})
    # validation loss at the marks, from metrics.csv (nearest validation at or before the snapshot step)
    import csv
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    for c in curve:
        before = [r for r in rows if int(r["step"]) <= c["step"]]
        c["val_loss"] = round(float(before[-1]["val/loss"]), 4) if before else None
        c["val_mel_l1"] = round(float(before[-1]["val/mel"]), 4) if before else None
    n_params = None
    try:
        from voicetrain.inference.checkpoint import load_model
        n_params = sum(p.numel() for p in load_model(snaps[-1]).model.parameters()) if snaps else None
    except Exception:  # noqa: BLE001
        pass
    ckpt_mb = round(max((p.stat().st_size for p in run.glob("checkpoints/*.ckpt")), default=0) / 1e6, 2)
    out = {
        "bench": "train_demo", "model": args.model, "preset": args.preset, "params": n_params,
        "threads": (result.estimate.threads if result.estimate else args.threads),
        "threads_measured_s_per_step": (result.estimate.measured if result.estimate else None), "batch_size": args.batch_size, "minutes_cap": args.minutes,
        "steps": result.steps, "train_wall_s": round(train_wall, 1),
        "steps_per_s": round(result.steps / result.wall_seconds, 3) if result.wall_seconds else None,
        "samples_per_s": round(result.samples_per_second, 2), "peak_rss_mb": round(train_rss, 1),
        "checkpoint_mb": ckpt_mb,
        "final_train_loss": result.final_train_loss, "final_val_loss": result.final_val_loss,
        "real_cer": round(real_cer, 4), "curve": curve, "held_out": f"{len(sentences)} Harvard sentences",
        "load_avg_before": round(load_before, 2), "load_avg_after_train": round(load_during, 2),
        "machine": f"{os.cpu_count()} cpu", "run": str(run),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
