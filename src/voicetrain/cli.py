"""The `voicetrain` command: a thin shell that parses arguments and calls one library function each.

Heavy imports happen inside each command so `voicetrain --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

# torch's OpenMP threads spin only briefly (1000 turns, not libgomp's 300,000) before they sleep while waiting for
# work. With another busy process at the same priority (a browser, an editor) a 2-thread bf16 training step took
# 0.50 s spinning by default, 0.35 s with the short spin, 0.33 s never spinning (OMP_WAIT_POLICY=PASSIVE); on the
# quiet machine 0.179, 0.172 and 0.229 s (bench/omp_wait.py, BENCHMARKS.md). Read when torch loads its OpenMP
# runtime, so it is set here, at the entry point; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn your own voice recordings into a working text-to-speech voice, on a CPU.",
)


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------- data (demo-data, prepare, check)
# (commands are registered below by the data section)


@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to create the corpus in."),
    voices: Optional[list[str]] = typer.Option(
        None, "--voices", help="Voice specs or presets, repeatable or comma-separated: flite:rms, "
        "espeak:en-us+f2:p60:s150, 'single' (flite:rms, the default) or 'multi' (9 voices)."),
    utterances: int = typer.Option(50, "--utterances", help="ARCTIC prompts per voice."),
    seed: int = typer.Option(0, "--seed", help="Chooses the prompts."),
) -> None:
    """Synthesize a demo corpus with espeak-ng and flite (LJSpeech layout for one voice, VCTK-like for several)."""
    from voicetrain.data.demo import DemoError, make_demo_corpus

    try:
        r = make_demo_corpus(out, voices, utterances, seed)
    except DemoError as e:
        _fail(str(e))
    typer.echo(f"{r.out}: {r.n_utterances} utterances ({r.n_synthesized} new), {len(r.speakers)} voice(s), "
               f"{r.layout} layout: {', '.join(r.speakers)}")


@app.command("prepare")
def prepare_cmd(
    input: Path = typer.Argument(..., help="Folder with your recordings (LJSpeech, VCTK-like, or NAME.wav+NAME.txt pairs)."),
    out: Path = typer.Option(..., "--out", help="DATASET folder to write."),
    format: str = typer.Option("auto", "--format", help="auto, ljspeech, vctk or pairs."),
    sample_rate: int = typer.Option(22050, "--sample-rate", help="Target sample rate (Hz)."),
    language: str = typer.Option("en-us", "--language", help="espeak-ng language code for phonemes."),
    phonemizer: str = typer.Option("espeak", "--phonemizer", help="espeak (IPA) or chars (letters, no espeak)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of each speaker's utterances for validation."),
    seed: int = typer.Option(0, "--seed", help="Chooses the validation items."),
    vad: str = typer.Option("energy", "--vad", help="Silence trimming: energy or silero."),
    max_seconds: float = typer.Option(15.0, "--max-seconds", help="Longer utterances are quarantined."),
    workers: int = typer.Option(2, "--workers", help="Worker processes for the audio stage."),
) -> None:
    """Check, normalize and featurize recordings into a training-ready DATASET (re-runs skip finished work)."""
    import dataclasses

    from voicetrain.config import AudioConfig, QCConfig, TextConfig
    from voicetrain.data.formats import CorpusFormatError
    from voicetrain.data.prepare import PrepareConfig, PrepareError, prepare
    from voicetrain.text.phonemize import PhonemizerError

    cfg = PrepareConfig(
        input=str(input), out=str(out), format=format,
        audio=dataclasses.replace(AudioConfig(), sample_rate=sample_rate),
        text=TextConfig(language=language, phonemizer=phonemizer),
        qc=dataclasses.replace(QCConfig(), vad=vad, max_seconds=max_seconds),
        val_fraction=val_fraction, seed=seed, workers=workers, progress=True,
    )
    try:
        r = prepare(cfg)
    except (CorpusFormatError, PrepareError, PhonemizerError) as e:
        _fail(str(e))
    typer.echo(f"{r.root}: {r.n_kept}/{r.n_items} utterances kept ({r.hours:.2f} h, {len(r.speakers)} speaker(s); "
               f"train {r.n_train}, val {r.n_val}); {r.n_reused} reused from an earlier run; {r.elapsed:.1f} s")
    if r.reasons:
        typer.echo(f"quarantined {r.n_quarantined}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items())))
    if r.warnings:
        typer.echo("warnings: " + ", ".join(f"{k} {v}" for k, v in sorted(r.warnings.items())))
    if len(r.speakers) == 1:
        from voicetrain.data.enough import advise, load_curve

        typer.echo("is it enough? " + "\n  ".join(advise(r.hours * 60, load_curve())))
    typer.echo(f"details: {r.root / 'qc.json'}, {r.root / 'report.html'}")


@app.command("check")
def check_cmd(
    dataset: Path = typer.Argument(..., help="A prepared DATASET folder."),
    batch_size: int = typer.Option(16, "--batch-size"),
) -> None:
    """Load every item through the training data loader; exit 1 naming each broken item and its fix."""
    from voicetrain.config import ConfigError
    from voicetrain.data.check import check_dataset

    try:
        report = check_dataset(dataset, batch_size)
    except (FileNotFoundError, ConfigError) as e:
        _fail(str(e))
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)

# ---------------------------------------------------------------- training (train, synth, align)


_SET_HELP = ("Any config value as SECTION.KEY=VALUE (repeatable), checked like the YAML file: e.g. --set "
             "optim.lr=1e-3 --set train.val_every_steps=100 --set model_config.hidden=192.")


@app.command("train")
def train_cmd(
    dataset: Path = typer.Argument(..., help="A prepared DATASET folder (from `voicetrain prepare`)."),
    out: Path = typer.Option(..., "--out", help="RUN folder; an existing run with checkpoints is resumed."),
    model: Optional[str] = typer.Option(None, "--model", help="fastspeech2 (default) or tacotron2."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model size preset: cpu, gpu, tiny (default: gpu with "
                                         "a CUDA device of 4 GB or more, else cpu; a resumed run keeps its own)."),
    config: Optional[Path] = typer.Option(None, "--config", help="RunConfig YAML (e.g. an earlier RUN/config.yaml)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Per-step batch (default 8 on the CPU; on CUDA the "
                                             "largest that fits, probed up to 128). Out of memory halves it."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate after warm-up (default: the model's own, fastspeech2 3e-3, tacotron2 1e-3)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-clock cap; stops cleanly with a checkpoint."),
    accumulate: Optional[int] = typer.Option(None, "--accumulate", help="Gradient accumulation batches."),
    precision: Optional[str] = typer.Option(None, "--precision", help="32-true, bf16-mixed, 16-mixed (GPU) (default: "
                                            "bf16-mixed on Ampere and newer GPUs and on CPUs with native bfloat16, 16-mixed on Volta/Turing, "
                                            "else 32-true)."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Lightning devices, e.g. auto, 1, 4."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Machines for multi-node DDP."),
    overfit: Optional[int] = typer.Option(None, "--overfit", help="Train on N utterances to prove the pipeline can memorize."),
    early_stop: Optional[int] = typer.Option(None, "--early-stop", help="Stop after N validations in a row whose "
                                             "quality is worse than the best beyond noise (without quality "
                                             "tracking: N validations without a lower validation loss)."),
    quality_sentences: Optional[int] = typer.Option(
        None, "--quality-sentences", help="Validation sentences spoken and scored (Whisper CER, speaker "
        "similarity) at every validation to keep the best-sounding checkpoints (default 8; 0 = off)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from RUN/checkpoints/last.ckpt if present."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure speed and memory on a few batches, print the ETA, stop."),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help="The voice's vocoder: 'griffin-lim' (default) or "
                                          "a vocoder RUN folder from `voicetrain train-vocoder`."),
    assignments: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP),
) -> None:
    """Train a voice: FastSpeech 2 (default) on a prepared dataset, with checkpoints, plots and samples in RUN."""
    from voicetrain.config import ConfigError, load_yaml, with_overrides
    from voicetrain.data.dataset import DataItemError
    from voicetrain.run_config import RunConfig
    from voicetrain.training.oom import TrainingOutOfMemory
    from voicetrain.training.train import OPEN_SETTINGS, train

    try:
        from voicetrain.inference.vocoder import vocoder_spec

        flags = {"model": model, "preset": preset, "vocoder": vocoder_spec(vocoder) if vocoder is not None else None,
                 "optim.lr": lr, "train.batch_size": batch_size, "train.max_steps": max_steps,
                 "train.max_minutes": max_minutes, "train.accumulate": accumulate, "train.precision": precision,
                 "train.devices": devices, "train.num_nodes": num_nodes, "train.overfit": overfit,
                 "train.early_stopping_patience": early_stop, "train.threads": threads, "train.seed": seed,
                 "train.quality_sentences": quality_sentences}
        if max_minutes is not None and max_steps is None and not config:
            flags["train.max_steps"] = 10_000_000  # the time cap decides
        cfg = with_overrides(load_yaml(RunConfig, config) if config else RunConfig(),
                             [(k, v) for k, v in flags.items() if v is not None] + list(assignments or []))
        # what no flag, --set or --config decided: the machine picks it, a resumed run keeps its own
        given = {a.partition("=")[0].strip() for a in assignments or []}
        auto = () if config else tuple(k for k in OPEN_SETTINGS if flags.get(k) is None and k not in given)
        result = train(dataset, out, cfg, resume="auto" if resume else False, dry_run=dry_run, auto=auto)
    except (ConfigError, FileNotFoundError, DataItemError, TrainingOutOfMemory) as e:
        _fail(str(e))
    if dry_run:
        return
    typer.echo(f"{out}: {result.steps} steps in {result.wall_seconds/60:.1f} min ({result.samples_per_second:.1f} samples/s, "
               f"peak RSS {result.peak_rss_mb:.0f} MB); val loss {result.final_val_loss}; stopped: {result.stopped_because}")
    from voicetrain.inference.checkpoint import choose_checkpoint

    try:
        choice = choose_checkpoint(out, "best")
        typer.echo(f"voice: {choice.path.name} ({choice.reason}); lowest validation loss: {result.best_checkpoint}")
    except FileNotFoundError as e:  # a run stopped before its first checkpoint
        typer.echo(str(e))
    typer.echo(f"loss plot: {out / 'loss.png'}  TensorBoard: tensorboard --logdir {out / 'tb'}")


@app.command("finetune")
def finetune_cmd(
    dataset: Path = typer.Argument(..., help="A prepared DATASET of the new voice (2-10 minutes is enough)."),
    base: Optional[str] = typer.Option(None, "--from", help="Base voice: the shipped multi-speaker base `builtin` (the "
                                       "default), a registered NAME[@vN], a bundle folder, a RUN folder (its best "
                                       "checkpoint) or a checkpoint file."),
    out: Path = typer.Option(..., "--out", help="RUN folder for the fine-tuned voice."),
    strategy: str = typer.Option("full", "--strategy",
                                 help="full (all weights train at a low rate; the measured best), freeze-encoder, "
                                      "bitfit (the new speaker's vector plus every bias and norm gain: ~12 k "
                                      "parameters), or speaker-embedding (only the new speaker's vector trains)."),
    speaker_init: str = typer.Option("nearest", "--speaker-init",
                                     help="The new speaker's starting vector: nearest (the base speaker nearest by "
                                          "the speaker encoder) or mean (of the base speakers)."),
    speaker_name: Optional[str] = typer.Option(None, "--speaker-name", help="Name of the new speaker in the voice."),
    freeze: Optional[str] = typer.Option(None, "--freeze", help="Extra modules/groups to freeze, comma-separated."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default by strategy: speaker-embedding 1e-2, bitfit 3e-3, freeze-encoder 1e-3, full 5e-4 (the base trains at 3e-3)."),
    max_steps: int = typer.Option(2000, "--max-steps"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes"),
    batch_size: int = typer.Option(16, "--batch-size"),
    early_stop: int = typer.Option(5, "--early-stop", help="Stop after N validations without improvement (0 = off)."),
    threads: int = typer.Option(0, "--threads"),
    precision: Optional[str] = typer.Option(None, "--precision", help="32-true or bf16-mixed (default: bf16-mixed "
                                            "on CPUs with native bfloat16, else 32-true; a resumed run keeps its own)."),
) -> None:
    """Fine-tune a voice to a new speaker: by default the shipped multi-speaker base (`builtin`)."""
    from voicetrain.config import ConfigError, with_overrides
    from voicetrain.inference.checkpoint import CheckpointError
    from voicetrain.registry.store import RegistryError
    from voicetrain.run_config import FinetuneConfig
    from voicetrain.training.finetune import FINETUNE_TRAIN, finetune

    try:
        ft = FinetuneConfig(strategy=strategy, speaker_init=speaker_init, speaker_name=speaker_name or "",
                            freeze=[f.strip() for f in (freeze or "").split(",") if f.strip()])
        loop = with_overrides(FINETUNE_TRAIN, [("max_steps", max_steps), ("max_minutes", max_minutes), ("threads", threads),
                                               ("batch_size", batch_size), ("early_stopping_patience", early_stop)]
                              + ([("precision", precision)] if precision else []))
        result = finetune(dataset, base, out, ft, loop, lr=lr, auto=() if precision else ("train.precision",))
    except (ConfigError, CheckpointError, RegistryError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"{out}: {result.steps} steps in {result.wall_seconds/60:.1f} min; val loss {result.final_val_loss}; "
               f"trained {sum(result.extra['trainable_parameters'].values()):,} parameters; stopped: {result.stopped_because}")


@app.command("train-vocoder")
def train_vocoder_cmd(
    dataset: Path = typer.Argument(..., help="A prepared DATASET folder: its cached mels and wavs are the training data."),
    out: Path = typer.Option(..., "--out", help="VOCODER_RUN folder; an existing run with checkpoints is resumed."),
    init_from: Optional[Path] = typer.Option(None, "--from", help="Continue from another vocoder run (its last "
                                             "checkpoint) or 'builtin' (the shipped universal vocoder): e.g. to "
                                             "fine-tune it to a new voice, or to train it further."),
    on_generated: Optional[Path] = typer.Option(
        None, "--on-generated", help="Acoustic RUN whose teacher-forced mels (aligner durations) replace the real "
        "ones as input: removes the metallic sound of a vocoder fed predicted mels."),
    config: Optional[Path] = typer.Option(None, "--config", help="VocoderRunConfig YAML (e.g. VOCODER_RUN/config.yaml)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Generator and discriminator size: cpu (default), gpu, tiny."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-clock cap; stops cleanly with a checkpoint."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    segment_frames: Optional[int] = typer.Option(None, "--segment-frames", help="Mel frames per training segment."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    gan_start: Optional[int] = typer.Option(None, "--gan-start", help="Steps of mel+STFT loss only before the GAN joins."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: measured, 1 or all cores)."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Lightning devices, e.g. auto, 1, 4 (DDP above 1)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from VOCODER_RUN/checkpoints/last.ckpt."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure seconds per step and memory, then stop."),
    assignments: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP),
) -> None:
    """Train a neural vocoder (Vocos) on a prepared dataset; use it with `synth/eval/models add --vocoder VOCODER_RUN`."""
    from voicetrain.config import ConfigError, load_yaml, with_overrides
    from voicetrain.data.dataset import DataItemError
    from voicetrain.inference.checkpoint import CheckpointError
    from voicetrain.training.oom import TrainingOutOfMemory
    from voicetrain.training.train_vocoder import train_vocoder
    from voicetrain.vocoder_config import VocoderRunConfig

    try:
        flags = {"preset": preset, "on_generated": on_generated and str(on_generated.resolve()),
                 "train.max_steps": max_steps, "train.max_minutes": max_minutes, "train.batch_size": batch_size,
                 "train.segment_frames": segment_frames, "train.threads": threads, "train.seed": seed,
                 "train.devices": devices, "optim.lr": lr, "loss.gan_start_step": gan_start}
        cfg = with_overrides(load_yaml(VocoderRunConfig, config) if config else VocoderRunConfig(),
                             [(k, v) for k, v in flags.items() if v is not None] + list(assignments or []))
        if on_generated and not on_generated.exists():
            raise FileNotFoundError(f"--on-generated {on_generated} does not exist; give an acoustic RUN folder")
        result = train_vocoder(dataset, out, cfg, resume="auto" if resume else False, init_from=init_from,
                               dry_run=dry_run)
    except (ConfigError, FileNotFoundError, DataItemError, CheckpointError, TrainingOutOfMemory) as e:
        _fail(str(e))
    if dry_run:
        return
    typer.echo(f"{out}: {result.steps} steps in {result.wall_seconds/60:.1f} min ({result.steps_per_second:.2f} steps/s, "
               f"peak RSS {result.peak_rss_mb:.0f} MB); validation log-mel L1 {result.final_val_mel}; "
               f"stopped: {result.stopped_because}")
    typer.echo(f"last checkpoint: {result.last_checkpoint}\nuse it: voicetrain synth RUN --vocoder {out} --text ... "
               f"--out x.wav   samples: {out / 'samples'}")


_ASR_HELP = ("Recognizer(s) for CER/WER: whisper (bundled Whisper tiny.en), pocketsphinx, or both (default: "
             "Whisper's figures first, pocketsphinx's beside them as a second opinion).")
_ASR_MODEL_HELP = "A faster-whisper (CTranslate2) model folder instead of the bundled tiny.en, e.g. small.en."


def _asr_option():
    return typer.Option("both", "--asr", help=_ASR_HELP)


def _asr_model_option():
    return typer.Option(None, "--asr-model", help=_ASR_MODEL_HELP)


def _check_asr(asr: str, asr_model: Optional[Path]) -> None:
    from voicetrain.evaluation.models import ASR_CHOICES

    if asr not in ASR_CHOICES:
        _fail(f"--asr {asr!r}: expected one of {', '.join(ASR_CHOICES)}")
    if asr_model is not None and asr == "pocketsphinx":
        _fail("--asr-model names a Whisper model; use it with --asr whisper or --asr both")


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Two or more RUN folders (from train or finetune)."),
    out: Path = typer.Option(..., "--out", help="Folder for compare.json, compare.html, plots and audio."),
    texts: Optional[str] = typer.Option(
        "harvard", "--texts", help="Sentences every run speaks: TSV 'id<TAB>text', metadata.csv, one per line, "
        "'harvard' (default) or 'none' (validation sentences only)."),
    max_utterances: int = typer.Option(5, "--max-utterances", help="At most N validation sentences (and N texts)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Target steps, e.g. 100,200 (default: automatic)."),
    minutes: Optional[str] = typer.Option(None, "--minutes", help="Target wall times in minutes, e.g. 1,3 (default: "
                                          "the common time snapshots, else automatic)."),
    points: int = typer.Option(2, "--points", help="Automatic targets per axis."),
    names: Optional[str] = typer.Option(None, "--names", help="Display names, comma-separated, one per run."),
    no_dnsmos: bool = typer.Option(False, "--no-dnsmos", help="Skip DNSMOS (the slowest metric)."),
    no_speaker: bool = typer.Option(False, "--no-speaker-similarity", help="Skip resemblyzer speaker similarity."),
    max_reference_wavs: int = typer.Option(10, "--max-reference-wavs", help="Training wavs per speaker for its centroid."),
    griffin_lim_iters: int = typer.Option(32, "--gl-iters", help="Griffin-Lim iterations for synthesis."),
    asr: str = _asr_option(),
    asr_model: Optional[Path] = _asr_model_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Compare runs: validation loss vs steps and wall time, metrics and audio at matched steps and wall time."""
    from voicetrain.audio.io import AudioReadError
    from voicetrain.evaluation.compare import CompareConfig, compare_runs
    from voicetrain.evaluation.checkpoints import RunEvalError
    from voicetrain.inference.checkpoint import CheckpointError

    def numbers(spec: Optional[str], kind, opt: str) -> list:
        try:
            return [kind(x) for x in (spec or "").split(",") if x.strip()]
        except ValueError:
            _fail(f"{opt} {spec!r}: expected comma-separated numbers, e.g. {opt} 100,200")

    cfg = CompareConfig(
        runs=[str(r) for r in runs], out=str(out), texts=None if texts in (None, "", "none") else texts,
        max_utterances=max_utterances, steps=numbers(steps, int, "--steps"),
        minutes=numbers(minutes, float, "--minutes"), points=points,
        names=[n.strip() for n in (names or "").split(",") if n.strip()], dnsmos=not no_dnsmos,
        speaker_similarity=not no_speaker, max_reference_wavs=max_reference_wavs,
        griffin_lim_iters=griffin_lim_iters, asr=asr, asr_model=str(asr_model) if asr_model else None,
        progress=progress)
    _check_asr(asr, asr_model)
    try:
        r = compare_runs(cfg)
    except (RunEvalError, CheckpointError, AudioReadError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e))

    def cell(v, pct=False):
        return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")

    for key, label in (("matched_time", "wall time"), ("matched_steps", "steps")):
        for p in r[key]["points"]:
            at = f"{p['target_minutes']:.2f} min" if "target_minutes" in p else f"step {p['target_step']}"
            typer.echo(f"at matched {label} ({at}):")
            for name, row in p["runs"].items():
                typer.echo(f"  {name:>20}: step {row['step']:>6} ({row['minutes'] or 0:.2f} min)  val loss "
                           f"{cell(row['val_loss'])}  CER {cell(row['cer'], True)}  spk {cell(row['speaker_similarity'])}")
    typer.echo(f"report: {out / 'compare.html'}  data: {out / 'compare.json'}")


