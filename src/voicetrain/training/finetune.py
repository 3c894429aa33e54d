"""Fine-tune a trained voice to new speaker(s): warm start, freezing, speaker-table extension.

The base's symbol table and mel statistics are kept (the model was trained on them);
the dataset's speakers are appended to the speaker table, each new row initialized
from the mean of the existing rows; the new speakers' pitch statistics come from the
dataset (pitch is modelled relative to each speaker's own mean and spread).

Strategies:

- ``speaker-embedding``: everything frozen except the new speakers' rows of the speaker
  table (the other rows' gradients are masked to zero, and embeddings get no weight decay,
  so existing speakers stay bit-identical);
- ``freeze-encoder``: the phoneme embedding and text encoder are frozen;
- ``full``: all weights train, with a lower learning rate;
- ``--freeze``: extra module or group names to freeze, for custom choices.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from voicetrain.config import ConfigError, load_yaml
from voicetrain.data.cache import FeatureStats
from voicetrain.data.manifest import PreparedDataset
from voicetrain.fileio import atomic_write_text
from voicetrain.inference.checkpoint import find_checkpoint, load_model, model_state_from_checkpoint, load_checkpoint_safe
from voicetrain.run_config import OptimConfig, RunConfig, TrainConfig

STRATEGIES = ("speaker-embedding", "freeze-encoder", "full")

# Defaults tuned for 2-10 minutes of audio: few steps, frequent validation, early stopping.
STRATEGY_DEFAULTS: dict[str, dict] = {
    # one 160-dim vector per speaker: a high rate is safe and reaches the voice fastest
    "speaker-embedding": {"lr": 1e-2, "warmup_steps": 20},
    "freeze-encoder": {"lr": 1e-3, "warmup_steps": 50},
    "full": {"lr": 5e-4, "warmup_steps": 50},
}


class IncompatibleBaseError(ConfigError):
    """The dataset cannot be fine-tuned from this base; the message says exactly why."""


@dataclass(frozen=True)
class FinetuneConfig:
    strategy: str = "speaker-embedding"
    speaker_name: str = ""
    """Name for the dataset's speaker in the voice's speaker table (single-speaker datasets)."""
    freeze: list[str] = dataclasses.field(default_factory=list)
    lr: float | None = None
    max_steps: int = 2000
    max_minutes: float | None = None
    batch_size: int = 16
    val_every_steps: int = 100
    early_stopping_patience: int = 5
    threads: int = 0
    seed: int = 0
    snapshot_minutes: list[float] = dataclasses.field(default_factory=list)
    quality_sentences: int = 8
    """As TrainConfig.quality_sentences: score the new voice at every validation and keep its best by quality."""


def check_compatible(base_cfg: RunConfig, base_symbols, ds: PreparedDataset) -> None:
    """Raise IncompatibleBaseError naming every mismatch between the base and the dataset."""
    problems = []
    a, b = base_cfg.audio, ds.info.audio
    for f in dataclasses.fields(a):
        if f.name in ("f0_min", "f0_max"):
            continue
        if getattr(a, f.name) != getattr(b, f.name):
            problems.append(f"audio.{f.name}: base {getattr(a, f.name)} vs dataset {getattr(b, f.name)}")
    if base_cfg.text.language != ds.info.text.language:
        problems.append(f"language: base {base_cfg.text.language!r} vs dataset {ds.info.text.language!r}")
    if base_cfg.text.phonemizer != ds.info.text.phonemizer:
        problems.append(f"phonemizer: base {base_cfg.text.phonemizer!r} vs dataset {ds.info.text.phonemizer!r}")
    known = set(base_symbols.symbols)
    unseen: dict[str, int] = {}
    for split in ("train", "val"):
        for u in ds.manifest(split):
            for c in u.phonemes:
                if c not in known:
                    unseen[c] = unseen.get(c, 0) + 1
    if unseen:
        listed = ", ".join(f"{c!r} ({n}x)" for c, n in sorted(unseen.items(), key=lambda x: -x[1]))
        problems.append(f"phoneme symbols the base never saw: {listed}")
    if problems:
        raise IncompatibleBaseError(
            f"{ds.root} cannot be fine-tuned from this base:\n  - " + "\n  - ".join(problems)
            + "\nRe-run `voicetrain prepare` with the base's settings (--sample-rate, --language), "
              "or train from scratch with `voicetrain train`.")


def modules_to_freeze(model: torch.nn.Module, strategy: str, extra: list[str]) -> list[str]:
    groups = model.parameter_groups()
    top = [name for name, _ in model.named_children()]
    if strategy == "speaker-embedding":
        names = [n for n in top if n != "speaker_embedding"]
    elif strategy == "freeze-encoder":
        names = list(groups["encoder"])
    elif strategy == "full":
        names = []
    else:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for e in extra:
        if e in groups:
            names += groups[e]
        elif e in top:
            names.append(e)
        else:
            raise ConfigError(f"--freeze {e!r}: no such module or group; modules: {', '.join(top)}; "
                              f"groups: {', '.join(groups)}")
    return sorted(set(names))


class _Setup:
    """Callable passed to train(): freezes modules; carries which speaker rows may train."""

    def __init__(self, frozen: list[str], trainable_rows: list[int] | None, console: Console):
        self.frozen = frozen
        self.trainable_speaker_rows = trainable_rows
        self.console = console
        self.report: dict[str, int] = {}

    def __call__(self, model: torch.nn.Module) -> None:
        for name in self.frozen:
            for p in getattr(model, name).parameters():
                p.requires_grad_(False)
        for name, module in model.named_children():
            n = sum(p.numel() for p in module.parameters() if p.requires_grad)
            if n:
                self.report[name] = n
        if self.trainable_speaker_rows is not None:
            dim = model.speaker_embedding.weight.shape[1]
            self.report = {"speaker_embedding": dim * len(self.trainable_speaker_rows)}
        total = sum(self.report.values())
        self.console.print(f"trainable: {total:,} parameters in " + ", ".join(
            f"{k} ({v:,})" for k, v in self.report.items()) + f"; frozen: {', '.join(self.frozen) or 'nothing'}")


def finetune(dataset_dir: str | os.PathLike, base: str | os.PathLike, run_dir: str | os.PathLike,
             ft: FinetuneConfig, console: Console | None = None, resume: bool | str = "auto"):
    """Fine-tune ``base`` (a run folder or checkpoint) on a prepared dataset into ``run_dir``."""
    from voicetrain.training.train import train

    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    if ft.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {ft.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    ckpt_path = find_checkpoint(base, "best")
    base_ckpt = load_model(ckpt_path)
    ds = PreparedDataset.open(dataset_dir)
    check_compatible(base_ckpt.run_cfg, base_ckpt.symbols, ds)

    ds_speakers = list(ds.info.speakers) or sorted({u.speaker for u in ds.manifest("train")})
    if ft.speaker_name and len(ds_speakers) != 1:
        raise ConfigError(f"--speaker-name renames a single speaker, but {ds.root} has {len(ds_speakers)}: {ds_speakers}")
    names = [ft.speaker_name] if ft.speaker_name else ds_speakers
    speaker_map = dict(zip(ds_speakers, names))
    old = list(base_ckpt.run_cfg.speakers)
    new = [n for n in names if n not in old]
    table = old + new

    # pitch statistics of the new speakers come from this dataset
    ds_stats = FeatureStats.load(ds.stats_path)
    stats = dataclasses.replace(base_ckpt.stats, log_f0_mean=dict(base_ckpt.stats.log_f0_mean),
                                log_f0_std=dict(base_ckpt.stats.log_f0_std))
    for ds_name, name in speaker_map.items():
        for key in (ds_name, name):
            stats.log_f0_mean[key] = ds_stats.log_f0_mean.get(ds_name, next(iter(ds_stats.log_f0_mean.values())))
            stats.log_f0_std[key] = ds_stats.log_f0_std.get(ds_name, next(iter(ds_stats.log_f0_std.values())))

    # warm-start weights with the speaker table extended by the mean of the existing rows
    state = model_state_from_checkpoint(load_checkpoint_safe(ckpt_path))
    emb = state["speaker_embedding.weight"]
    if new:
        init = emb.mean(0, keepdim=True).expand(len(new), -1)
        state["speaker_embedding.weight"] = torch.cat([emb, init], 0).clone()

    defaults = STRATEGY_DEFAULTS[ft.strategy]
    frozen = modules_to_freeze(base_ckpt.model, ft.strategy, ft.freeze)
    trainable_rows = [table.index(n) for n in names] if ft.strategy == "speaker-embedding" else None
    bc = base_ckpt.run_cfg
    cfg = dataclasses.replace(
        bc, speakers=table, speaker_map=speaker_map, init_from=str(Path(ckpt_path).resolve()), frozen=frozen,
        trainable_speakers=names if trainable_rows is not None else [], finetune_strategy=ft.strategy,
        optim=OptimConfig(lr=ft.lr or defaults["lr"], warmup_steps=defaults["warmup_steps"], decay="constant"),
        train=TrainConfig(batch_size=ft.batch_size, max_steps=ft.max_steps, max_minutes=ft.max_minutes,
                          val_every_steps=ft.val_every_steps, checkpoint_every_steps=ft.val_every_steps,
                          sample_every_steps=ft.val_every_steps * 5, early_stopping_patience=ft.early_stopping_patience,
                          threads=ft.threads, seed=ft.seed, snapshot_minutes=list(ft.snapshot_minutes),
                          quality_sentences=ft.quality_sentences),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists() and resume:
        cfg = load_yaml(RunConfig, run_dir / "config.yaml")  # resume exactly as configured
    base_ckpt.symbols.save(run_dir / "symbols.json")
    stats.save(run_dir / "stats.json")
    atomic_write_text(run_dir / "base.txt", f"{Path(ckpt_path).resolve()}\n")
    console.print(f"fine-tuning {bc.model} from {ckpt_path} ({ft.strategy}); speakers: {old} + new {new}")
    setup = _Setup(list(cfg.frozen), [table.index(n) for n in cfg.trainable_speakers] or None, console)
    result = train(dataset_dir, run_dir, cfg, resume=resume, console=console, init_state=state, setup_model=setup)
    result.extra["trainable_parameters"] = setup.report
    return result
