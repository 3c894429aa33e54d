"""``bench/train_demo.py --peer piper``: voicetrain and Piper's own trainer, same corpus, minutes, threads, judge.

Runs, one after the other on the same cores:

1. voicetrain: ``bench/train_demo.py`` without ``--peer`` (its normal run, in a child process so
   its peak RSS is its own), then its wall-clock snapshots synthesized as that script does.
2. Piper: the same prepared corpus converted to Piper's CSV (:mod:`piper_layout`), its cache
   prepared untimed (as voicetrain's dataset is prepared before its clock starts), then
   ``piper.train fit`` with Lightning's ``max_time`` set to the same minutes, the same batch size,
   ``OMP_NUM_THREADS``/torch threads as voicetrain's, no data-loader workers (voicetrain uses none),
   in the peer's OWN venv (``--peer-venv``, built by ``bench/peer/setup_piper_venv.sh``). Its
   snapshots at the same minute marks are exported by Piper's ``piper.train.export_onnx`` (through
   ``piper_export.py``, which only pins torch 2.13's exporter to ``dynamo=False``) and spoken by the
   ``piper`` package.
3. One judge for both: Whisper tiny.en CER (voicetrain's Evaluator; pocketsphinx beside it) on the
   same held-out Harvard sentences, next to the real recordings of them.

Prints one JSON line per system, then one line of ratios (voicetrain / Piper): CER at each mark and
samples/s. Piper's defaults are kept (model 'medium', lr, validation every epoch with its sanity
check, its val_mel top-5 + last checkpoints, TensorBoard audio) except, each for a reason:
``--model.mos_metric none`` (its UTMOS predictor downloads weights through torch.hub at the first
validation, and nothing may be downloaded here; ``piper_fit.py`` then drops the val_mos checkpoint
callback, which would otherwise crash the first epoch's end), ``--data.num_workers 0`` (voicetrain
loads batches in its training process too), the batch size (voicetrain's, not Piper's documented 32).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from peer.piper_layout import to_piper_layout

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
DEFAULT_PEER_VENV = "piper-venv"
"""Under --work unless --peer-venv says otherwise."""


def max_time(minutes: float) -> str:
    """Lightning's ``max_time`` string DD:HH:MM:SS for a (possibly fractional) number of minutes."""
    s = int(round(minutes * 60))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def score(ev, sentences: list[tuple[str, str]], audio: dict[str, tuple[np.ndarray, int]]) -> dict:
    """Mean Whisper and pocketsphinx CER of ``audio`` (sentence id -> (samples, rate)) against the texts."""
    from voicetrain.evaluation.metrics import error_rates

    w, p = [], []
    for sid, text in sentences:
        a, sr = audio[sid]
        a = np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)
        w.append(error_rates(text, ev.whisper.transcribe(a, sr)).cer)
        p.append(error_rates(text, ev.pocketsphinx.transcribe(a, sr)).cer)
    return {"cer_whisper": round(float(np.mean(w)), 4), "cer_pocketsphinx": round(float(np.mean(p)), 4)}


def _curve_point(minutes: float, step: int, s: dict, real: dict) -> dict:
    return {"minutes": minutes, "step": step, **s,
            "cer_whisper_ratio_to_real": round(s["cer_whisper"] / max(real["cer_whisper"], 1e-6), 3)}


def run_voicetrain(args, work: Path, marks: list[float], sentences, real: dict, ev) -> dict:
    import torch

    from voicetrain.inference.synthesizer import Synthesizer

    run = work / "run-voicetrain-vs-peer"
    cmd = [sys.executable, str(BENCH / "train_demo.py"), "--minutes", str(args.minutes),
           "--marks", ",".join(f"{m:g}" for m in marks), "--model", args.model, "--preset", args.preset,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--utterances", str(args.utterances),
           "--sentences", str(args.sentences), "--work", str(work), "--run", str(run), "--voice", args.voice,
           "--model-config", args.model_config, *(["--lr", str(args.lr)] if args.lr is not None else [])]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    line = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][0])
    torch.set_num_threads(1)
    curve = []
    for c in line["curve"]:  # judged again here by the same code as the peer's (train_demo's own judge agrees)
        ck = next(run.glob(f"checkpoints/time={c['minutes']:g}min-step=*.ckpt"))
        synth = Synthesizer.from_checkpoint(ck)
        audio = {sid: synth.synthesize(text) for sid, text in sentences}
        curve.append(_curve_point(c["minutes"], c["step"], score(ev, sentences, audio), real))
    return {"system": "voicetrain", "model": f"{args.model} ({args.preset} preset)", "params": line.get("params"),
            "samples_per_s_whole_run": line.get("samples_per_s_whole_run"), "run_mb": line.get("run_mb"),
            "precision": line.get("precision"),
            "threads": line.get("threads"), "batch_size": args.batch_size, "minutes_cap": args.minutes,
            "steps": line["steps"], "train_wall_s": line["train_wall_s"], "samples_per_s": line["samples_per_s"],
            "peak_rss_mb": line["peak_rss_mb"], "curve": curve, "load_avg_before": round(load_before, 2),
            "load_avg_after_train": line.get("load_avg_after_train"), "run": str(run)}


