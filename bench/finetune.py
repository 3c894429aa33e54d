"""Fine-tuning a base vs training from scratch at the same wall-clock budget; one JSON line per run.

Set-up (cached under --work, re-runs reuse it):
  (a) the base: the shipped one (`--base builtin`, the default), a registered voice or bundle folder,
      a base RUN folder, or `--base build`: the 9-voice synthetic demo corpus (`--voices multi`),
      prepared and trained for --base-minutes;
  (b) the held-out voice, flite slt (never in any base corpus), --target-utterances ARCTIC prompts
      (~3 minutes of audio at 60, ~1 minute at 20), prepared with the same settings.
Runs (recreated each time), each with the SAME wall-clock budget --minutes and --threads:
  full, freeze-encoder, speaker-embedding (`voicetrain.training.finetune.finetune` from the base;
  a `:mean` suffix starts the new speaker's row from the mean row instead of the nearest base
  speaker), and scratch (`voicetrain.training.train.train` on the slt dataset, default RunConfig;
  only the budget, thread count and validation cadence are set). No early stopping: every run
  spends the whole budget; the run's chosen checkpoint ("best": by quality when scored) is evaluated.
Figures per run (one JSON line each), on --sentences held-out Harvard sentences, synthesized with
--vocoder (default: the shipped vocoder), beside flite slt itself speaking them (real_*):
  cer_whisper / cer   Whisper tiny.en CER (the judge) / pocketsphinx CER beside it;
  speaker_similarity  resemblyzer cosine to the centroid of real slt (its training wavs), mean;
  target_nearest_rate share of sentences whose nearest centroid (slt or a base voice) is slt;
  nearest_base_voice  the base voice the sentences are closest to on average, and that cosine;
  dnsmos_ovrl         DNSMOS P.835 overall;
  vs_scratch          paired bootstrap 95% intervals of (run - scratch) per sentence;
  targets             issue 20's bar: Whisper CER <= 1.2x real, nearest = slt on every sentence,
                      similarity within 0.05 of the real recordings', DNSMOS within 0.3 of real.

    .venv/bin/python bench/finetune.py [--base builtin] [--minutes 3] [--threads 2] [--runs full,scratch]
    .venv/bin/python bench/finetune.py --target-utterances 20 --minutes 1     # 1 minute of audio and training
    .venv/bin/python bench/finetune.py --runs full --vocoder-minutes 10       # + the vocoder on the voice's own mels

--precision auto (the default) gives scratch and fine-tuning alike the precision voicetrain's CLI picks on this
machine (bf16-mixed on CPUs with native bfloat16); each line says which one it trained with.

--vocoder-minutes M (issue 15's own-voice vocoder): after the runs, `train-vocoder TARGET --from builtin
--on-generated FULL_RUN --max-minutes M` fine-tunes the shipped vocoder on the first fine-tuned run's
teacher-forced mels; one more JSON line ("bench": "finetune-vocoder") scores that run's held-out
sentences through Griffin-Lim, the shipped vocoder and the fine-tuned one, beside the real recordings,
with paired intervals against Griffin-Lim.
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


def ensure_base(args, work: Path) -> tuple[str, dict[str, np.ndarray] | None, Path | None, float | None]:
    """(base source for finetune, base centroids or None, base dataset or None, base training seconds or None)."""
    from voicetrain.run_config import RunConfig, TrainConfig
    from voicetrain.training.finetune import load_base
    from voicetrain.training.train import train

    if args.base != "build":
        base = load_base(args.base)
        if base.centroids is not None:
            return args.base, base.centroids, None, None
        ds = Path(base.dataset) if base.dataset else None
        return args.base, None, ds if ds and (ds / "dataset.yaml").exists() else None, None
    root = work / f"base-multi{args.base_utterances}"
    ds = ensure_prepared(root / "corpus", root / "dataset", ["multi"], args.base_utterances, 0)
    run = root / f"run-{args.base_minutes:g}min"
    if (run / "result.json").exists():
        log(f"reusing base run {run}")
        return str(run), None, ds, None
    shutil.rmtree(run, ignore_errors=True)
    log(f"training the base for {args.base_minutes} min into {run}")
    cfg = RunConfig(train=TrainConfig(max_steps=10_000_000, max_minutes=args.base_minutes, threads=args.threads,
                                      val_every_steps=args.val_every * 4, checkpoint_every_steps=args.val_every * 4))
    t0 = time.time()
    train(ds, run, cfg)
    return str(run), None, ds, time.time() - t0


def harvard(n: int) -> list[tuple[str, str]]:
    from voicetrain.evaluation.evaluate_run import HARVARD, read_texts

    return read_texts(HARVARD)[:n]


def real_target(work: Path, sentences) -> dict[str, tuple[np.ndarray, int]]:
    """flite slt speaking the held-out sentences: the ceiling for every figure."""
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


def per_sentence(ev, wavs: list[tuple[str, np.ndarray, int]], sentences: dict[str, str], target: np.ndarray,
                 base: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{metric: {sentence id: value}} for every figure of one system."""
    from voicetrain.evaluation.metrics import cosine_similarity, error_rates

    out: dict[str, dict] = {k: {} for k in ("cer_whisper", "cer", "speaker_similarity", "nearest_is_target",
                                            "dnsmos_ovrl")}
    out["base_sims"] = {}
    for sid, wav, sr in wavs:
        wav = np.clip(wav, -1.0, 1.0)
        out["cer_whisper"][sid] = error_rates(sentences[sid], ev.whisper.transcribe(wav, sr)).cer
        out["cer"][sid] = error_rates(sentences[sid], ev.pocketsphinx.transcribe(wav, sr)).cer
        emb = ev.speaker_encoder.embed(wav, sr)
        s = cosine_similarity(emb, target)
        out["speaker_similarity"][sid] = s
        bs = {k: cosine_similarity(emb, c) for k, c in base.items()}
        out["base_sims"][sid] = bs
        out["nearest_is_target"][sid] = float(s > max(bs.values(), default=-1.0))
        out["dnsmos_ovrl"][sid] = ev.dnsmos.score(wav, sr).ovrl
    return out


