"""train(cfg): from a prepared dataset to a run folder with checkpoints, logs, plots and samples.

Run folder layout::

    RUN/config.yaml            RunConfig (reproduces the run: `voicetrain train DATASET --config RUN/config.yaml`)
    RUN/symbols.json, stats.json
    RUN/checkpoints/           step=N.ckpt (last K), quality-step=N-score=S.ckpt (the voice, by quality),
                               best-step=N.ckpt (lowest val loss), last.ckpt
    RUN/metrics.csv, loss.png  refreshed during training (quality/* columns: see training/quality.py)
    RUN/tb/                    TensorBoard event files
    RUN/samples/step_N/*.wav   fixed validation sentences; alignment_latest.png
    RUN/health.jsonl           health-check warnings
    RUN/result.json            summary written at the end
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.utils.data import DataLoader

from voicetrain.config import ConfigError, load_yaml, save_yaml, with_overrides
from voicetrain.data.cache import FeatureStats
from voicetrain.data.dataset import BucketBatchSampler, TTSDataset, padded_collate
from voicetrain.data.manifest import PreparedDataset
from voicetrain.fileio import atomic_write_text
from voicetrain.inference.checkpoint import find_checkpoint
from voicetrain.inference.synthesizer import Synthesizer
from voicetrain.models.registry import MODELS, build_model
from voicetrain.run_config import RunConfig
from voicetrain.text.symbols import SymbolTable
from voicetrain.training.loop import (
    OutOfMemoryInFit, ResumePoint, checkpoint_pair, fastest_thread_count, fit, keep_threads, peak_rss_mb, resume_point,
    write_result)
from voicetrain.training.oom import TrainingOutOfMemory, fallback_message, halved

OPEN_SETTINGS = ("preset", "train.precision", "train.batch_size", "train.accumulate")
"""The settings a caller may leave open (``train(auto=...)``; the CLI leaves those it was given no flag,
``--set`` or ``--config`` for): a fresh run lets the machine pick them (voicetrain.hardware), a resumed run
keeps its RUN/config.yaml values (the machine's picks, and the batch an out-of-memory fallback halved)."""


@dataclass
class Estimate:
    seconds_per_step: float
    samples_per_second: float
    peak_rss_mb: float
    eta_seconds: float
    steps: int
    threads: int = 0
    measured: dict = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: str
    steps: int
    wall_seconds: float
    samples_per_second: float
    peak_rss_mb: float
    final_train_loss: float | None
    final_val_loss: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    estimate: Estimate | None = None
    stopped_because: str = ""
    extra: dict[str, Any] = field(default_factory=dict)




def _speaker_table(cfg: RunConfig, ds: PreparedDataset) -> list[str]:
    return list(cfg.speakers) if cfg.speakers else list(ds.info.speakers or ["speaker"])


def prepare_run(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: RunConfig):
    """Resolve dataset, symbols, stats, speakers; write RUN/config.yaml. Returns the pieces train() needs."""
    ds = PreparedDataset.open(dataset_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = run_dir / "config.yaml"
    if (run_dir / "symbols.json").exists():
        symbols = SymbolTable.load(run_dir / "symbols.json")
        stats = FeatureStats.load(run_dir / "stats.json")
    else:
        symbols = SymbolTable.load(ds.symbols_path)
        stats = FeatureStats.load(ds.stats_path)
        symbols.save(run_dir / "symbols.json")
        stats.save(run_dir / "stats.json")
    cfg = dataclasses.replace(cfg, audio=ds.info.audio, text=ds.info.text, dataset=str(Path(dataset_dir).resolve()),
                              speakers=_speaker_table(cfg, ds))
    if cfg.optim.lr is None and cfg.model in MODELS:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=MODELS[cfg.model].default_lr))
    if existing.exists():
        old = load_yaml(RunConfig, existing)
        if old.model != cfg.model or old.model_config != cfg.model_config or old.preset != cfg.preset:
            raise ConfigError(f"{run_dir} already holds a {old.model}/{old.preset} run with other model settings; "
                              "use a new --out folder or the same settings to resume")
    save_yaml(cfg, existing)
    return ds, cfg, symbols, stats