def run_piper(args, work: Path, ds: Path, marks: list[float], sentences, real: dict, ev) -> dict:
    import soundfile as sf

    venv = Path(args.peer_venv) if args.peer_venv else work / DEFAULT_PEER_VENV
    py = venv / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"no peer venv at {venv}: run `bash bench/peer/setup_piper_venv.sh {venv}` first "
                         "(or pass --peer-venv)")
    root = work / "piper"
    layout = to_piper_layout(ds, root / "corpus")
    run = root / "run"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run folder each time, as train_demo's
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    common = [*layout.fit_args(), "--data.voice_name", "demo", "--data.cache_dir", str(root / "cache"),
              "--data.config_path", str(run / "config.json"), "--data.batch_size", str(args.batch_size),
              "--data.num_workers", "0", "--model.mos_metric", "none",
              "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.default_root_dir", str(run)]
    runner = str(HERE / "piper_fit.py")
    # the peer's own output goes to stderr: stdout holds only the JSON lines
    subprocess.run([str(py), runner, "--prepare-only", "--threads", str(args.threads), *common], check=True, env=env,
                   stdout=sys.stderr)
    progress = run / "progress.json"
    load_before = os.getloadavg()[0]
    t0 = time.time()
    subprocess.run([str(py), runner, "--snapshots", str(run / "snapshots"), "--marks", ",".join(f"{m:g}" for m in marks),
                    "--progress", str(progress), "--threads", str(args.threads), *common,
                    "--trainer.max_time", max_time(args.minutes)], check=True, env=env, stdout=sys.stderr)
    process_wall = time.time() - t0
    load_after = os.getloadavg()[0]
    prog = json.loads(progress.read_text())
    tsv = root / "held_out.tsv"
    tsv.write_text("".join(f"{sid}\t{text}\n" for sid, text in sentences), encoding="utf-8")
    curve = []
    for snap in prog["snapshots"]:
        onnx = run / "voices" / f"time={snap['minutes']:g}min.onnx"
        subprocess.run([str(py), str(HERE / "piper_export.py"), "--checkpoint", snap["checkpoint"],
                        "--output-file", str(onnx)], check=True, env=env, stdout=sys.stderr)
        Path(f"{onnx}.json").write_text((run / "config.json").read_text())
        wavs = run / "wavs" / f"time={snap['minutes']:g}min"
        subprocess.run([str(py), str(HERE / "piper_speak.py"), "--voice", str(onnx), "--sentences", str(tsv),
                        "--out", str(wavs)], check=True, env=env, stdout=sys.stderr)
        audio = {sid: sf.read(wavs / f"{sid}.wav", dtype="float32") for sid, _ in sentences}
        curve.append(_curve_point(snap["minutes"], snap["batches"], score(ev, sentences, audio), real))
    fit_s = prog["fit_seconds"] or prog["train_seconds"]
    return {"system": "piper", "model": "piper-tts[train] 1.8.0 VITS (defaults: medium)", "params": prog.get("params"),
            "threads": args.threads, "batch_size": args.batch_size, "minutes_cap": args.minutes,
            "steps": prog["batches"], "train_wall_s": round(fit_s, 1),
            "samples_per_s": round(prog["batches"] * args.batch_size / fit_s, 2) if fit_s else None,
            # over Lightning's max_time clock only (from on_train_start): without Piper's default sanity check
            "samples_per_s_training_clock": round(prog["batches"] * args.batch_size / prog["train_seconds"], 2),
            "peak_rss_mb": prog["peak_rss_mb"], "curve": curve, "process_wall_s": round(process_wall, 1),
            "corpus_utterances": layout.n_utterances, "load_avg_before": round(load_before, 2),
            "load_avg_after_train": round(load_after, 2), "run": str(run)}


def ratios(vt: dict, peer: dict) -> dict:
    """voicetrain / Piper: CER at each shared mark (below 1 = voicetrain more intelligible), samples/s."""
    out = {"bench": "train_demo_peer_ratio", "peer": peer["system"], "minutes_cap": vt["minutes_cap"]}
    theirs = {c["minutes"]: c for c in peer["curve"]}
    for c in vt["curve"]:
        if c["minutes"] in theirs:
            for k in ("cer_whisper", "cer_pocketsphinx"):
                p = theirs[c["minutes"]][k]
                out[f"{k}_ratio_at_{c['minutes']:g}min"] = round(c[k] / p, 3) if p else None
    if peer["samples_per_s"]:
        out["samples_per_s_ratio"] = round(vt["samples_per_s"] / peer["samples_per_s"], 3)
    if peer.get("samples_per_s_training_clock"):
        out["samples_per_s_ratio_vs_peer_training_clock"] = round(
            vt["samples_per_s"] / peer["samples_per_s_training_clock"], 3)
    return out


def main(args) -> None:
    """Entry from train_demo.main when --peer is given; ``args`` is its parsed namespace."""
    import train_demo

    from voicetrain.evaluation.models import Evaluator

    if args.peer != "piper":
        raise SystemExit(f"--peer {args.peer!r}: only 'piper' is supported")
    from voicetrain.hardware import CPU_BATCH_SIZE

    # both systems train with the same batch: voicetrain's CPU default unless --batch-size says otherwise
    args.batch_size = args.batch_size or CPU_BATCH_SIZE
    work = Path(args.work)
    ds = train_demo.ensure_dataset(work, args.utterances, args.voice)
    marks = [float(m) for m in args.marks.split(",") if float(m) <= args.minutes]
    sentences = train_demo.held_out_sentences(args.sentences)
    real_audio = train_demo.real_recordings(work, sentences, args.voice)
    ev = Evaluator()
    real = score(ev, sentences, real_audio)
    common = {"bench": "train_demo", "real_cer_whisper": real["cer_whisper"],
              "real_cer_pocketsphinx": real["cer_pocketsphinx"], "held_out": f"{len(sentences)} Harvard sentences",
              "machine": f"{os.cpu_count()} cpu"}
    vt = {**run_voicetrain(args, work, marks, sentences, real, ev), **common}
    print(json.dumps(vt), flush=True)  # before the peer runs: its failure must not lose this line
    peer = {**run_piper(args, work, ds, marks, sentences, real, ev), **common}
    print(json.dumps(peer), flush=True)
    print(json.dumps(ratios(vt, peer)), flush=True)
