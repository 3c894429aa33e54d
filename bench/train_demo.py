"""Train from scratch as a user would, under a wall-clock cap, and judge the voice; one JSON line per run.

Each run is ``voicetrain train DATASET --out RUN --max-minutes M`` in its own process with the
defaults a user gets (validation, quality tracking, samples, checkpoints: everything included),
plus ``train.snapshot_minutes`` so the voice can be heard at each mark. Per run:

* speed: steps, samples/s over the fit (``result.json``) and over the whole process (imports,
  speed estimate and final checkpoint included), peak RSS of the training process, run folder size;
* the voice at 1, 3, 5 and 15 minutes (the snapshots): N held-out Harvard sentences, each spoken
  by the snapshot through ``synth``'s default path (Griffin-Lim), judged by Whisper tiny.en CER and
  pocketsphinx CER, and by speaker similarity (resemblyzer) to the centroid of 20 training clips;
* beside the real recordings of the same sentences by the same voice (its CER and similarity), and
  Griffin-Lim's copy of the real mels: the similarity ceiling of this vocoder.

``--variant NAME:KEY=VALUE,KEY=VALUE`` (repeatable) trains more runs in the same command, one after
the other, with ``--set KEY=VALUE`` overrides; the first run (``baseline``, or the first variant with
``--no-baseline``) is the reference: a last line gives each other run's ratios to it and paired
bootstrap 95% intervals of its per-sentence Whisper CER minus the reference's at each mark.

    .venv/bin/python bench/train_demo.py [--voice flite:rms] [--utterances 300] [--minutes 15] [--threads 0]
    .venv/bin/python bench/train_demo.py --minutes 3 --marks 3 --variant fp32:train.precision=32-true
    .venv/bin/python bench/train_demo.py --peer piper --minutes 3 --marks 3 --threads 1
        (side by side with Piper's own trainer in its own venv: bench/peer/side_by_side.py)
    .venv/bin/python bench/train_demo.py --rescore --vocoder builtin --variant bs8:
        (judge the run folders an earlier command left, through another vocoder; nothing is trained)

``--vocoder`` (default ``griffin-lim``, ``synth``'s default) speaks both the snapshots and the copy of the real
mels through the same vocoder, so the copy stays the ceiling of what is being judged.

Corpus and dataset are cached under --work (default /tmp/voicetrain-bench); run folders are recreated.
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

TARGETS = {"cer_ratio_at_3min": 1.2, "cer_ratio_at_15min": 1.05, "similarity_gap_to_gl_copy_at_15min": 0.05,
           "samples_per_s_whole_run": 60.0, "peak_rss_mb": 1000.0, "run_mb_at_15min": 150.0}
"""Issue 21's targets."""


def load_avg() -> float:
    return os.getloadavg()[0]


def _voice_tag(voice: str) -> str:
    return voice.replace(":", "-").replace("/", "-")


def ensure_dataset(work: Path, utterances: int, voice: str = "flite:rms") -> Path:
    from voicetrain.data.demo import make_demo_corpus
    from voicetrain.data.prepare import PrepareConfig, prepare

    tag = "" if voice == "flite:rms" else f"-{_voice_tag(voice)}"  # the rms paths of earlier runs stay valid
    corpus, ds = work / f"corpus{utterances}{tag}", work / f"dataset{utterances}{tag}"
    if not (ds / "dataset.yaml").exists():
        make_demo_corpus(corpus, [voice], utterances=utterances, seed=0)
        prepare(PrepareConfig(input=str(corpus), out=str(ds)))
    return ds


def held_out_sentences(n: int) -> list[tuple[str, str]]:
    from importlib.resources import files

    rows = files("voicetrain.data").joinpath("prompts/harvard_sentences.tsv").read_text(encoding="utf-8").splitlines()
    pairs = [tuple(r.split("\t", 1)) for r in rows if "\t" in r]
    return pairs[:n]


def real_recordings(work: Path, sentences, voice: str = "flite:rms") -> dict[str, tuple[np.ndarray, int]]:
    """The demo voice speaking the held-out sentences: the ceiling for CER."""
    import soundfile as sf

    from voicetrain.data.demo import parse_voice

    spec = parse_voice(voice)
    out = work / ("harvard_rms" if voice == "flite:rms" else f"harvard_{_voice_tag(voice)}")
    out.mkdir(parents=True, exist_ok=True)
    audio = {}
    for sid, text in sentences:
        p = out / f"{sid}.wav"
        if not p.exists():
            argv, stdin = spec.command(text, str(p))
            subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)
        a, sr = sf.read(p, dtype="float32")
        audio[sid] = (a, sr)
    return audio