def make_loaders(ds: PreparedDataset, cfg: RunConfig, symbols: SymbolTable, stats: FeatureStats,
                 skip: "tuple[int, int] | ResumePoint | None" = None):
    """(train set, val set, train loader, val loader); ``skip``: the resumed epoch's position, or the
    ResumePoint whose position is converted to this run's batch size (ResumePoint.skip_for)."""
    spk = {s: i for i, s in enumerate(cfg.speakers)}
    for ds_name, name in cfg.speaker_map.items():
        spk[ds_name] = spk[name]
    train_utts = ds.manifest("train")
    val_utts = ds.manifest("val")
    if cfg.train.overfit:
        train_utts = sorted(train_utts, key=lambda u: u.id)[: cfg.train.overfit]
        val_utts = train_utts
    if not train_utts:
        raise ConfigError(f"{ds.root}: the training split is empty; prepare more data")
    if not val_utts:
        val_utts = train_utts[: max(1, len(train_utts) // 10)]
    train_set = TTSDataset(ds, train_utts, symbols, stats, spk)
    val_set = TTSDataset(ds, val_utts, symbols, stats, spk)
    bs = min(cfg.train.batch_size, len(train_set))
    if isinstance(skip, ResumePoint):
        skip = skip.skip_for(bs)
    sampler = BucketBatchSampler(train_set.lengths, bs, seed=cfg.train.seed, shuffle=True, skip=skip,
                                 short_first_epochs=cfg.train.short_first_epochs)
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=padded_collate,
                              num_workers=cfg.train.num_workers, persistent_workers=cfg.train.num_workers > 0)
    val_sampler = BucketBatchSampler(val_set.lengths, bs, shuffle=False)
    val_loader = DataLoader(val_set, batch_sampler=val_sampler, collate_fn=padded_collate, num_workers=0)
    return train_set, val_set, train_loader, val_loader



def estimate_speed(model, lit_cls, cfg, symbols, stats, loader, n_steps: int = 3,
                   thread_options: tuple[int, ...] = (), start_step: int = 0, device: str = "cpu") -> Estimate:
    """Measure seconds/step on a few real batches with a throw-away copy of the model and optimizer.

    The copy runs as training will at ``start_step`` (0, or the resumed step): a step-scheduled
    dropout is set to that step's rates first.

    With several ``thread_options`` each is measured on the same batches and the fastest is
    left set: on 2 cores shared with other work, 2 torch threads can be several times slower
    than 1, and only a measurement tells.

    ``device``: where training will run ('cuda': the copy and batches go there, under the run's precision).
    """
    m = copy.deepcopy(model).to(device)
    lit = lit_cls(m, cfg, symbols, stats)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=cfg.optim.lr, fused=True)
    m.train()
    if hasattr(m, "set_training_step"):
        m.set_training_step(start_step)
    # index batches straight from the sampler's plan: iterating the loader would consume
    # the resume skip of the batch sampler before training starts
    plan = loader.batch_sampler.batches()
    batches = [loader.collate_fn([loader.dataset[i] for i in plan[k % len(plan)]]).to(device)
               for k in range(n_steps + 1)]
    def measure() -> tuple[float, float]:
        times, samples = [], 0
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            with autocast(cfg.train.precision, device):
                _, losses = lit.forward_losses(batch)
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
            if device != "cpu":
                torch.cuda.synchronize()
            if i > 0:  # the first step pays one-off allocation costs
                times.append(time.perf_counter() - t0)
                samples += len(batch)
        return sum(times) / len(times), samples / sum(times)

    best, results = fastest_thread_count(measure, thread_options)
    sps, samples_per_s = results[best]
    steps = cfg.train.max_steps
    eta = sps * steps * cfg.train.accumulate
    if cfg.train.max_minutes:
        eta = min(eta, cfg.train.max_minutes * 60)
    return Estimate(sps, samples_per_s, peak_rss_mb(), eta, steps, best,
                    {t: round(v[0], 3) for t, v in results.items()})