_VOCODER_HELP = ("'griffin-lim', 'builtin' (the universal vocoder shipped with voicetrain) or a vocoder RUN folder "
                 "(from `voicetrain train-vocoder`) or checkpoint; default: the one the voice's run names "
                 "(griffin-lim unless set).")

@app.command("synth")
def synth_cmd(
    run: Path = typer.Argument(..., help="A RUN folder or a checkpoint file."),
    text: Optional[str] = typer.Option(None, "--text", help="Text to speak."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output wav (with --text)."),
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="One sentence per line, or 'id<TAB>text'."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Output folder (with --text-file)."),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Speaker name (multi-speaker voices)."),
    speed: float = typer.Option(1.0, "--speed", help="Speaking rate: 1.5 is 50% faster."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last or a step number (with a RUN folder)."),
    griffin_lim_iters: int = typer.Option(32, "--gl-iters", help="Griffin-Lim iterations (fewer: faster, rougher)."),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help=_VOCODER_HELP),
) -> None:
    """Speak text with a trained voice (the best checkpoint by default)."""
    from voicetrain.audio.io import save_wav
    from voicetrain.inference.checkpoint import CheckpointError
    from voicetrain.inference.synthesizer import Synthesizer, UnknownSpeakerError
    from voicetrain.text.tokenizer import NoSpeakableTextError

    if (text is None) == (text_file is None):
        _fail("give exactly one of --text (with --out) or --text-file (with --out-dir)")
    try:
        synth = Synthesizer.from_checkpoint(run, checkpoint, vocoder=vocoder, griffin_lim_iters=griffin_lim_iters)
        if text is not None:
            if out is None:
                _fail("--text needs --out FILE.wav")
            wav, sr = synth.synthesize(text, speaker, speed)
            save_wav(out, wav, sr)
            typer.echo(f"{out}: {len(wav) / sr:.2f} s (checkpoint {synth.checkpoint}: {synth.checkpoint_reason})")
            return
        if out_dir is None:
            _fail("--text-file needs --out-dir DIR")
        lines = [ln for ln in text_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        from voicetrain.data.formats import resolve_inside

        for i, line in enumerate(lines, 1):
            uid, _, sentence = line.partition("\t") if "\t" in line else (f"{i:04d}", "", line)
            target = resolve_inside(out_dir, f"{uid}.wav")
            if target is None or target.parent != out_dir.resolve():
                typer.secho(f"skipped line {i} of {text_file}: id {uid!r} would write outside {out_dir}; "
                            "use a plain name as the id", fg=typer.colors.YELLOW, err=True)
                continue
            try:
                wav, sr = synth.synthesize(sentence, speaker, speed)
            except NoSpeakableTextError as e:
                typer.secho(f"skipped line {i}: {e}", fg=typer.colors.YELLOW, err=True)
                continue
            save_wav(target, wav, sr)
        typer.echo(f"{out_dir}: {len(lines)} sentence(s) (checkpoint {synth.checkpoint}: {synth.checkpoint_reason})")
    except (NoSpeakableTextError, UnknownSpeakerError, CheckpointError, FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command("align")
def align_cmd(
    run: Path = typer.Argument(..., help="A RUN folder or checkpoint whose aligner to use."),
    dataset: Path = typer.Argument(..., help="A prepared DATASET folder."),
    out: Path = typer.Option(..., "--out", help="Folder for ID.json and ID.TextGrid files."),
    checkpoint: str = typer.Option("best", "--checkpoint"),
    split: str = typer.Option("all", "--split", help="train, val or all."),
) -> None:
    """Per-phoneme durations from the trained aligner, as JSON and Praat TextGrid files."""
    from voicetrain.inference.align import align_dataset

    try:
        n = align_dataset(run, dataset, out, checkpoint, split)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{out}: {n} alignments (JSON + TextGrid)")

# ---------------------------------------------------------------- evaluation (eval, eval-audio)


@app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="A RUN folder from `voicetrain train`."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Prepared DATASET (default: the one in RUN/config.yaml)."),
    texts: Optional[str] = typer.Option(
        None, "--texts", help="Extra sentences to synthesize: TSV 'id<TAB>text', metadata.csv, one sentence per "
        "line, or 'harvard' for the bundled Harvard sentences."),
    checkpoints: Optional[str] = typer.Option(
        None, "--checkpoints", help="best, last, all or steps like 1000,2000 (default: all with --select-best, else best)."),
    select_best: bool = typer.Option(
        False, "--select-best", help="Choose a checkpoint by the quality score training tracks (speaker "
        "similarity - Whisper CER) and record it in RUN/selected_checkpoint.txt so synth uses it by default."),
    max_utterances: int = typer.Option(20, "--max-utterances", help="At most N validation sentences (and N extra texts)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/eval)."),
    no_dnsmos: bool = typer.Option(False, "--no-dnsmos", help="Skip DNSMOS (the slowest metric)."),
    no_speaker: bool = typer.Option(False, "--no-speaker-similarity", help="Skip resemblyzer speaker similarity."),
    max_reference_wavs: int = typer.Option(20, "--max-reference-wavs", help="Training wavs per speaker for its centroid."),
    griffin_lim_iters: int = typer.Option(32, "--gl-iters", help="Griffin-Lim iterations for synthesis."),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help=_VOCODER_HELP),
    asr: str = _asr_option(),
    asr_model: Optional[Path] = _asr_model_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA on stderr."),
) -> None:
    """Synthesize the validation sentences with each checkpoint and score them beside the real recordings."""
    from voicetrain.audio.io import AudioReadError
    from voicetrain.evaluation.evaluate_run import RunEvalConfig, RunEvalError, evaluate_run
    from voicetrain.inference.checkpoint import CheckpointError

    cfg = RunEvalConfig(run=str(run), dataset=str(dataset) if dataset else None, texts=texts,
                        checkpoints=checkpoints, select_best=select_best, max_utterances=max_utterances,
                        out=str(out) if out else None, dnsmos=not no_dnsmos, speaker_similarity=not no_speaker,
                        max_reference_wavs=max_reference_wavs, griffin_lim_iters=griffin_lim_iters,
                        vocoder=vocoder, asr=asr, asr_model=str(asr_model) if asr_model else None,
                        progress=progress)
    _check_asr(asr, asr_model)
    try:
        r = evaluate_run(cfg)
    except (RunEvalError, CheckpointError, AudioReadError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e))

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v):
        return "-" if v is None else f"{v:.2f}"

    real = r["real"]["means"]
    typer.echo(f"CER/WER by {r['asr']['primary']}" + (", CER ps by pocketsphinx" if len(r["asr"]["names"]) > 1 else ""))
    typer.echo(f"real recordings: CER {pct(real.get('cer'))} CER ps {pct(real.get('cer_pocketsphinx'))} "
               f"WER {pct(real.get('wer'))} DNSMOS {num(real.get('dnsmos_ovrl'))} (the ceiling)")
    for c in r["checkpoints"]:
        m = c["val"]["means"]
        typer.echo(f"{c['name']:>22}: CER {pct(m.get('cer'))} CER ps {pct(m.get('cer_pocketsphinx'))} "
                   f"WER {pct(m.get('wer'))} MCD {num(m.get('mcd_db'))} dB "
                   f"spk {num(c['all']['means'].get('speaker_similarity'))} DNSMOS {num(c['all']['means'].get('dnsmos_ovrl'))} "
                   f"RTF {num(c['all'].get('rtf'))}")
    if r["selection"]:
        sel = r["selection"]
        typer.echo(f"selected {sel['selected']} (quality {num(sel['quality'])}; {sel['rule']}) -> {sel['written']}")
        for v in sel["verdicts"]:
            if v["name"] == sel["selected"]:
                continue
            ci = "" if v["delta"] is None else f" Δ vs highest {v['delta']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
            typer.echo(f"{v['name']:>22}: quality {num(v['quality'])}{ci}: {v['verdict']}")
    typer.echo(f"report: {Path(r['out']) / 'report.html'}  data: {Path(r['out']) / 'eval.json'}")