def summary(per: dict[str, dict]) -> dict:
    r4 = lambda v: round(float(v), 4)  # noqa: E731
    means: dict[str, list[float]] = {}
    for bs in per["base_sims"].values():
        for k, v in bs.items():
            means.setdefault(k, []).append(v)
    base_mean = {k: float(np.mean(v)) for k, v in means.items()}
    nearest = max(base_mean, key=base_mean.get) if base_mean else None
    return {"cer_whisper": r4(np.mean(list(per["cer_whisper"].values()))),
            "cer": r4(np.mean(list(per["cer"].values()))),
            "speaker_similarity": r4(np.mean(list(per["speaker_similarity"].values()))),
            "target_nearest_rate": round(float(np.mean(list(per["nearest_is_target"].values()))), 3),
            "nearest_base_voice": nearest,
            "similarity_to_nearest_base": r4(base_mean[nearest]) if nearest else None,
            "dnsmos_ovrl": round(float(np.mean(list(per["dnsmos_ovrl"].values()))), 3)}


def speak(synth, sentences: list[tuple[str, str]], speaker: str) -> list[tuple[str, np.ndarray, int]]:
    """(sentence id, audio, rate) for each held-out sentence, one torch thread (as a user's synth runs)."""
    from voicetrain.evaluation.models import torch_threads

    spk = speaker if speaker in synth.speakers else None
    out = []
    for sid, text in sentences:
        with torch_threads(1):
            wav, sr = synth.synthesize(text, spk)
        out.append((sid, wav, sr))
    return out


def best_val_loss(run: Path) -> float | None:
    from voicetrain.evaluation.history import read_metrics_csv

    vals = [r["val/loss"] for r in read_metrics_csv(run / "metrics.csv") if "val/loss" in r]
    return round(min(vals), 4) if vals else None


def _auto(args) -> tuple[str, ...]:
    """--precision auto: the precision voicetrain's CLI picks on this machine, for scratch and fine-tuning alike."""
    return ("train.precision",) if args.precision == "auto" else ()


def _precision(cfg, args):
    return cfg if args.precision == "auto" else dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, precision=args.precision))


