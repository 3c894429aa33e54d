"""train_vocoder(cfg): from a prepared dataset to a vocoder run folder with checkpoints, logs and samples.

Vocoder run folder layout::

    VOCODER_RUN/config.yaml        VocoderRunConfig (reproduce: `voicetrain train-vocoder DATASET --config ...`)
    VOCODER_RUN/checkpoints/       step=N.ckpt (last K), last.ckpt (what synthesis uses), best-step=N.ckpt
                                   (lowest validation log-mel L1, for reference: see inference/vocoder.py)
    VOCODER_RUN/metrics.csv, loss.png   (loss.png plots the log-mel L1, train and validation)
    VOCODER_RUN/tb/                TensorBoard: losses and audio
    VOCODER_RUN/samples/           real/ID.wav once, step_N/ID.wav vocoded validation utterances
    VOCODER_RUN/generated_mels/    with --on-generated: the acoustic model's teacher-forced mels (+ source.json)
    VOCODER_RUN/result.json        summary written at the end

An acoustic run uses the vocoder with `voicetrain synth RUN --vocoder VOCODER_RUN` (or
`train --vocoder`, `models add --vocoder`); see :mod:`voicetrain.inference.vocoder`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from voicetrain.config import ConfigError, from_dict, load_yaml, save_yaml
from voicetrain.data.manifest import PreparedDataset, Utterance
from voicetrain.data.vocoder_dataset import (
    SegmentBatchSampler, VocoderDataset, collate_vocoder, generated_mel_path, write_teacher_forced_mels)
from voicetrain.fileio import atomic_write_text
from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe
from voicetrain.inference.vocoder import check_compatible
from voicetrain.training.loop import (
    OutOfMemoryInFit, checkpoint_pair, fastest_thread_count, fit, keep_threads, peak_rss_mb, resume_point, write_result)
from voicetrain.training.oom import TrainingOutOfMemory, first_line
from voicetrain.vocoder_config import VocoderRunConfig
from voicetrain.vocoders import discriminators
from voicetrain.vocoders.registry import build_vocoder, vocoder_config


@dataclass
class VocoderEstimate:
    seconds_per_step: float
    """A full GAN step (generator + discriminators)."""
    seconds_per_reconstruction_step: float
    """A step before ``loss.gan_start_step`` (generator and reconstruction losses only)."""
    peak_rss_mb: float
    threads: int
    measured: dict = field(default_factory=dict)


@dataclass
class VocoderRunResult:
    run_dir: str
    steps: int
    wall_seconds: float
    steps_per_second: float
    peak_rss_mb: float
    final_train_mel: float | None
    final_val_mel: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    generator_parameters: int = 0
    discriminator_parameters: int = 0
    estimate: VocoderEstimate | None = None
    stopped_because: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def discriminator_config(cfg: VocoderRunConfig) -> discriminators.DiscriminatorConfig:
    if cfg.preset not in discriminators.PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r} for the discriminators; available: "
                          f"{', '.join(discriminators.PRESETS)}")
    base = dataclasses.asdict(discriminators.PRESETS[cfg.preset])
    base.update(cfg.discriminator_config)
    return from_dict(discriminators.DiscriminatorConfig, base, where="discriminator_config")


def build_networks(cfg: VocoderRunConfig):
    """(generator, MPD, MRD, the generator's resolved config) for a vocoder run config."""
    gcfg = vocoder_config(cfg.model, cfg.preset, cfg.model_config)
    dcfg = discriminator_config(cfg)
    return (build_vocoder(cfg.model, gcfg, cfg.audio), discriminators.MultiPeriodDiscriminator(dcfg),
            discriminators.MultiResolutionDiscriminator(dcfg), gcfg)


def _validate(cfg: VocoderRunConfig) -> None:
    t = cfg.train
    if t.precision.startswith("16"):
        raise ConfigError("vocoder training supports precision 32-true or bf16-mixed, not "
                          f"{t.precision!r} (the discriminator step has no grad scaler)")
    if cfg.optim.decay not in ("constant", "cosine"):
        raise ConfigError(f"optim.decay must be 'constant' or 'cosine', got {cfg.optim.decay!r}")
    build_networks(cfg)  # unknown model / preset / override keys fail here, before any work


_MODEL_FIELDS = ("model", "preset", "model_config", "discriminator_config")


def prepare_vocoder_run(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: VocoderRunConfig):
    """Resolve the dataset; check a resumed run's settings; write RUN/config.yaml."""
    ds = PreparedDataset.open(dataset_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, audio=ds.info.audio, dataset=str(Path(dataset_dir).resolve()))
    _validate(cfg)
    existing = run_dir / "config.yaml"
    if existing.exists():
        old = load_yaml(VocoderRunConfig, existing)
        changed = [f for f in _MODEL_FIELDS if getattr(old, f) != getattr(cfg, f)]
        if changed and any((run_dir / "checkpoints").glob("*.ckpt")):
            raise ConfigError(f"{run_dir} already holds a vocoder run with other {', '.join(changed)}; use a new "
                              "--out folder or the same settings to resume")
    save_yaml(cfg, existing)
    return ds, cfg


# ----------------------------------------------------------------------------- --on-generated


def generate_teacher_forced_mels(acoustic: str | os.PathLike, ds: PreparedDataset, utts: list[Utterance],
                                 out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """The ``acoustic`` run's teacher-forced mels for ``utts`` in OUT_DIR (the voice's checkpoint, its speaker
    table checked; see :func:`voicetrain.data.vocoder_dataset.write_teacher_forced_mels`). Files are reused
    while OUT_DIR/source.json names the same checkpoint (path, size and mtime)."""
    from voicetrain.inference.checkpoint import load_model

    ckpt = find_checkpoint(acoustic, "best")
    st = ckpt.stat()
    source = {"checkpoint": str(Path(ckpt).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = out_dir / "source.json"
    if marker.exists() and json.loads(marker.read_text()) != source:
        for p in out_dir.glob("*.npy"):
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(source, indent=1))
    todo = [u for u in utts if not generated_mel_path(out_dir, u).exists()]
    if not todo:
        return source
    loaded = load_model(ckpt)
    run_cfg = loaded.voice  # the acoustic voice: its audio settings and speakers
    check_compatible(run_cfg.audio, ds.info.audio, f"(acoustic run {acoustic})")
    spk = {s: i for i, s in enumerate(run_cfg.speakers)}
    for ds_name, name in run_cfg.speaker_map.items():
        spk[ds_name] = spk[name]
    missing = sorted({u.speaker for u in todo} - set(spk))
    if missing:
        raise ConfigError(f"speaker(s) {', '.join(missing)} of {ds.root} are not in the speaker table of {ckpt} "
                          f"({', '.join(run_cfg.speakers)}); --on-generated needs an acoustic run trained (or "
                          "fine-tuned) on this dataset's speakers")
    (console or Console(stderr=True)).print(f"--on-generated: {len(todo)} teacher-forced mels from {ckpt}")
    write_teacher_forced_mels(loaded.model, loaded.symbols, loaded.stats, spk, ds, todo, out_dir)
    return source


# ----------------------------------------------------------------------------- speed


def estimate_speed(lit, batches, thread_options: tuple[int, ...] = ()) -> VocoderEstimate:
    """Seconds per GAN step and per reconstruction-only step on real batches, with a throw-away copy.

    With several ``thread_options`` each is measured and the fastest (by GAN step) is left set.
    """
    m = copy.deepcopy(lit)
    opt_g = torch.optim.AdamW(m.generator.parameters(), lr=1e-4)
    opt_d = torch.optim.AdamW(list(m.mpd.parameters()) + list(m.mrd.parameters()), lr=1e-4)
    def measure() -> tuple[float, float]:
        times: dict[str, list[float]] = {"gan": [], "recon": []}
        for kind in ("recon", "gan"):
            for i, b in enumerate(batches):
                t0 = time.perf_counter()
                fake = m.generator(b.mels)
                if kind == "gan":
                    d = m.discriminator_step_loss(b.audio, fake)
                    opt_d.zero_grad()
                    d["d_loss"].backward()
                    opt_d.step()
                terms = m.reconstruction_losses(fake, b.audio)
                if kind == "gan":
                    for p in list(m.mpd.parameters()) + list(m.mrd.parameters()):
                        p.requires_grad_(False)
                    terms.update(m.generator_adversarial_losses(fake, d["real_features"]))
                opt_g.zero_grad()
                m.generator_total(terms).backward()
                opt_g.step()
                for p in list(m.mpd.parameters()) + list(m.mrd.parameters()):
                    p.requires_grad_(True)
                if i > 0:  # the first step pays one-off allocation costs
                    times[kind].append(time.perf_counter() - t0)
        return float(np.mean(times["gan"])), float(np.mean(times["recon"]))

    best, results = fastest_thread_count(measure, thread_options)
    return VocoderEstimate(results[best][0], results[best][1], peak_rss_mb(), best,
                           {t: {"gan_s": round(v[0], 3), "reconstruction_s": round(v[1], 3)} for t, v in results.items()})


# ----------------------------------------------------------------------------- training


def _builtin_run_config() -> VocoderRunConfig:
    import json

    from voicetrain.inference.vocoder import BUILTIN_JSON, builtin_vocoder_dir

    path = builtin_vocoder_dir() / BUILTIN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"--from builtin: {path.parent} ships no built-in vocoder")
    facts = json.loads(path.read_text(encoding="utf-8")).get("facts", {})
    return from_dict(VocoderRunConfig, facts["vocoder_run_config"], where=f"{path}: facts.vocoder_run_config")


def _warm_start_builtin(lit, cfg: VocoderRunConfig, console: Console) -> str:
    """Load the shipped generator (and discriminators, when shipped) into ``lit``."""
    from safetensors.torch import load_file

    from voicetrain.inference.vocoder import BUILTIN, DISCRIMINATOR_WEIGHTS, VOCODER_WEIGHTS, builtin_vocoder_dir

    folder = builtin_vocoder_dir()
    check_compatible(_builtin_run_config().audio, cfg.audio, "--from builtin")
    lit.generator.load_state_dict(load_file(str(folder / VOCODER_WEIGHTS)))
    disc = folder / DISCRIMINATOR_WEIGHTS
    if disc.is_file():
        sd = load_file(str(disc))
        for prefix, module in (("mpd.", lit.mpd), ("mrd.", lit.mrd)):
            module.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    console.print(f"warm start from the built-in vocoder ({folder})"
                  + ("" if disc.is_file() else "; its discriminators start fresh (none shipped)"))
    return BUILTIN


def _warm_start(lit, source: str | os.PathLike, cfg: VocoderRunConfig, console: Console) -> str:
    """Load generator and discriminator weights of another vocoder run (its last checkpoint: see
    :func:`voicetrain.inference.vocoder.load_vocoder_checkpoint` for why not the lowest-L1 one),
    or of the built-in vocoder (``source='builtin'``)."""
    from voicetrain.inference.vocoder import is_builtin

    if is_builtin(source):
        return _warm_start_builtin(lit, cfg, console)
    ckpt = find_checkpoint(source, "last")
    data = load_checkpoint_safe(ckpt)
    meta = data.get("voicetrain") or {}
    if meta.get("kind") != "vocoder":
        raise ConfigError(f"--from {source}: {ckpt} is not a vocoder checkpoint")
    old = from_dict(VocoderRunConfig, meta["vocoder_run_config"], where=f"{ckpt}:vocoder_run_config")
    check_compatible(old.audio, cfg.audio, f"--from {ckpt}")
    # the live weights when the source averaged them: generator and discriminators as they left the GAN game
    # together (the averaged generator is what the source synthesizes with; the live one is a few steps off it)
    sd = data.get("current_model_state") or data["state_dict"]
    for prefix, module in (("generator.", lit.generator), ("mpd.", lit.mpd), ("mrd.", lit.mrd)):
        module.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    console.print(f"warm start from {ckpt} (step {data.get('global_step', 0)})")
    return str(Path(ckpt).resolve())


def train_vocoder(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: VocoderRunConfig, *,
                  resume: bool | str = "auto", init_from: str | os.PathLike | None = None, dry_run: bool = False,
                  console: Console | None = None) -> VocoderRunResult:
    """Train ``cfg.model`` on a prepared dataset into ``run_dir``.

    resume: 'auto' continues from RUN/checkpoints/last.ckpt when it exists; True requires it; False starts fresh.
    init_from: a vocoder RUN or checkpoint to warm-start from (ignored when resuming).
    The process's torch thread count is restored afterwards.
    """
    with keep_threads():
        try:
            return _train_vocoder(dataset_dir, run_dir, cfg, resume=resume, init_from=init_from, dry_run=dry_run,
                                  console=console or Console(stderr=True))
        except OutOfMemoryInFit as oom:
            # no automatic fallback here: the GAN's manual optimization has no gradient accumulation, so a halved
            # batch would be a different effective batch; the user decides
            bs = load_yaml(VocoderRunConfig, Path(run_dir) / "config.yaml").train.batch_size
            raise TrainingOutOfMemory(
                f"out of memory at step {oom.step} ({first_line(oom.error)}) with batch {bs}: run the same command with "
                f"--batch-size {max(bs // 2, 1)} (or fewer --segment-frames); it resumes from the last checkpoint"
            ) from oom.error


def _train_vocoder(dataset_dir, run_dir, cfg: VocoderRunConfig, *, resume, init_from, dry_run,
                   console: Console) -> VocoderRunResult:
    import lightning as L

    from voicetrain.training.callbacks import EMAWeights, MetricsFile, TimeSnapshots, VocoderSamples
    from voicetrain.training.vocoder_module import VocoderLightningModule

    run_dir = Path(run_dir)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cfg.train.threads or cores)
    ckpt_dir = run_dir / "checkpoints"
    rp = resume_point(ckpt_dir, resume)
    ckpt_path = rp.ckpt_path
    from voicetrain.inference.vocoder import is_builtin

    if init_from and not ckpt_path and is_builtin(init_from):
        old = _builtin_run_config()
        cfg = dataclasses.replace(cfg, **{f: getattr(old, f) for f in _MODEL_FIELDS})
    elif init_from and not ckpt_path:
        # a warm start continues the --from run's networks: its architecture is this run's
        src = load_checkpoint_safe(find_checkpoint(init_from, "last")).get("voicetrain") or {}
        if src.get("kind") == "vocoder":
            old = from_dict(VocoderRunConfig, src["vocoder_run_config"], where=f"{init_from}:vocoder_run_config")
            cfg = dataclasses.replace(cfg, **{f: getattr(old, f) for f in _MODEL_FIELDS})
    if ckpt_path:
        console.print(f"resuming from {ckpt_path}")
    ds, cfg = prepare_vocoder_run(dataset_dir, run_dir, cfg)

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    generator, mpd, mrd, gcfg = build_networks(cfg)
    lit = VocoderLightningModule(generator, mpd, mrd, cfg, dataclasses.asdict(gcfg))
    if init_from and not ckpt_path:
        cfg = dataclasses.replace(cfg, init_from=_warm_start(lit, init_from, cfg, console))
        lit.cfg = cfg
        save_yaml(cfg, run_dir / "config.yaml")

    train_utts = ds.manifest("train")
    val_utts = ds.manifest("val") or train_utts[: max(1, len(train_utts) // 10)]
    if not train_utts:
        raise ConfigError(f"{ds.root}: the training split is empty; prepare more data")
    val_utts = val_utts[: max(cfg.train.n_val_utterances, 1)]
    mel_dir = None
    if cfg.on_generated:
        mel_dir = run_dir / "generated_mels"
        generate_teacher_forced_mels(cfg.on_generated, ds, train_utts + val_utts, mel_dir, console)

    t = cfg.train
    train_set = VocoderDataset(ds, train_utts, t.segment_frames, t.seed, mel_dir)
    val_set = VocoderDataset(ds, val_utts, None, mel_dir=mel_dir, max_frames=t.val_max_frames)
    # a rerun at another --batch-size (after out of memory) skips the same share of the resumed epoch
    sampler = SegmentBatchSampler(len(train_set), t.batch_size, t.seed,
                                  skip=rp.skip_for(max(1, min(t.batch_size, len(train_set)))))
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_vocoder,
                              num_workers=t.num_workers, persistent_workers=t.num_workers > 0)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, collate_fn=collate_vocoder, num_workers=0)

    n_gen = sum(p.numel() for p in generator.parameters())
    n_disc = sum(p.numel() for p in list(mpd.parameters()) + list(mrd.parameters()))
    console.print(f"[bold]{cfg.model}[/bold] ({cfg.preset}): generator {n_gen/1e6:.2f} M parameters, discriminators "
                  f"{n_disc/1e6:.2f} M; {len(train_set)} train / {len(val_set)} val utterances; segments of "
                  f"{t.segment_frames} frames x {sampler.batch_size}; mels: "
                  + (f"generated by {cfg.on_generated}" if cfg.on_generated else "real (feature cache)"))
    # a separate sampler: iterating the training one would use up its resume skip
    probe = DataLoader(train_set, batch_sampler=SegmentBatchSampler(len(train_set), t.batch_size, t.seed),
                       collate_fn=collate_vocoder)
    it = iter(probe)
    batches = [next(it) for _ in range(min(3, len(sampler)))]
    while len(batches) < 3:
        batches.append(batches[-1])
    options = (1, cores) if t.threads == 0 and cores > 1 else ()
    est = estimate_speed(lit, batches, options)
    if options:
        console.print("threads: " + ", ".join(f"{k}: {v['gan_s']:.2f} s/step" for k, v in est.measured.items())
                      + f" -> using {est.threads}")
    console.print(f"estimate: {est.seconds_per_step:.2f} s per GAN step, {est.seconds_per_reconstruction_step:.2f} s "
                  f"per reconstruction-only step (the first {cfg.loss.gan_start_step}); peak RSS {est.peak_rss_mb:.0f} MB")
    if dry_run:
        return VocoderRunResult(str(run_dir), 0, 0.0, 0.0, est.peak_rss_mb, None, None, None, None, n_gen, n_disc,
                                est, stopped_because="dry-run")

    real = [(u.id, val_set[i].audio.numpy()) for i, u in enumerate(val_set.utts)]
    periodic, best = checkpoint_pair(ckpt_dir, t.checkpoint_every_steps, t.keep_last)
    callbacks = [MetricsFile(run_dir, t.log_every_steps, plot_key="mel"),
                 VocoderSamples(run_dir, t.sample_every_steps, cfg.audio.sample_rate, real), periodic, best]
    if t.snapshot_minutes:
        callbacks.append(TimeSnapshots(ckpt_dir, list(t.snapshot_minutes)))
    if cfg.optim.ema_decay > 0:
        callbacks.append(EMAWeights(cfg.optim.ema_decay))  # after VocoderSamples: see its docstring
    # the discriminator step leaves the generator without gradients (and the mel-only phase the discriminators)
    trainer, wall = fit(lit, train_loader, val_loader, run_dir, t, callbacks, rp, find_unused_parameters=True)
    m = trainer.callback_metrics
    steps_done = trainer.global_step - rp.step
    result = VocoderRunResult(
        run_dir=str(run_dir), steps=trainer.global_step, wall_seconds=wall,
        steps_per_second=steps_done / wall if wall > 0 else 0.0, peak_rss_mb=peak_rss_mb(),
        final_train_mel=float(m["train/mel"]) if "train/mel" in m else None,
        final_val_mel=float(m["val/mel"]) if "val/mel" in m else None,
        best_checkpoint=best.best_model_path or None,
        last_checkpoint=str(find_checkpoint(run_dir, "last")) if any(ckpt_dir.glob("*.ckpt")) else None,
        generator_parameters=n_gen, discriminator_parameters=n_disc, estimate=est,
        stopped_because="max_steps" if trainer.global_step >= t.max_steps else "time limit",
    )
    write_result(run_dir, result, trainer)
    return result


__all__ = ["VocoderRunResult", "VocoderEstimate", "train_vocoder", "generate_teacher_forced_mels",
           "build_networks", "discriminator_config", "prepare_vocoder_run"]
