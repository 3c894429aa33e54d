"""Does training's quality tracking pick the checkpoint that sounds best on held-out text? Print one JSON line.

For each voice (default: the demo voice flite rms, and flite awb), 250 ARCTIC prompts are
synthesized, prepared and trained from scratch for --minutes with quality tracking on, keeping
every periodic checkpoint. Every saved checkpoint then speaks --held-out Harvard sentences
(never in training), scored with Whisper tiny.en CER (beam 5), pocketsphinx CER and speaker
similarity to the voice's centroid (training clips); the same flite voice speaking the same
sentences is scored the same way (the real recordings). Per sentence, quality = similarity -
min(Whisper CER, 1), the rule training uses (voicetrain.evaluation.quality).

Reported per voice:
* every checkpoint's held-out figures;
* the held-out best (highest mean quality), the checkpoint training's quality tracking chose
  (its rule replayed on the tracker's history stored in last.ckpt; ``quality_file_choice`` is the
  quality-step file `choose_checkpoint(RUN, 'best')` finds, what synth uses) and the
  lowest-validation-loss one, each
  with the paired bootstrap 95% interval of its quality minus the held-out best's; target:
  the quality choice is within noise (interval not entirely below 0);
* the overhead of quality tracking: the tracked run's step count at --overhead-minutes of wall
  time (from its metrics.csv) against a run with tracking off for --overhead-minutes on the same
  voice, and the seconds the tracker itself spent over the tracked run's wall time.

    .venv/bin/python bench/selection.py [--minutes 15] [--voices flite:rms,flite:awb] [--threads 1]
    .venv/bin/python bench/selection.py --overhead-only [--overhead-minutes 5]   # the overhead pair alone, side by side

Corpora and datasets are cached under --work; run folders are reused when their result.json
exists (--fresh retrains).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np


def ensure_dataset(work: Path, voice: str, utterances: int) -> Path:
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    tag = voice.replace(":", "_")
    corpus, ds = work / f"corpus_{tag}_{utterances}", work / f"dataset_{tag}_{utterances}"
    if not (ds / "dataset.yaml").exists():
        make_demo_corpus(corpus, [voice], utterances=utterances, seed=0)
        prepare(PrepareConfig(input=str(corpus), out=str(ds)))
    return ds


def held_out(n: int) -> list[tuple[str, str]]:
    from voicetrain.evaluation.evaluate_run import read_texts

    return read_texts("harvard")[:n]


def real_recordings(work: Path, voice: str, sentences) -> dict[str, tuple[np.ndarray, int]]:
    import soundfile as sf

    engine, name = voice.split(":", 1)
    if engine != "flite":
        raise SystemExit(f"{voice}: the bench speaks held-out text with flite voices only")
    out = work / f"harvard_{name}"
    out.mkdir(parents=True, exist_ok=True)
    audio = {}
    for sid, text in sentences:
        p = out / f"{sid}.wav"
        if not p.exists():
            subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(p)], check=True)
        a, sr = sf.read(p, dtype="float32")
        audio[sid] = (a, sr)
    return audio


def train_run(ds: Path, run: Path, minutes: float, threads: int, tracked: bool, fresh: bool) -> dict:
    from voicetrain.run_config import RunConfig, TrainConfig
    from voicetrain.training.train import train

    if (run / "result.json").exists() and not fresh:
        return json.loads((run / "result.json").read_text())
    if run.exists():
        shutil.rmtree(run)
    cfg = RunConfig(train=TrainConfig(max_minutes=minutes, threads=threads, keep_last=-1,
                                      quality_sentences=8 if tracked else 0))
    train(ds, run, cfg)
    return json.loads((run / "result.json").read_text())


def steps_at(run: Path, seconds: float) -> int:
    """The last logged training step at or before ``seconds`` of wall time (metrics.csv)."""
    best = 0
    with open(run / "metrics.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r.get("wall_s") and float(r["wall_s"]) <= seconds and r.get("train/loss"):
                best = max(best, int(float(r["step"])))
    return best


def score_run(run: Path, ds: Path, sentences, real, ev, n_ref: int) -> dict:
    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation import metrics
    from voicetrain.evaluation.checkpoints import resolve_checkpoints
    from voicetrain.evaluation.models import torch_threads
    from voicetrain.evaluation.quality import sentence_quality
    from voicetrain.inference.checkpoint import choose_checkpoint, load_model
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.audio.io import load_audio, to_mono

    pds = PreparedDataset.open(ds)
    train_utts = sorted(pds.manifest("train"), key=lambda u: u.id)
    step = max(len(train_utts) // n_ref, 1)
    centroid = metrics.mean_embedding([ev.speaker_encoder.embed(to_mono(a), sr) for a, sr in
                                       (load_audio(pds.root / u.audio) for u in train_utts[::step][:n_ref])])

    def judge(wav, sr, text):
        w = metrics.error_rates(text, ev.whisper.transcribe(wav, sr)).cer
        p = metrics.error_rates(text, ev.pocketsphinx.transcribe(wav, sr)).cer
        sim = metrics.cosine_similarity(ev.speaker_encoder.embed(wav, sr), centroid)
        return {"cer_whisper": w, "cer_pocketsphinx": p, "speaker_similarity": sim, "quality": sentence_quality(w, sim)}

    def summary(rows):
        return {k: float(np.mean([r[k] for r in rows.values()])) for k in
                ("cer_whisper", "cer_pocketsphinx", "speaker_similarity", "quality")}

    real_rows = {sid: judge(*real[sid], text) for sid, text in sentences}
    cks = {}
    for ck in resolve_checkpoints(run, "all"):
        loaded = load_model(ck.path)
        synth = Synthesizer.from_parts(loaded.model, loaded.voice, loaded.symbols, loaded.stats)
        rows = {}
        t0 = time.perf_counter()
        for sid, text in sentences:
            with torch_threads(1):
                wav, sr = synth.synthesize(text)
            rows[sid] = judge(wav, sr, text)
        cks[ck.step] = {"name": ck.name, "rows": rows, **summary(rows), "score_s": time.perf_counter() - t0}
    chosen = choose_checkpoint(run, "best")
    file_step = int(load_model(chosen.path).step)
    # the rule replayed on the tracker's own history (a pure function of it): exact for runs trained by an
    # earlier version of the rule, and a check that the run's quality-step file agrees with it
    from voicetrain.evaluation.quality import choose_latest_within_noise
    from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe

    states = load_checkpoint_safe(find_checkpoint(run, "last")).get("callbacks", {})
    history = next((v["history"] for k, v in states.items() if "QualityTracker" in k), [])
    i = choose_latest_within_noise(history)
    chosen_step = int(history[i]["step"]) if i is not None else file_step
    val_best = sorted((run / "checkpoints").glob("best-step=*.ckpt"))
    val_step = int(load_model(val_best[-1]).step) if val_best else None
    return {"real": summary(real_rows), "checkpoints": cks, "quality_choice": chosen_step,
            "quality_file_choice": file_step, "quality_choice_reason": chosen.reason, "val_loss_choice": val_step,
            "tracker_history": [{"step": e["step"], "score": round(e["score"], 4)} for e in history]}


def verdicts(scored: dict) -> dict:
    from voicetrain.evaluation.quality import paired_difference

    cks = scored["checkpoints"]
    best = max(cks, key=lambda s: (cks[s]["quality"], s))

    def against_best(step):
        if step is None or step not in cks:
            return None
        a = {k: r["quality"] for k, r in cks[step]["rows"].items()}
        b = {k: r["quality"] for k, r in cks[best]["rows"].items()}
        d = paired_difference(a, b)
        return {"step": step, "quality": round(cks[step]["quality"], 4),
                "cer_whisper": round(cks[step]["cer_whisper"], 4),
                "cer_pocketsphinx": round(cks[step]["cer_pocketsphinx"], 4),
                "speaker_similarity": round(cks[step]["speaker_similarity"], 4),
                "delta_vs_best": [round(d.mean, 4), round(d.low, 4), round(d.high, 4)],
                "within_noise_of_best": not d.worse_beyond_noise}

    return {"held_out_best": against_best(best), "quality_choice": against_best(scored["quality_choice"]),
            "val_loss_choice": against_best(scored["val_loss_choice"])}


def paired_overhead(args) -> dict:
    """Tracked and untracked training of the first voice at the same time, one process each: whatever else
    loads the machine loads both alike, which a before/after pair cannot promise on a shared machine."""
    import sys

    work = Path(args.work)
    v0 = [v.strip() for v in args.voices.split(",") if v.strip()][0]
    ensure_dataset(work, v0, args.utterances)  # once, before the two processes race for it
    load_before = os.getloadavg()[0]
    common = [sys.executable, __file__, "--voices", v0, "--utterances", str(args.utterances), "--work", str(work),
              "--overhead-minutes", str(args.overhead_minutes), "--threads", str(args.threads)]
    procs = [subprocess.Popen(common + ["--arm", arm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for arm in ("tracked", "untracked")]
    if any(p.wait() for p in procs):
        raise SystemExit("an overhead arm failed; run it alone with --arm to see why")
    on, off = work / "overhead_tracked", work / "overhead_untracked"
    window = args.overhead_minutes * 60
    res_on = json.loads((on / "result.json").read_text())
    on_steps, off_steps = steps_at(on, window), steps_at(off, window)
    tracker = res_on.get("extra", {}).get("quality") or {}
    return {"bench": "selection-overhead", "voice": v0, "window_s": window, "threads": args.threads,
            "steps_tracked": on_steps, "steps_untracked": off_steps,
            "throughput_loss": round(1 - on_steps / off_steps, 4) if off_steps else None,
            "tracker_seconds": round(tracker.get("seconds", 0.0), 1),
            "tracker_seconds_share_of_wall": round(tracker.get("seconds", 0.0) / res_on["wall_seconds"], 4),
            "validations_scored": tracker.get("validations_scored"),
            "target_at_most_10pct": bool(off_steps) and 1 - on_steps / off_steps <= 0.10,
            "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--overhead-minutes", type=float, default=5.0)
    ap.add_argument("--voices", default="flite:rms,flite:awb")
    ap.add_argument("--utterances", type=int, default=250)
    ap.add_argument("--held-out", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (0 = auto)")
    ap.add_argument("--reference-clips", type=int, default=20)
    ap.add_argument("--work", default="/tmp/voicetrain-bench-selection")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--overhead-only", action="store_true",
                    help="Only measure the overhead: tracked and untracked runs side by side (two processes at once, "
                         "so that both see the same machine load), --overhead-minutes each, on the first voice.")
    ap.add_argument("--arm", choices=("tracked", "untracked"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:  # one side of --overhead-only, in its own process
        v0 = [v.strip() for v in args.voices.split(",") if v.strip()][0]
        ds = ensure_dataset(Path(args.work), v0, args.utterances)
        train_run(ds, Path(args.work) / f"overhead_{args.arm}", args.overhead_minutes, args.threads,
                  args.arm == "tracked", True)
        return
    if args.overhead_only:
        print(json.dumps(paired_overhead(args)))
        return

    from voicetrain.evaluation.models import Evaluator

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    load_before = os.getloadavg()[0]
    sentences = held_out(args.held_out)
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    out: dict = {"bench": "selection", "minutes": args.minutes, "utterances": args.utterances,
                 "held_out": len(sentences), "threads": args.threads, "voices": {},
                 "load_avg_1m_before": round(load_before, 2)}
    runs = {}
    for v in voices:  # train everything first: scoring must not share the cores with training
        ds = ensure_dataset(work, v, args.utterances)
        tag = v.replace(":", "_")
        runs[v] = (ds, work / f"run_{tag}_tracked")
        res = train_run(ds, runs[v][1], args.minutes, args.threads, True, args.fresh)
        out["voices"][v] = {"steps": res["steps"], "wall_s": round(res["wall_seconds"], 1),
                            "tracker": res.get("extra", {}).get("quality")}
    # overhead: tracking off on the first voice for --overhead-minutes
    v0 = voices[0]
    ds0, tracked0 = runs[v0]
    off = work / f"run_{v0.replace(':', '_')}_untracked"
    res_off = train_run(ds0, off, args.overhead_minutes, args.threads, False, args.fresh)
    window = args.overhead_minutes * 60
    on_steps, off_steps = steps_at(tracked0, window), steps_at(off, window)
    tracker = out["voices"][v0]["tracker"] or {}
    out["overhead"] = {
        "voice": v0, "window_s": window, "steps_tracked": on_steps, "steps_untracked": off_steps,
        "throughput_loss": round(1 - on_steps / off_steps, 4) if off_steps else None,
        "untracked_wall_s": round(res_off["wall_seconds"], 1),
        "tracker_seconds_share_of_wall": {v: round((out["voices"][v]["tracker"] or {}).get("seconds", 0)
                                                   / out["voices"][v]["wall_s"], 4) for v in voices},
        "tracker_seconds": round(tracker.get("seconds", 0.0), 1),
    }
    ev = Evaluator(asr="both", torch_threads=1)
    for v in voices:
        ds, run = runs[v]
        scored = score_run(run, ds, sentences, real_recordings(work, v, sentences), ev, args.reference_clips)
        out["voices"][v].update({
            "real": {k: round(x, 4) for k, x in scored["real"].items()},
            "checkpoints": {s: {k: round(c[k], 4) for k in ("cer_whisper", "cer_pocketsphinx", "speaker_similarity",
                                                             "quality")} for s, c in sorted(scored["checkpoints"].items())},
            "quality_choice_reason": scored["quality_choice_reason"],
            "quality_file_choice": scored["quality_file_choice"], "tracker_history": scored["tracker_history"],
            **verdicts(scored),
        })
    out["targets_met"] = {v: bool((out["voices"][v]["quality_choice"] or {}).get("within_noise_of_best"))
                          for v in voices}
    if out["overhead"]["throughput_loss"] is not None:
        out["targets_met"]["overhead_at_most_10pct"] = out["overhead"]["throughput_loss"] <= 0.10
    out["load_seconds"] = {k: round(x, 2) for k, x in ev.load_seconds.items()}
    out["wall_s"] = round(time.time() - t_all, 1)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["cpus"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