def _train_one(name: str, run: Path, args, base: str, target_ds: Path, snaps: list[float]):
    """Train one run under the shared budget; returns (RunResult, trainable parameter count)."""
    from voicetrain.inference.checkpoint import find_checkpoint, load_model
    from voicetrain.run_config import RunConfig
    from voicetrain.run_config import FinetuneConfig
    from voicetrain.training.finetune import FINETUNE_TRAIN, finetune
    from voicetrain.training.train import train

    if name == "scratch":
        d = RunConfig()  # the defaults; only the budget, threads and validation cadence are set
        cfg = dataclasses.replace(d, train=dataclasses.replace(
            d.train, max_steps=10_000_000, max_minutes=args.minutes, threads=args.threads,
            val_every_steps=args.val_every, checkpoint_every_steps=args.val_every,
            sample_every_steps=args.val_every * 5, snapshot_minutes=snaps))
        res = train(target_ds, run, _precision(cfg, args), auto=_auto(args))
        model = load_model(find_checkpoint(run, "last")).model
        return res, sum(p.numel() for p in model.parameters())
    strategy, _, init = name.partition(":")
    loop = dataclasses.replace(FINETUNE_TRAIN, max_steps=10_000_000, max_minutes=args.minutes, threads=args.threads,
                               val_every_steps=args.val_every, checkpoint_every_steps=args.val_every,
                               sample_every_steps=args.val_every * 5, early_stopping_patience=0, snapshot_minutes=snaps)
    res = finetune(target_ds, base, run, FinetuneConfig(strategy=strategy, speaker_init=init or "nearest"),
                   _precision(RunConfig(train=loop), args).train, auto=_auto(args))
    return res, sum(res.extra["trainable_parameters"].values())