@app.command("eval-audio")
def eval_audio_cmd(
    directory: Path = typer.Argument(..., help="Folder of .wav files to score."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="Folder of reference recordings: same-named wavs give MCD-DTW, F0 RMSE and "
        "voicing error; all of them form the speaker centroid for speaker similarity."),
    texts: Optional[Path] = typer.Option(
        None, "--texts", help="Transcripts: TSV 'id<TAB>text' or LJSpeech metadata.csv. Default: a .txt "
        "beside each wav, else DIR/metadata.csv."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write per-utterance rows and means as JSON here."),
    no_dnsmos: bool = typer.Option(False, "--no-dnsmos", help="Skip DNSMOS (the slowest metric, ~0.6 s per file)."),
    asr: str = _asr_option(),
    asr_model: Optional[Path] = _asr_model_option(),
) -> None:
    """Score any wav files: CER/WER (Whisper, pocketsphinx beside it), DNSMOS, and against references MCD, F0, speaker similarity."""
    from rich.console import Console

    from voicetrain.audio.io import AudioReadError
    from voicetrain.evaluation.evaluate_audio import TranscriptError, evaluate_audio, render_table, write_json
    from voicetrain.evaluation.models import Evaluator

    _check_asr(asr, asr_model)
    try:
        evaluator = Evaluator(asr=asr, asr_model=str(asr_model) if asr_model else None)
        if evaluator.asr_note:
            typer.secho(f"note: {evaluator.asr_note}", fg=typer.colors.YELLOW, err=True)
        result = evaluate_audio(directory, reference, texts, evaluator=evaluator, dnsmos=not no_dnsmos)
    except (FileNotFoundError, TranscriptError, AudioReadError, RuntimeError) as e:
        _fail(str(e))
    Console().print(render_table(result))
    if out is not None:
        write_json(result, out)
        typer.echo(f"wrote {out}")


# ---------------------------------------------------------------- registry and serving (models, export, serve)

models_app = typer.Typer(no_args_is_help=True, help="Save, version and inspect voices in the model store.")
app.add_typer(models_app, name="models")

_STORE_HELP = "Model store folder (default: $VOICETRAIN_HOME/models, else ~/.local/share/voicetrain/models)."


def _store(store: Optional[Path]):
    from voicetrain.registry.store import ModelStore

    return ModelStore(store)


@models_app.command("add")
def models_add_cmd(
    run: Path = typer.Argument(..., help="A training RUN folder (or a checkpoint file)."),
    name: Optional[str] = typer.Option(None, "--name", help="Voice name (default: the run folder's name)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last or a step number."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help="Bundle this vocoder ('griffin-lim' or a vocoder "
                                          "RUN folder) instead of the one the run names; its weights go in the bundle."),
) -> None:
    """Register a run's checkpoint as the next immutable version (v1, v2, ...) of NAME."""
    from voicetrain.config import ConfigError
    from voicetrain.inference.checkpoint import CheckpointError
    from voicetrain.inference.bundle import register_run
    from voicetrain.registry.store import RegistryError

    from voicetrain.inference.checkpoint import choose_checkpoint

    try:
        path = register_run(run, name, checkpoint, _store(store), vocoder=vocoder)
        choice = choose_checkpoint(run, checkpoint)
    except (RegistryError, CheckpointError, ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"added {path.parent.name}@{path.name}: {path} (checkpoint {choice.path.name}: {choice.reason})")


@models_app.command("list")
def models_list_cmd(store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP)) -> None:
    """List every voice version with its tags."""
    st = _store(store)
    rows = st.list()
    if not rows:
        typer.echo(f"no voices in {st.root}; add one with `voicetrain models add RUN --name NAME`")
        return
    for b in rows:
        tags = f"  [{', '.join(b.tags)}]" if b.tags else ""
        typer.echo(f"{b.name}@{b.version}  {b.model}  {len(b.speakers)} speaker(s)  {b.created}{tags}")