def autocast(precision: str, device: str):
    """The autocast context of a Lightning ``precision`` ('bf16-mixed', '16-mixed'; anything else: off)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None)


def batch_probe_step(model, lit_cls, cfg: RunConfig, symbols, stats, dataset: TTSDataset, device: str):
    """``step(b)``: one training step (forward under the run's precision, losses, backward, AdamW) of a throw-away
    copy of ``model`` on ``device``, on a batch of the ``b`` longest utterances (repeated when there are fewer):
    the largest batch the run will meet. Dropout at its full rate (a curriculum starts at none), which is
    what costs the most memory."""
    m = copy.deepcopy(model).to(device)
    m.train()
    if hasattr(m, "set_training_step"):
        m.set_training_step(10**9)
    lit = lit_cls(m, cfg, symbols, stats)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=cfg.optim.lr or 1e-3)
    longest = sorted(range(len(dataset)), key=lambda i: dataset.lengths[i], reverse=True)

    def step(b: int) -> None:
        batch = padded_collate([dataset[longest[k % len(longest)]] for k in range(b)]).to(device)
        with autocast(cfg.train.precision, device):
            _, losses = lit.forward_losses(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    return step


def probe_cuda_batch(model, lit_cls, cfg: RunConfig, symbols, stats, dataset: TTSDataset):
    """The largest batch (up to hardware.PROBE_CAP and the training set's size) whose step on CUDA device 0
    raises no out-of-memory error and peaks under hardware.PROBE_HEADROOM of its memory."""
    from voicetrain.hardware import PROBE_CAP, PROBE_HEADROOM, memory_fits, probe_batch_size
    from voicetrain.training.oom import is_out_of_memory

    total = torch.cuda.get_device_properties(0).total_memory
    step = batch_probe_step(model, lit_cls, cfg, symbols, stats, dataset, "cuda")
    fits = memory_fits(step, lambda: torch.cuda.max_memory_allocated(0), lambda: torch.cuda.reset_peak_memory_stats(0),
                       PROBE_HEADROOM * total, is_out_of_memory)
    try:
        return probe_batch_size(fits, start=cfg.train.batch_size, cap=min(PROBE_CAP, len(dataset)))
    finally:
        del step, fits
        gc.collect()
        torch.cuda.empty_cache()


def _fill_open_settings(cfg: RunConfig, auto: frozenset[str], run_dir: Path, rp, console: Console):
    """(cfg with the settings in ``auto`` filled, whether to probe the batch on CUDA).

    A resumed run keeps its RUN/config.yaml values; a fresh one takes voicetrain.hardware.choose_defaults for
    this machine (the batch is then probed once the model and data exist)."""
    from voicetrain.hardware import choose_defaults, cpu_native_bf16, describe_cuda_device

    if not auto:
        return cfg, False
    saved = run_dir / "config.yaml"
    if rp.ckpt_path and saved.exists():
        old = load_yaml(RunConfig, saved)
        kept = [(k, _dotted(old, k)) for k in OPEN_SETTINGS if k in auto]
        console.print("resumed run keeps " + ", ".join(f"{k.rpartition('.')[2]} {v}" for k, v in kept)
                      + f" ({saved})")
        return with_overrides(cfg, kept), False
    device = describe_cuda_device(0) if cfg.train.accelerator in ("auto", "gpu", "cuda") else None
    d = choose_defaults(device, cpu_bf16=device is None and cfg.train.accelerator in ("auto", "cpu") and cpu_native_bf16())
    picks = [(k, v) for k, v in (("preset", d.preset), ("train.precision", d.precision),
                                 ("train.batch_size", d.batch_size)) if k in auto and v is not None]
    probe = d.probe_batch and "train.batch_size" in auto
    note = "; the batch is probed" if probe else ""
    if probe and not _single_process(cfg.train):
        # every process would probe on its own (and before Lightning assigns devices, all on device 0)
        probe, note = False, f"; batch {cfg.train.batch_size} per process (not probed under DDP: --batch-size sets it)"
    console.print(f"hardware: {d.reason}{note}")
    return with_overrides(cfg, picks), probe


def _single_process(t) -> bool:
    """Whether this run trains in one process: one device, one node, not launched by torchrun or srun."""
    if t.num_nodes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return False
    devices = str(t.devices).strip()
    if devices in ("auto", "-1"):  # Lightning takes every GPU
        return torch.cuda.device_count() <= 1
    if devices.isdigit():
        return int(devices) <= 1
    return len([d for d in devices.strip("[]").split(",") if d.strip()]) <= 1  # device indices: "0," or "0,1"


def _dotted(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _ram_warning(est: Estimate, t) -> str | None:
    """hardware.ram_warning for this CPU run: the estimate's peak per process, times the processes on this machine."""
    from voicetrain.hardware import current_rss_mb, meminfo, ram_warning

    available = meminfo().get("available_gb")
    if available is None:
        return None
    devices = str(t.devices)
    processes = int(devices) if devices.isdigit() else len(devices.split(",")) if "," in devices else 1
    return ram_warning(est.peak_rss_mb, current_rss_mb(), available * 1024, max(processes, 1))


def train(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: RunConfig, *, resume: bool | str = "auto",
          dry_run: bool = False, console: Console | None = None, init_state: dict[str, torch.Tensor] | None = None,
          setup_model=None, auto: "tuple[str, ...] | frozenset[str]" = ()) -> RunResult:
    """Train ``cfg.model`` on a prepared dataset into ``run_dir``.

    resume: 'auto' continues from RUN/checkpoints/last.ckpt when it exists; True requires it; False starts fresh.
    init_state / setup_model: fine-tuning hooks (warm start weights, freezing).
    auto: which of :data:`OPEN_SETTINGS` the caller left open (default none: ``cfg`` is used as given).
    Out of memory during training (a single process): the batch is halved and accumulation doubled, saved in
    RUN/config.yaml, and the run resumes from its last checkpoint, until the batch is 1
    (:class:`~voicetrain.training.oom.TrainingOutOfMemory`).
    The process's torch thread count is restored afterwards.
    """
    unknown = set(auto) - set(OPEN_SETTINGS)
    if unknown:
        raise ValueError(f"auto: unknown setting(s) {sorted(unknown)}; valid: {OPEN_SETTINGS}")
    console = console or Console(stderr=True)
    started = time.time()
    with keep_threads():
        while True:
            try:
                return _train(dataset_dir, run_dir, cfg, resume=resume, dry_run=dry_run, console=console,
                              init_state=init_state, setup_model=setup_model, auto=frozenset(auto))
            except OutOfMemoryInFit as oom:
                cfg = _after_out_of_memory(Path(run_dir), oom, console)
            # resume what this call trained: a checkpoint from before it only when the caller asked to resume
            ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
            resume = "auto" if resume or (ckpt.exists() and ckpt.stat().st_mtime >= started) else False
            auto = ()  # every setting is decided now (RUN/config.yaml)
            gc.collect()  # the failed attempt's tensors (its traceback held them), then the blocks they cached
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _after_out_of_memory(run_dir: Path, oom: OutOfMemoryInFit, console: Console) -> RunConfig:
    """The run's config (RUN/config.yaml: the settings the failed attempt used) with half the batch and twice the
    accumulation, saved; TrainingOutOfMemory at batch 1, or under DDP (one rank cannot resume alone: the halved
    settings are saved, and the same command run again resumes with them)."""
    used = load_yaml(RunConfig, run_dir / "config.yaml")
    new_train = halved(used.train, oom.error)
    cfg = dataclasses.replace(used, train=new_train)
    message = fallback_message(used.train, new_train, oom.step, oom.error)
    if oom.world_size > 1:
        if int(os.environ.get("RANK", os.environ.get("GLOBAL_RANK", "0")) or 0) == 0:
            save_yaml(cfg, run_dir / "config.yaml")
        raise TrainingOutOfMemory(
            f"{message.split(': batch')[0]} in one of {oom.world_size} DDP processes, which cannot resume alone. "
            f"Run the same command again: it resumes from the last checkpoint with batch {new_train.batch_size}, "
            f"accumulate {new_train.accumulate} (saved in {run_dir / 'config.yaml'})") from oom.error
    save_yaml(cfg, run_dir / "config.yaml")
    console.print(f"[yellow]{message}[/yellow]")
    with open(run_dir / "health.jsonl", "a", encoding="utf-8") as f:  # beside the health checks' warnings
        f.write(json.dumps({"step": oom.step, "kind": "out_of_memory", "message": message,
                            "batch_size": new_train.batch_size, "accumulate": new_train.accumulate}) + "\n")
    return cfg


def _train(dataset_dir, run_dir, cfg: RunConfig, *, resume, dry_run, console, init_state, setup_model,
           auto: frozenset[str]) -> RunResult:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from voicetrain.training.callbacks import EMAWeights, HealthCheck, MetricsFile, SampleWriter, TimeSnapshots
    from voicetrain.training.lit_module import TTSLightningModule

    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    cores = os.cpu_count() or 1
    threads = cfg.train.threads or cores
    torch.set_num_threads(threads)
    ckpt_dir = run_dir / "checkpoints"
    # resume position (step, sampler skip) must be known before the estimate and the loader, and whether the
    # run resumes before the open settings are filled
    rp = resume_point(ckpt_dir, resume)
    if rp.ckpt_path:
        console.print(f"resuming from {rp.ckpt_path}")
    cfg, probe = _fill_open_settings(cfg, auto, run_dir, rp, console)
    ds, cfg, symbols, stats = prepare_run(dataset_dir, run_dir, cfg)
    on_gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = build_model(cfg.model, cfg.model_config, len(symbols), cfg.audio.n_mels, len(cfg.speakers))
    if init_state is not None:
        model.load_state_dict(init_state)
    if setup_model is not None:
        setup_model(model)
    lit = TTSLightningModule(model, cfg, symbols, stats)
    lit.trainable_speaker_rows = getattr(setup_model, "trainable_speaker_rows", None)

    train_set, val_set, train_loader, val_loader = make_loaders(ds, cfg, symbols, stats, rp)
    if probe:
        found = probe_cuda_batch(model, TTSLightningModule, cfg, symbols, stats, train_set)
        console.print(f"hardware: {found.describe()}" + ("" if found.fits else
                      " - even batch 1 did not fit: training will run out of memory"))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=found.batch_size))
        save_yaml(cfg, run_dir / "config.yaml")
        lit.run_cfg = cfg
        train_set, val_set, train_loader, val_loader = make_loaders(ds, cfg, symbols, stats, rp)

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    console.print(f"[bold]{cfg.model}[/bold] ({cfg.preset}): {n_params/1e6:.2f} M parameters, {n_train/1e6:.2f} M trainable; "
                  f"{len(train_set)} train / {len(val_set)} val utterances; {len(cfg.speakers)} speaker(s); "
                  + (f"{threads} thread(s)" if cfg.train.threads else "threads: auto"))
    # on a GPU the thread count matters little (the estimate runs there too)
    options = (1, cores) if cfg.train.threads == 0 and cores > 1 and not on_gpu else ()
    # a resumed auto-thread run keeps the count it measured at its start: float sums differ between thread
    # counts, so a different choice would make the resumed run differ from an uninterrupted one
    chosen = _threads_chosen(run_dir) if options and rp.ckpt_path else None
    if chosen:
        options = (chosen,)
    est = estimate_speed(model, TTSLightningModule, cfg, symbols, stats, train_loader, thread_options=options,
                         start_step=rp.step, device="cuda" if on_gpu else "cpu")
    if chosen:
        console.print(f"threads: {chosen}, as measured when this run started (RUN/threads.json)")
    elif options:
        console.print("threads: " + ", ".join(f"{t}: {s:.2f} s/step" for t, s in est.measured.items())
                      + f" -> using {est.threads}")
        if not dry_run:
            atomic_write_text(run_dir / "threads.json", json.dumps({"threads": est.threads, "measured": est.measured}))
    console.print(f"estimate: {est.seconds_per_step:.2f} s/step, {est.samples_per_second:.1f} samples/s, "
                  f"peak RSS {est.peak_rss_mb:.0f} MB; ETA {est.eta_seconds/60:.1f} min for "
                  f"{cfg.train.max_steps} steps" + (f" (capped at {cfg.train.max_minutes} min)" if cfg.train.max_minutes else "")
                  + f"; batch {cfg.train.batch_size} x accumulate {cfg.train.accumulate}, precision {cfg.train.precision}")
    if not on_gpu:
        warning = _ram_warning(est, cfg.train)
        if warning:
            console.print(f"[yellow]memory:[/yellow] {warning}")
    if dry_run:
        return RunResult(str(run_dir), 0, 0.0, est.samples_per_second, est.peak_rss_mb, None, None, None, None, est,
                         stopped_because="dry-run")

    sentences = []
    for i in range(min(cfg.train.n_sample_sentences, len(val_set))):
        u = val_set.utts[i]
        ids, _ = symbols.encode(u.phonemes)
        sentences.append((u.id, ids, val_set.speakers[u.speaker]))

    def make_synth(pl_module):
        return Synthesizer.from_parts(pl_module.model, cfg, symbols, stats, griffin_lim_iters=16)

    t = cfg.train
    health = HealthCheck(run_dir, cfg.optim.warmup_steps, patience=t.early_stopping_patience, console=console)
    quality = _quality_tracker(ds, cfg, val_set, symbols, stats, health, console) if t.quality_sentences else None
    health.quality_tracked = quality is not None
    periodic, best = checkpoint_pair(ckpt_dir, t.checkpoint_every_steps, t.keep_last)
    callbacks = [
        *([quality] if quality else []),  # first: HealthCheck and MetricsFile read its quality/* metrics
        health,
        MetricsFile(run_dir, t.log_every_steps),
        SampleWriter(run_dir, t.sample_every_steps, sentences, make_synth),
        periodic, best,
    ]
    if quality is not None:
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="quality-step={step}-score={quality_score:.4f}", auto_insert_metric_name=False,
            monitor="quality_choice", mode="max", save_top_k=1, save_last=False))
    if cfg.optim.ema_decay > 0:
        callbacks.append(EMAWeights(cfg.optim.ema_decay))  # after SampleWriter: see its docstring
    if t.snapshot_minutes:
        callbacks.append(TimeSnapshots(ckpt_dir, list(t.snapshot_minutes)))
    trainer, wall = fit(lit, train_loader, val_loader, run_dir, t, callbacks, rp, num_nodes=t.num_nodes,
                        accumulate_grad_batches=t.accumulate, gradient_clip_val=cfg.optim.grad_clip or None)
    steps_done = trainer.global_step - rp.step
    m = trainer.callback_metrics
    # Lightning's Timer also sets should_stop, so ask the health check whether it stopped the run
    early = "early-stop" in health.warned
    stopped = "max_steps" if trainer.global_step >= t.max_steps else ("early stopping" if early else "time limit")
    result = RunResult(
        run_dir=str(run_dir), steps=trainer.global_step, wall_seconds=wall,
        # every DDP rank trains its own batches: the run's throughput is the ranks' sum
        samples_per_second=steps_done * t.batch_size * t.accumulate * trainer.world_size / wall if wall > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
        final_train_loss=float(m["train/loss"]) if "train/loss" in m else None,
        final_val_loss=float(m["val/loss"]) if "val/loss" in m else None,
        best_checkpoint=best.best_model_path or None,
        last_checkpoint=str(find_checkpoint(run_dir, "last")) if any(ckpt_dir.glob("*.ckpt")) else None,
        estimate=est, stopped_because=stopped,
        extra={"quality": quality.summary() if quality is not None else None},
    )
    write_result(run_dir, result, trainer)
    return result