def targets(line: dict, real: dict) -> dict[str, bool]:
    return {"whisper_cer_le_1.2x_real": line["cer_whisper"] <= 1.2 * real["cer_whisper"] + 1e-9,
            "nearest_is_slt_on_every_sentence": line["target_nearest_rate"] >= 1.0,
            "similarity_within_0.05_of_real": line["speaker_similarity"] >= real["speaker_similarity"] - 0.05,
            "dnsmos_within_0.3_of_real": line["dnsmos_ovrl"] >= real["dnsmos_ovrl"] - 0.3}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/voicetrain-bench-finetune")
    ap.add_argument("--base", default="builtin",
                    help="builtin (the shipped base), a registered NAME, a bundle or RUN folder, or 'build'.")
    ap.add_argument("--base-minutes", type=float, default=10.0, help="--base build: training budget (cached).")
    ap.add_argument("--base-utterances", type=int, default=60, help="--base build: ARCTIC prompts per voice.")
    ap.add_argument("--target-utterances", type=int, default=60, help="slt prompts (~3 min of audio at 60).")
    ap.add_argument("--minutes", type=float, default=3.0, help="Wall-clock budget of EACH run.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto",
                    help="Every run's precision: auto (the CLI's choice on this machine), 32-true or bf16-mixed.")
    ap.add_argument("--val-every", type=int, default=20, help="Validate (and checkpoint) every N steps.")
    ap.add_argument("--sentences", type=int, default=20, help="Held-out Harvard sentences to score.")
    ap.add_argument("--runs", default="full,scratch",
                    help="Comma-separated: full, freeze-encoder, speaker-embedding (each optionally :mean), scratch.")
    ap.add_argument("--vocoder", default="builtin", help="Vocoder for every run's sentences (builtin, griffin-lim).")
    ap.add_argument("--vocoder-minutes", type=float, default=0.0,
                    help="Fine-tune the shipped vocoder on the first fine-tuned run's own mels for M minutes (0 = off).")
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=False,
                    help="Also write a `voicetrain compare` report of the runs to WORK/compare-Mmin.")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    from voicetrain.run_config import STRATEGIES

    unknown = [n for n in names if n != "scratch" and (n.partition(":")[0] not in STRATEGIES
                                                        or n.partition(":")[2] not in ("", "mean", "nearest"))]
    if unknown:
        ap.error(f"--runs: unknown {unknown}; choose from {', '.join(STRATEGIES)} (optionally :mean), scratch")

    import torch

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.models import Evaluator
    from voicetrain.evaluation.quality import paired_difference
    from voicetrain.inference.checkpoint import choose_checkpoint
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.training.finetune import speaker_centroids
    from voicetrain.config import load_yaml
    from voicetrain.run_config import RunConfig

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    base, base_c, base_ds, base_train_s = ensure_base(args, work)
    troot = work / f"target-{TARGET_VOICE}{args.target_utterances}"
    target_ds = ensure_prepared(troot / TARGET_VOICE, troot / "dataset", [f"flite:{TARGET_VOICE}"],
                                args.target_utterances, 0)
    tds = PreparedDataset.open(target_ds)
    train_s = sum(u.duration for u in tds.manifest("train"))
    val_s = sum(u.duration for u in tds.manifest("val"))
    speaker = (tds.info.speakers or [TARGET_VOICE])[0]
    import soundfile as sf

    source_s = sum(sf.info(str(p)).duration for p in (troot / TARGET_VOICE).rglob("*.wav"))

    runs_root = work / f"runs-{args.target_utterances}utt-{args.minutes:g}min"
    results = {}
    for name in names:
        run = runs_root / name.replace(":", "-")
        shutil.rmtree(run, ignore_errors=True)
        snaps = [round(args.minutes / 2, 4)]
        log(f"{name}: {args.minutes} min budget -> {run}")
        t0 = time.time()
        # Lightning's progress bar writes to stdout; keep stdout for the JSON lines
        with contextlib.redirect_stdout(sys.stderr):
            res, trainable = _train_one(name, run, args, base, target_ds, snaps)
        results[name] = (run, res, trainable, time.time() - t0)

    tuned_runs = [n for n in results if n != "scratch"]
    vocoder_run = vocoder_s = None
    if args.vocoder_minutes > 0 and tuned_runs:
        from voicetrain.config import with_overrides
        from voicetrain.training.train_vocoder import train_vocoder
        from voicetrain.vocoder_config import VocoderRunConfig

        acoustic = results[tuned_runs[0]][0]
        vocoder_run = runs_root / f"vocoder-{tuned_runs[0].replace(':', '-')}"
        shutil.rmtree(vocoder_run, ignore_errors=True)
        log(f"vocoder: {args.vocoder_minutes} min on {acoustic}'s own mels -> {vocoder_run}")
        vcfg = with_overrides(VocoderRunConfig(), [("on_generated", str(acoustic.resolve())),
                                                   ("train.max_minutes", args.vocoder_minutes),
                                                   ("train.threads", args.threads)])
        t0 = time.time()
        with contextlib.redirect_stdout(sys.stderr):
            train_vocoder(target_ds, vocoder_run, vcfg, resume=False, init_from="builtin")
        vocoder_s = time.time() - t0

    # ---- evaluation (not part of any budget)
    torch.set_num_threads(args.threads)
    ev = Evaluator()
    sentences = harvard(args.sentences)
    texts = dict(sentences)
    real = real_target(work, sentences)
    target_c = speaker_centroids(tds, ev.speaker_encoder, per_speaker=20)[speaker]
    if base_c is None:
        base_c = speaker_centroids(PreparedDataset.open(base_ds), ev.speaker_encoder, 10) if base_ds else {}
    real_per = per_sentence(ev, [(s, *real[s]) for s, _ in sentences], texts, target_c, base_c)
    real_sum = summary(real_per)
    per_run = {}
    for name, (run, res, trainable, total_s) in results.items():
        choice = choose_checkpoint(run, "best")
        wavs = speak(Synthesizer.from_checkpoint(choice.path, vocoder=args.vocoder), sentences, speaker)
        per_run[name] = per_sentence(ev, wavs, texts, target_c, base_c)
    for name, (run, res, trainable, total_s) in results.items():
        line = {"bench": "finetune", "run": name, **summary(per_run[name])}
        if name != "scratch" and "scratch" in per_run:
            line["vs_scratch"] = {}
            for k in ("cer_whisper", "speaker_similarity", "dnsmos_ovrl"):
                d = paired_difference(per_run[name][k], per_run["scratch"][k])
                line["vs_scratch"][k] = {"mean": round(d.mean, 4), "ci95": [round(d.low, 4), round(d.high, 4)]}
        init = res.extra.get("speaker_init", {})
        line.update({
            "targets": targets(line, real_sum),
            "speaker_init": init.get("method"), "speaker_init_from": next(
                (v["nearest"] for v in init.get("speakers", {}).values()), None),
            "val_loss": round(res.final_val_loss, 4) if res.final_val_loss is not None else None,
            "best_val_loss": best_val_loss(run), "steps": res.steps,
            "precision": load_yaml(RunConfig, run / "config.yaml").train.precision,
            "evaluated_checkpoint": choose_checkpoint(run, "best").path.name, "trainable_parameters": trainable,
            "train_wall_s": round(res.wall_seconds, 1), "total_wall_s": round(total_s, 1),
            "stopped_because": res.stopped_because, "budget_min": args.minutes, "threads": args.threads,
            "vocoder": args.vocoder,
            "real_cer_whisper": real_sum["cer_whisper"], "real_cer": real_sum["cer"],
            "real_speaker_similarity": real_sum["speaker_similarity"], "real_dnsmos_ovrl": real_sum["dnsmos_ovrl"],
            "real_target_nearest_rate": real_sum["target_nearest_rate"],
            "held_out": f"{len(sentences)} Harvard sentences",
            "target_source_audio_s": round(source_s, 1), "target_train_audio_s": round(train_s, 1),
            "target_val_audio_s": round(val_s, 1), "base": base, "base_speakers": len(base_c),
            "base_trained_now_s": round(base_train_s, 1) if base_train_s is not None else None,
            "load_avg_1m_before": round(load_before, 2), "load_avg_1m_now": round(os.getloadavg()[0], 2),
            "machine": f"{os.cpu_count()} cpu", "run_dir": str(run),
        })
        print(json.dumps(line), flush=True)

    if vocoder_run is not None:
        run = results[tuned_runs[0]][0]
        choice = choose_checkpoint(run, "best")
        by_vocoder = {}
        for voc in ("griffin-lim", "builtin", str(vocoder_run)):
            wavs = speak(Synthesizer.from_checkpoint(choice.path, vocoder=voc), sentences, speaker)
            by_vocoder[voc] = per_sentence(ev, wavs, texts, target_c, base_c)
        gl = by_vocoder["griffin-lim"]
        line = {"bench": "finetune-vocoder", "run": tuned_runs[0], "acoustic_checkpoint": choice.path.name,
                "vocoder_minutes": args.vocoder_minutes, "vocoder_wall_s": round(vocoder_s, 1)}
        for voc, label in (("griffin-lim", "griffin_lim"), ("builtin", "builtin"), (str(vocoder_run), "finetuned")):
            entry = summary(by_vocoder[voc])
            if voc != "griffin-lim":
                entry["minus_griffin_lim"] = {}
                for k in ("cer_whisper", "speaker_similarity", "dnsmos_ovrl"):
                    d = paired_difference(by_vocoder[voc][k], gl[k])
                    entry["minus_griffin_lim"][k] = {"mean": round(d.mean, 4), "ci95": [round(d.low, 4), round(d.high, 4)]}
            line[label] = entry
        ft = line["finetuned"]
        line["targets"] = {"dnsmos_within_0.3_of_real": ft["dnsmos_ovrl"] >= real_sum["dnsmos_ovrl"] - 0.3,
                           "whisper_cer_not_worse_than_gl": ft["minus_griffin_lim"]["cer_whisper"]["ci95"][1] <= 0.005}
        line.update({"real_cer_whisper": real_sum["cer_whisper"], "real_dnsmos_ovrl": real_sum["dnsmos_ovrl"],
                     "real_speaker_similarity": real_sum["speaker_similarity"],
                     "held_out": f"{len(sentences)} Harvard sentences", "threads": args.threads,
                     "load_avg_1m_now": round(os.getloadavg()[0], 2), "vocoder_run": str(vocoder_run)})
        print(json.dumps(line), flush=True)

    if args.compare and len(results) >= 2:
        from voicetrain.evaluation.compare import CompareConfig, compare_runs

        out = work / f"compare-{args.minutes:g}min"
        compare_runs(CompareConfig(runs=[str(r[0]) for r in results.values()], out=str(out), max_utterances=3,
                                   dnsmos=False, progress=False), evaluator=ev)
        log(f"compare report: {out / 'compare.html'}")


if __name__ == "__main__":
    sys.exit(main())