def vocoder_copy(audio: np.ndarray, sr: int, cfg, vocoder) -> tuple[np.ndarray, int]:
    """The real recording through ``vocoder``: its log-mel, inverted (the ceiling of that vocoder)."""
    import torch

    from voicetrain.audio.features import log_mel
    from voicetrain.audio.io import resample

    a = resample(audio, sr, cfg.sample_rate) if sr != cfg.sample_rate else audio
    mel = torch.from_numpy(log_mel(a, cfg))[None]
    with torch.no_grad():
        return vocoder(mel)[0].float().numpy(), cfg.sample_rate


def judge(ev, sentences, audio: dict[str, tuple[np.ndarray, int]], centroid: np.ndarray) -> dict[str, dict[str, float]]:
    """{metric: {sentence id: value}}: Whisper CER, pocketsphinx CER, speaker similarity."""
    from voicetrain.evaluation.metrics import cosine_similarity, error_rates

    out: dict[str, dict[str, float]] = {"cer_whisper": {}, "cer_pocketsphinx": {}, "speaker_similarity": {}}
    for sid, text in sentences:
        a, sr = audio[sid]
        a = np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)
        out["cer_whisper"][sid] = error_rates(text, ev.whisper.transcribe(a, sr)).cer
        out["cer_pocketsphinx"][sid] = error_rates(text, ev.pocketsphinx.transcribe(a, sr)).cer
        out["speaker_similarity"][sid] = cosine_similarity(ev.speaker_encoder.embed(a, sr), centroid)
    return out


def means(per: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean(list(v.values()))), 4) for k, v in per.items()}


def speaker_centroid(ev, ds: Path, n: int = 20) -> np.ndarray:
    from voicetrain.audio.io import load_mono
    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.metrics import mean_embedding

    d = PreparedDataset.open(ds)
    utts = sorted(d.manifest("train"), key=lambda u: u.id)[:n]
    return mean_embedding([ev.speaker_encoder.embed(*load_mono(d.root / u.audio)) for u in utts])


def dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def train_one(args, ds: Path, run: Path, marks: list[float], sets: list[str]) -> dict:
    """``voicetrain train`` in its own process, as a user runs it; speed, memory and size figures."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "voicetrain.cli", "train", str(ds), "--out", str(run),
           "--max-minutes", str(args.minutes), "--max-steps", "10000000",
           "--model", args.model, "--preset", args.preset,
           "--set", f"train.snapshot_minutes=[{','.join(f'{m:g}' for m in marks)}]",
           *(["--threads", str(args.threads)] if args.threads else []),
           *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
           *[x for s in sets for x in ("--set", s)]]
    load_before = load_avg()
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    whole = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}")
    fig = run_figures(run)
    return {**fig, "process_wall_s": round(whole, 1),
            "samples_per_s_whole_run": round(fig["steps"] * fig["batch_size"] / whole, 2),
            "load_avg_before": round(load_before, 2), "load_avg_after_train": round(load_avg(), 2)}


def run_figures(run: Path) -> dict:
    """The speed, memory and size figures a training left in its run folder. The whole process's samples/s is
    known only to the command that ran it (``train_one``): None here."""
    import yaml

    res = json.loads((run / "result.json").read_text())
    saved = yaml.safe_load((run / "config.yaml").read_text())  # what the run used (a variant may set it)
    est = res.get("estimate") or {}
    return {"batch_size": int(saved["train"]["batch_size"]), "steps": res["steps"],
            "train_wall_s": round(res["wall_seconds"], 1), "samples_per_s": round(res["samples_per_second"], 2),
            "samples_per_s_whole_run": None, "peak_rss_mb": round(res["peak_rss_mb"], 1),
            "threads": est.get("threads"), "precision": saved["train"]["precision"],
            "estimate_s_per_step": est.get("measured"),
            "run_mb": dir_mb(run), "checkpoints_mb": dir_mb(run / "checkpoints")}


def snapshots(run: Path) -> list[tuple[float, int, Path]]:
    out = []
    for p in run.glob("checkpoints/time=*min-step=*.ckpt"):
        minutes = float(p.name.split("=")[1].split("min")[0])
        out.append((minutes, int(p.stem.split("step=")[1]), p))
    return sorted(out)


def score_run(ev, run: Path, sentences, centroid, real: dict, vocoder: str = "griffin-lim") -> tuple[list[dict], dict]:
    import torch

    from voicetrain.inference.checkpoint import load_model
    from voicetrain.inference.synthesizer import Synthesizer

    torch.set_num_threads(1)  # synthesis is fastest on one thread (bench/synth.py)
    curve, per_mark = [], {}
    params = None
    for minutes, step, ck in snapshots(run):
        synth = Synthesizer.from_checkpoint(ck, vocoder=vocoder)
        audio = {sid: synth.synthesize(text) for sid, text in sentences}
        per = judge(ev, sentences, audio, centroid)
        m = means(per)
        curve.append({"minutes": minutes, "step": step, **m,
                      "cer_whisper_ratio_to_real": round(m["cer_whisper"] / max(real["cer_whisper"], 1e-6), 3),
                      "cer_pocketsphinx_ratio_to_real": round(m["cer_pocketsphinx"] / max(real["cer_pocketsphinx"], 1e-6), 3)})
        per_mark[minutes] = per
        params = sum(p.numel() for p in load_model(ck).model.parameters())
    return curve, {"per_mark": per_mark, "params": params}


def targets(line: dict, gl_sim: float, copy_ratio: float | None = None) -> dict[str, bool | None]:
    """Issue 21's targets for one run. With ``copy_ratio`` (the Whisper CER of the vocoder's copy of the real mels
    over the real recordings'), also whether that copy itself meets the CER bars: a voice spoken through this
    vocoder can at best reproduce the real mels, so where the copy misses a bar the bar measures the vocoder."""
    at = {c["minutes"]: c for c in line["curve"]}
    ceiling = {}
    if copy_ratio is not None:
        ceiling = {"copy_of_real_within_1.2x_real": copy_ratio <= TARGETS["cer_ratio_at_3min"],
                   "copy_of_real_within_1.05x_real": copy_ratio <= TARGETS["cer_ratio_at_15min"]}
    return {**ceiling,
        "cer_at_3min_le_1.2x_real": at[3]["cer_whisper_ratio_to_real"] <= TARGETS["cer_ratio_at_3min"] if 3 in at else None,
        "cer_at_15min_le_1.05x_real": at[15]["cer_whisper_ratio_to_real"] <= TARGETS["cer_ratio_at_15min"] if 15 in at else None,
        "similarity_at_15min_within_0.05_of_gl_copy":
            gl_sim - at[15]["speaker_similarity"] <= TARGETS["similarity_gap_to_gl_copy_at_15min"] if 15 in at else None,
        "samples_per_s_ge_60": (line["samples_per_s_whole_run"] >= TARGETS["samples_per_s_whole_run"]
                                if line["samples_per_s_whole_run"] is not None else None),
        "peak_rss_le_1000mb": line["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "run_folder_le_150mb": line["run_mb"] <= TARGETS["run_mb_at_15min"] if 15 in at else None,
    }


def compare(ref: dict, other: dict, per_ref: dict, per_other: dict) -> dict:
    from voicetrain.evaluation.quality import paired_difference

    out = {"bench": "train_demo_ratio", "run": other["name"], "vs": ref["name"],
           "samples_per_s_whole_run_ratio": (round(other["samples_per_s_whole_run"] / ref["samples_per_s_whole_run"], 3)
                                             if other["samples_per_s_whole_run"] and ref["samples_per_s_whole_run"]
                                             else None),
           "steps_ratio": round(other["steps"] / max(ref["steps"], 1), 3),
           "peak_rss_mb_ratio": round(other["peak_rss_mb"] / ref["peak_rss_mb"], 3),
           "run_mb_ratio": round(other["run_mb"] / max(ref["run_mb"], 1e-6), 3)}
    for minutes in sorted(set(per_ref) & set(per_other)):
        for k in ("cer_whisper", "speaker_similarity"):
            d = paired_difference(per_other[minutes][k], per_ref[minutes][k])
            if d is not None:
                out[f"{k}_minus_ref_at_{minutes:g}min"] = {"mean": round(d.mean, 4),
                                                           "ci95": [round(d.low, 4), round(d.high, 4)]}
    return out


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:K=V,K=V``; a comma inside brackets belongs to its value (``K=[600,1800]``)."""
    name, _, sets = text.partition(":")
    out, depth, cur = [], 0, ""
    for ch in sets:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return name, [s for s in [*out, cur] if s]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--marks", default="1,3,5,15")
    ap.add_argument("--voice", default="flite:rms", help="Demo voice to train (flite:rms, flite:awb, espeak:en-us...). "
                    "Never slt: it is held out.")
    ap.add_argument("--model", default="fastspeech2")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="0 = the trainer's own choice (measured)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = the trainer's default")
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--sentences", type=int, default=20)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:KEY=VALUE,KEY=VALUE: one more run with these --set overrides (repeatable)")
    ap.add_argument("--no-baseline", action="store_true", help="Only the variants (the first is the reference).")
    ap.add_argument("--work", default="/tmp/voicetrain-bench")
    ap.add_argument("--run", default=None, help="Run folder of the baseline (default WORK/run-MODEL).")
    ap.add_argument("--model-config", default="{}", help="JSON overrides of the model config (baseline).")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--vocoder", default="griffin-lim",
                    help="griffin-lim (synth's default), builtin (the shipped vocoder) or a vocoder RUN: speaks the "
                         "snapshots and the copy of the real mels")
    ap.add_argument("--rescore", action="store_true",
                    help="Train nothing: judge the run folders an earlier command left under --work.")
    ap.add_argument("--peer", choices=["piper"], default=None,
                    help="Also train the same corpus with this peer's own trainer and judge both alike.")
    ap.add_argument("--peer-venv", default=None, help="The peer's venv (default WORK/piper-venv; "
                    "bench/peer/setup_piper_venv.sh builds it).")
    args = ap.parse_args(argv)
    if "slt" in args.voice:
        raise SystemExit("--voice: slt is held out from every training corpus")
    if args.peer:  # one line per system plus their ratios
        from peer.side_by_side import main as side_by_side
        return side_by_side(args)

    from voicetrain.evaluation.models import Evaluator

    work = Path(args.work)
    ds = ensure_dataset(work, args.utterances, args.voice)
    marks = [float(m) for m in args.marks.split(",") if float(m) <= args.minutes]
    base_sets = []
    if args.model_config != "{}":
        base_sets += [f"model_config.{k}={json.dumps(v)}" for k, v in json.loads(args.model_config).items()]
    if args.lr is not None:
        base_sets.append(f"optim.lr={args.lr:g}")
    runs = [] if args.no_baseline else [("baseline", [])]
    runs += [parse_variant(v) for v in args.variant]
    sentences = held_out_sentences(args.sentences)
    real_audio = real_recordings(work, sentences, args.voice)

    trained = []
    for i, (name, sets) in enumerate(runs):
        run = Path(args.run) if (args.run and i == 0) else work / f"run-{args.model}{'' if i == 0 else '-' + name}"
        if args.rescore:
            if not snapshots(run):
                raise SystemExit(f"--rescore: {run} has no time snapshots (checkpoints/time=*min-step=*.ckpt); "
                                 f"train it first without --rescore")
            fig = run_figures(run)
        else:
            fig = train_one(args, ds, run, marks, base_sets + sets)
        trained.append((name, sets, run, fig))

    # ---- judging (after all training, so no run shares the cores with it)
    ev = Evaluator()
    centroid = speaker_centroid(ev, ds)
    real_per = judge(ev, sentences, real_audio, centroid)
    real = means(real_per)
    from voicetrain.data.manifest import PreparedDataset
    cfg = PreparedDataset.open(ds).info.audio
    from voicetrain.inference.vocoder import load_vocoder

    vocoder = load_vocoder(args.vocoder, cfg).eval()
    copy = judge(ev, sentences, {s: vocoder_copy(*real_audio[s], cfg, vocoder) for s, _ in sentences}, centroid)
    copy_of_real = means(copy)
    lines, pers = [], []
    for name, sets, run, fig in trained:
        curve, extra = score_run(ev, run, sentences, centroid, real, args.vocoder)
        line = {"bench": "train_demo", "name": name, "set": sets, "voice": args.voice, "model": args.model,
                "preset": args.preset, "params": extra["params"], "vocoder": args.vocoder,
                "rescored": args.rescore, "minutes_cap": args.minutes, **fig, "curve": curve,
                "real": real, "copy_of_real": copy_of_real,
                "copy_of_real_cer_whisper_ratio_to_real": round(copy_of_real["cer_whisper"] / max(real["cer_whisper"], 1e-6), 3),
                "held_out": f"{len(sentences)} Harvard sentences", "utterances": args.utterances,
                "machine": f"{os.cpu_count()} cpu", "run": str(run)}
        # the similarity target is against Griffin-Lim's copy: with another vocoder, that vocoder's copy
        line["targets"] = targets(line, copy_of_real["speaker_similarity"], line["copy_of_real_cer_whisper_ratio_to_real"])
        print(json.dumps(line), flush=True)
        lines.append(line)
        pers.append(extra["per_mark"])
    for line, per in zip(lines[1:], pers[1:]):
        print(json.dumps(compare(lines[0], line, pers[0], per)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