def _quality_tracker(ds: PreparedDataset, cfg: RunConfig, val_set: TTSDataset, symbols: SymbolTable,
                     stats: FeatureStats, health, console: Console):
    """The QualityTracker for this run, or None (said once) when the eval extra's judges are missing."""
    from voicetrain.training.quality import QualitySentence, QualityTracker, judges_missing

    missing = judges_missing()
    if missing:
        console.print(f"[yellow]quality tracking off[/yellow]: {missing} not installed (pip install "
                      "'voicetrain[eval]'); checkpoints are chosen by validation loss")
        return None
    sentences = []
    for u in val_set.utts[: cfg.train.quality_sentences]:
        ids, _ = symbols.encode(u.phonemes)
        sentences.append(QualitySentence(u.id, u.text, ids, val_set.speakers[u.speaker], u.speaker, ds.root / u.audio))
    by_speaker: dict[str, list] = {}
    for u in sorted(ds.manifest("train"), key=lambda u: u.id):
        by_speaker.setdefault(u.speaker, []).append(u)
    clips = {}
    for spk in dict.fromkeys(s.speaker for s in sentences):
        us = by_speaker.get(spk, [])
        step = max(len(us) // max(cfg.train.quality_reference_clips, 1), 1)
        clips[spk] = [ds.root / u.audio for u in us[::step][: cfg.train.quality_reference_clips]]

    def make_synth(pl_module):  # the run's own vocoder, as `voicetrain synth` would use it
        return Synthesizer.from_parts(pl_module.model, cfg, symbols, stats)

    return QualityTracker(sentences, make_synth, reference_clips=clips, dnsmos=cfg.train.quality_dnsmos,
                          health=health, patience=cfg.train.early_stopping_patience, console=console)


def _threads_chosen(run_dir: Path) -> int | None:
    """The torch thread count an auto-thread run measured and used at its start (RUN/threads.json), if any."""
    try:
        n = json.loads((run_dir / "threads.json").read_text(encoding="utf-8"))["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return n if isinstance(n, int) and n >= 1 else None