@models_app.command("show")
def models_show_cmd(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@TAG."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print card.json instead of card.md."),
) -> None:
    """Show a voice's model card."""
    import json

    from voicetrain.registry.store import RegistryError

    try:
        info = _store(store).show(ref)
    except RegistryError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    card = Path(info["path"]) / "card.md"
    typer.echo(f"{info['name']}@{info['version']}  tags: {', '.join(info['tags']) or '-'}  path: {info['path']}\n")
    typer.echo(card.read_text(encoding="utf-8") if card.exists() else "(no card.md)")


@models_app.command("tag")
def models_tag_cmd(
    ref: str = typer.Argument(..., help="NAME@VERSION (or NAME@TAG) to tag."),
    tag: str = typer.Argument(..., help="Tag name, e.g. prod."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Point TAG at a version: NAME@TAG then resolves to it."""
    from voicetrain.registry.store import RegistryError

    try:
        version = _store(store).tag(ref, tag)
    except RegistryError as e:
        _fail(str(e))
    typer.echo(f"{ref.partition('@')[0]}@{tag} -> {version}")


@models_app.command("remove")
def models_remove_cmd(
    ref: str = typer.Argument(..., help="NAME@VERSION to delete (its number is never reused)."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Delete one version and the tags that pointed to it."""
    from voicetrain.registry.store import RegistryError

    try:
        path = _store(store).remove(ref)
    except RegistryError as e:
        _fail(str(e))
    typer.echo(f"removed {path}")


@app.command("export")
def export_cmd(
    source: str = typer.Argument(..., help="A registered NAME[@VERSION|@TAG], a bundle folder, or a RUN folder."),
    format: str = typer.Option("onnx", "--format", help="onnx (acoustic model: tokens -> mel) or piper (a whole "
                               "Piper voice, vocoder included: OUT/NAME.onnx + OUT/NAME.onnx.json)."),
    out: Path = typer.Option(..., "--out", help="Folder for the exported files."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="With a RUN folder: best, last or a step number."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="piper: file name stem (default: the voice's name), "
                                       "e.g. en_US-myvoice-medium."),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help="piper: the vocoder inside the graph: the voice's "
                                          "own neural vocoder, else 'builtin' (default), a vocoder RUN folder, or griffin-lim."),
    force: bool = typer.Option(False, "--force", help="piper: replace an existing NAME.onnx / NAME.onnx.json."),
) -> None:
    """Export a voice: the acoustic model to ONNX (--format onnx), or a Piper voice (--format piper)."""
    from voicetrain.config import ConfigError
    from voicetrain.inference.checkpoint import CheckpointError
    from voicetrain.inference.export import ExportError, export_onnx
    from voicetrain.registry.store import RegistryError

    if format not in ("onnx", "piper"):
        _fail(f"unknown --format {format!r}; supported: onnx, piper")
    if format == "onnx" and (name or vocoder or force):
        _fail("--name, --vocoder and --force apply to --format piper only")
    from voicetrain.inference.checkpoint import choose_checkpoint

    try:
        if format == "piper":
            from voicetrain.inference.piper_export import export_piper

            r = export_piper(source, out, name=name, store=_store(store), which=checkpoint, vocoder=vocoder,
                             force=force)
        else:
            r = export_onnx(source, out, store=_store(store), which=checkpoint)
        src = Path(source)
        why = ""
        if src.is_dir() and (src / "checkpoints").is_dir():
            choice = choose_checkpoint(src, checkpoint)
            why = f"; checkpoint {choice.path.name}: {choice.reason}"
    except (ExportError, RegistryError, CheckpointError, ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    if format == "piper":
        typer.echo(f"{r.onnx} + {r.config.name} (vocoder {r.vocoder}; {r.seconds:.1f} s{why})\n"
                   f"speak it: echo 'Hello.' | piper -m {r.onnx} -f hello.wav")
    else:
        typer.echo(f"{r.onnx} + {r.config.name} ({r.seconds:.1f} s{why})")


@app.command("serve")
def serve_cmd(
    voices: Optional[list[str]] = typer.Argument(None, help="Voices to serve (NAME[@VERSION|@TAG] or bundle folders); "
                                                        "default: every voice in the store at its latest version."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (localhost only by default)."),
    port: int = typer.Option(8000, "--port"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="VOICETRAIN_API_KEY",
                                          help="Require this key (X-API-Key or Authorization: Bearer)."),
    workers: int = typer.Option(2, "--workers", help="Concurrent syntheses (each uses one core; default: 2 cores)."),
    store: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    wyoming: Optional[str] = typer.Option(None, "--wyoming", help="Also speak the Wyoming protocol (Home Assistant) "
                                          "at this URI: tcp://HOST:PORT (e.g. tcp://0.0.0.0:10200) or unix://PATH. "
                                          "No API key on it: bind it to a trusted network."),
    http: bool = typer.Option(True, "--http/--no-http", help="Serve HTTP (--no-http: Wyoming only)."),
) -> None:
    """Serve voices over HTTP: POST /v1/synthesize, GET /v1/voices, GET /healthz, and OpenAI-compatible
    POST /v1/audio/speech and GET /v1/models (base_url http://HOST:PORT/v1); with --wyoming, over the
    Wyoming protocol too (Home Assistant's Wyoming integration: that host and port)."""
    from voicetrain.registry.store import RegistryError
    from voicetrain.serving.http import serve

    try:
        serve(list(voices or []), store=_store(store), host=host, port=port, api_key=api_key, workers=workers,
              wyoming=wyoming, http=http)
    except (RegistryError, ValueError, ImportError) as e:
        _fail(str(e))


@app.command("studio")
def studio_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (localhost only by default; any other "
                             "address needs --api-key)."),
    port: int = typer.Option(7860, "--port"),
    project: Path = typer.Option(Path("voicetrain-project"), "--project",
                                 help="Project folder: takes, dataset, runs and voices (created if missing)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="VOICETRAIN_STUDIO_API_KEY",
                                          help="Require this key (X-API-Key or Authorization: Bearer)."),
) -> None:
    """Record, check, train, listen to, compare and keep a voice in the browser (a local web app)."""
    try:
        from voicetrain.studio.app import serve_studio
    except ImportError as e:
        _fail(f"the studio needs the serve extra ({e.name} is missing): pip install 'voicetrain[serve]'")
    try:
        serve_studio(project, host=host, port=port, api_key=api_key)
    except ValueError as e:
        _fail(str(e))


@app.command("doctor")
def doctor_cmd(
    folder: Path = typer.Option(Path("."), "--folder", help="Where runs will be written (checked for space and write access)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A prepared DATASET: check its text settings "
                                           "(--phonemizer chars needs no espeak-ng)."),
    step: bool = typer.Option(True, "--step/--no-step", help="Time one training step of the tiny preset."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (keys in voicetrain.doctor)."),
) -> None:
    """Check torch, devices, espeak-ng, tools, evaluation models, disk and RAM; each problem with its fix.
    Exits 1 when training cannot work."""
    import json

    from voicetrain.doctor import run_doctor

    text = None
    if dataset is not None:
        from voicetrain.data.manifest import PreparedDataset

        try:
            text = PreparedDataset.open(dataset).info.text
        except FileNotFoundError as e:
            _fail(str(e))
    report = run_doctor(folder, text=text, measure_step=step)
    typer.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.summary())
    if not report.ok:
        raise typer.Exit(1)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point; ``argv`` makes the CLI testable in-process."""
    app(args=argv, prog_name="voicetrain")


if __name__ == "__main__":
    main()
