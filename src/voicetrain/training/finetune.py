"""Fine-tune a trained voice to new speaker(s): warm start, freezing, speaker-table extension.

The base is the shipped multi-speaker voice ``builtin`` unless ``--from`` names a RUN folder, a
checkpoint, a registered voice (NAME[@vN]) or a bundle folder. Its symbol table and mel statistics
are kept (the model was trained on them); the dataset's speakers are appended to the speaker
table. Each new row starts from the base speaker whose voice is nearest by the speaker encoder
(``speaker_init="nearest"``: the mean resemblyzer embedding of the new speaker's clips against each
base speaker's centroid), or from the mean of the existing rows (``"mean"``). The new speakers'
pitch statistics come from the dataset (pitch is modelled relative to each speaker's own mean and
spread).

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

import numpy as np

from voicetrain.config import ConfigError, load_yaml
from voicetrain.data.cache import FeatureStats
from voicetrain.data.manifest import PreparedDataset
from voicetrain.fileio import atomic_write_json, atomic_write_text
from voicetrain.inference.checkpoint import find_checkpoint, load_model, model_state_from_checkpoint, load_checkpoint_safe
from voicetrain.registry.store import BUILTIN
from voicetrain.run_config import STRATEGIES, FinetuneConfig, OptimConfig, RunConfig, TrainConfig
from voicetrain.voice_config import VOICE_KEYS, VoiceConfig

CENTROIDS = "speaker_centroids.json"
"""A bundle file: each base speaker's resemblyzer centroid (L2-normed mean d-vector of its clips)."""

# Defaults tuned for 2-10 minutes of audio: few steps, frequent validation, early stopping.
STRATEGY_DEFAULTS: dict[str, dict] = {
    # one 160-dim vector per speaker: a high rate is safe and reaches the voice fastest
    "speaker-embedding": {"lr": 1e-2, "warmup_steps": 20},
    # the speaker's row plus ~12 k biases and norm gains: few parameters, so a higher rate than full
    "bitfit": {"lr": 3e-3, "warmup_steps": 20},
    "freeze-encoder": {"lr": 1e-3, "warmup_steps": 50},
    "full": {"lr": 5e-4, "warmup_steps": 50},
}
FINETUNE_TRAIN = TrainConfig(max_steps=2000, val_every_steps=100, checkpoint_every_steps=100, sample_every_steps=500,
                             early_stopping_patience=5)
"""A fine-tune's loop unless told otherwise (``voicetrain finetune``'s defaults)."""


class IncompatibleBaseError(ConfigError):
    """The dataset cannot be fine-tuned from this base; the message says exactly why."""


def unseen_symbols(base_symbols, ds: PreparedDataset) -> dict[str, int]:
    """Phoneme symbols of the dataset that the base's symbol table lacks, with their counts."""
    known = set(base_symbols.symbols)
    unseen: dict[str, int] = {}
    for split in ("train", "val"):
        for u in ds.manifest(split):
            for c in u.phonemes:
                if c not in known:
                    unseen[c] = unseen.get(c, 0) + 1
    return unseen


def check_compatible(base_cfg: VoiceConfig, base_symbols, ds: PreparedDataset, max_new_symbols: int = 0) -> None:
    """Raise IncompatibleBaseError naming every mismatch between the base and the dataset.

    Up to ``max_new_symbols`` phoneme symbols the base never saw are allowed (fine-tuning learns them
    as new rows of the phoneme table); more than that means another language or phonemizer.
    """
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
    unseen = unseen_symbols(base_symbols, ds)
    if len(unseen) > max_new_symbols:
        listed = ", ".join(f"{c!r} ({n}x)" for c, n in sorted(unseen.items(), key=lambda x: -x[1]))
        problems.append(f"phoneme symbols the base never saw: {listed}")
    if problems:
        raise IncompatibleBaseError(
            f"{ds.root} cannot be fine-tuned from this base:\n  - " + "\n  - ".join(problems)
            + "\nRe-run `voicetrain prepare` with the base's settings (--sample-rate, --language), "
              "or train from scratch with `voicetrain train`.")


@dataclass
class Base:
    """A base voice ready to fine-tune from: a training run's checkpoint or a bundle (``builtin`` included)."""

    path: Path
    """The checkpoint file or the bundle folder."""
    voice: VoiceConfig
    symbols: object  # SymbolTable
    stats: FeatureStats
    model: torch.nn.Module
    state: dict[str, torch.Tensor]
    """float32 weights (a bundle's fp16 weights are widened here)."""
    centroids: dict[str, np.ndarray] | None
    """Speaker-encoder centroid of each base speaker, when the base carries them."""
    dataset: str = ""
    """The dataset the base was trained on, as its config recorded it ('' when it does not say)."""


def load_base(base: str | os.PathLike | None) -> Base:
    """``None`` means the shipped ``builtin`` voice; a folder with voice.json or a registered NAME is a
    bundle (hash-checked); anything else is a RUN folder or checkpoint file."""
    import json

    from voicetrain.inference.bundle import load_bundle_parts, resolve_voice
    from voicetrain.registry.store import is_bundle_dir

    base = BUILTIN if base is None else base
    p = Path(base)
    if p.is_file() or (p.is_dir() and not is_bundle_dir(p)):
        ckpt_path = find_checkpoint(p, "best")
        loaded = load_model(ckpt_path)
        state = model_state_from_checkpoint(load_checkpoint_safe(ckpt_path))
        return Base(Path(ckpt_path), loaded.voice, loaded.symbols, loaded.stats, loaded.model, state, None,
                    str(loaded.run_config.get("dataset") or ""))
    if not p.exists() and (os.sep in str(base) or str(base).endswith((".ckpt", ".safetensors"))):
        raise FileNotFoundError(f"--from {base}: no such run folder, checkpoint or bundle")
    parts = load_bundle_parts(resolve_voice(str(base) if not p.is_dir() else p))
    state = {k: v.detach().float().clone() for k, v in parts.model.state_dict().items()}
    centroids = None
    cpath = parts.path / CENTROIDS
    if cpath.is_file():
        raw = json.loads(cpath.read_text(encoding="utf-8"))
        centroids = {k: np.asarray(v, dtype=np.float32) for k, v in raw.items()}
    old_run_config = parts.info.get("run_config")  # bundles before VoiceConfig embed the whole run config
    dataset = str(old_run_config.get("dataset") or "") if isinstance(old_run_config, dict) else ""
    return Base(parts.path, parts.voice, parts.symbols, parts.stats, parts.model, state, centroids, dataset)


def speaker_centroids(ds: PreparedDataset, encoder, per_speaker: int = 10, split: str = "train") -> dict[str, np.ndarray]:
    """Each speaker's resemblyzer centroid from ``per_speaker`` clips spread over its utterances."""
    from voicetrain.audio.io import load_audio, to_mono
    from voicetrain.evaluation.metrics import mean_embedding

    by: dict[str, list] = {}
    for u in ds.manifest(split):
        by.setdefault(u.speaker, []).append(u)
    out = {}
    for spk, us in sorted(by.items()):
        us = sorted(us, key=lambda u: u.id)
        picked = [us[int(i)] for i in np.linspace(0, len(us) - 1, min(per_speaker, len(us)))]
        embs = []
        for u in picked:
            a, sr = load_audio(ds.root / u.audio)
            embs.append(encoder.embed(to_mono(a), sr))
        out[spk] = mean_embedding(embs)
    return out


def nearest_speaker(target: np.ndarray, centroids: dict[str, np.ndarray]) -> tuple[str, float]:
    """The base speaker whose centroid has the highest cosine with ``target``, and that cosine."""
    from voicetrain.evaluation.metrics import cosine_similarity

    sims = {k: cosine_similarity(target, c) for k, c in centroids.items()}
    best = max(sims, key=sims.get)
    return best, sims[best]


def _base_centroids(base: Base, encoder, console: Console) -> dict[str, np.ndarray] | None:
    """The base's shipped centroids, or computed from the base run's dataset when it is still there."""
    if base.centroids is not None:
        return base.centroids
    ds_path = base.dataset
    if ds_path and (Path(ds_path) / "dataset.yaml").exists():
        console.print(f"speaker init: measuring the base speakers' voices from {ds_path}")
        return speaker_centroids(PreparedDataset.open(ds_path), encoder, per_speaker=5)
    return None


def modules_to_freeze(model: torch.nn.Module, strategy: str, extra: list[str]) -> list[str]:
    groups = model.parameter_groups()
    top = [name for name, _ in model.named_children()]
    if strategy == "speaker-embedding":
        names = [n for n in top if n != "speaker_embedding"]
    elif strategy == "freeze-encoder":
        names = list(groups["encoder"])
    elif strategy in ("full", "bitfit"):  # bitfit freezes by parameter, not by module (_Setup)
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


def bitfit_parameters(model: torch.nn.Module) -> set[str]:
    """Names of the parameters the ``bitfit`` strategy trains: every bias, every normalization layer's
    parameters and the speaker table (BitFit, Ben Zaken et al. 2022, plus the speaker's own row)."""
    norms = {name for name, m in model.named_modules()
             if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))}
    return {name for name, _ in model.named_parameters()
            if name.endswith(".bias") or name.rsplit(".", 1)[0] in norms or name.startswith("speaker_embedding.")}


class _Setup:
    """Callable passed to train(): freezes modules (or, for ``bitfit``, every weight but the biases and norms);
    carries which speaker rows may train."""

    def __init__(self, frozen: list[str], trainable_rows: list[int] | None, console: Console, bitfit: bool = False,
                 new_symbol_rows: list[int] | None = None):
        self.frozen = frozen
        self.trainable_speaker_rows = trainable_rows
        self.bitfit = bitfit
        self.new_symbol_rows = new_symbol_rows or []
        self.console = console
        self.report: dict[str, int] = {}

    def __call__(self, model: torch.nn.Module) -> None:
        for name in self.frozen:
            for p in getattr(model, name).parameters():
                p.requires_grad_(False)
        if self.bitfit:
            keep = bitfit_parameters(model)
            for name, p in model.named_parameters():
                p.requires_grad_(name in keep)
        table = getattr(model, "embedding", None)
        if self.new_symbol_rows and table is not None and not table.weight.requires_grad:
            # the phoneme rows this dataset added start as the mean row: they must learn even where the
            # strategy freezes the table; a gradient mask keeps every row the base knew as it was
            mask = torch.zeros(table.weight.shape[0], 1)
            mask[self.new_symbol_rows] = 1.0
            table.weight.requires_grad_(True)
            table.weight.register_hook(lambda g: g * mask.to(g))
            self.report["embedding"] = len(self.new_symbol_rows) * table.weight.shape[1]
        for name, module in model.named_children():
            n = sum(p.numel() for p in module.parameters() if p.requires_grad)
            if n and name not in self.report:
                self.report[name] = n
        if self.trainable_speaker_rows is not None:
            dim = model.speaker_embedding.weight.shape[1]
            self.report["speaker_embedding"] = dim * len(self.trainable_speaker_rows)
        total = sum(self.report.values())
        self.console.print(f"trainable: {total:,} parameters in " + ", ".join(
            f"{k} ({v:,})" for k, v in self.report.items()) + f"; frozen: {', '.join(self.frozen) or 'nothing'}")


def finetune(dataset_dir: str | os.PathLike, base: str | os.PathLike | None, run_dir: str | os.PathLike,
             ft: FinetuneConfig = FinetuneConfig(), train: TrainConfig = FINETUNE_TRAIN, lr: float | None = None,
             console: Console | None = None, resume: bool | str = "auto", auto: tuple[str, ...] = ()):
    """Fine-tune ``base`` (None: ``builtin``; a run folder, checkpoint, NAME or bundle) on a prepared dataset into
    ``run_dir``. ``ft`` is the run's ``finetune`` section, ``train`` its loop; ``lr`` None is the strategy's.
    ``auto``: loop settings left to this machine (as :func:`voicetrain.training.train.train`'s, e.g.
    ``("train.precision",)``: bf16-mixed on CPUs with native bfloat16); the default uses ``train`` as given."""
    from voicetrain.training.train import train as train_run

    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    b = load_base(base)
    ckpt_path = b.path
    ds = PreparedDataset.open(dataset_dir)
    check_compatible(b.voice, b.symbols, ds, max_new_symbols=ft.max_new_symbols)

    ds_speakers = list(ds.info.speakers) or sorted({u.speaker for u in ds.manifest("train")})
    if ft.speaker_name and len(ds_speakers) != 1:
        raise ConfigError(f"--speaker-name renames a single speaker, but {ds.root} has {len(ds_speakers)}: {ds_speakers}")
    names = [ft.speaker_name] if ft.speaker_name else ds_speakers
    speaker_map = dict(zip(ds_speakers, names))
    old = list(b.voice.speakers)
    new = [n for n in names if n not in old]
    table = old + new

    # pitch statistics of the new speakers come from this dataset
    ds_stats = FeatureStats.load(ds.stats_path)
    stats = dataclasses.replace(b.stats, log_f0_mean=dict(b.stats.log_f0_mean), log_f0_std=dict(b.stats.log_f0_std))
    for ds_name, name in speaker_map.items():
        for key in (ds_name, name):
            stats.log_f0_mean[key] = ds_stats.log_f0_mean.get(ds_name, next(iter(ds_stats.log_f0_mean.values())))
            stats.log_f0_std[key] = ds_stats.log_f0_std.get(ds_name, next(iter(ds_stats.log_f0_std.values())))

    # warm-start weights with the speaker table extended by the new speakers' starting rows
    state = dict(b.state)
    symbols = b.symbols
    extra_symbols = sorted(unseen_symbols(b.symbols, ds))
    if extra_symbols:
        # a few symbols the base never met (a rare phoneme, a stress mark): new rows of the phoneme
        # table, starting from the mean row, appended so every known symbol keeps its id
        console.print(f"[yellow]warning:[/] the base never saw the phoneme symbols {extra_symbols}; they get new "
                      "rows of the phoneme table, learned from this dataset only")
        symbols = dataclasses.replace(b.symbols, symbols=(*b.symbols.symbols, *extra_symbols))
        table_w = state["embedding.weight"]
        state["embedding.weight"] = torch.cat(
            [table_w, table_w[1:].mean(0, keepdim=True).expand(len(extra_symbols), -1)], 0).clone()
    emb = state["speaker_embedding.weight"]
    init_report: dict = {"method": ft.speaker_init, "speakers": {}}
    if new:
        rows = [emb.mean(0)] * len(new)
        if ft.speaker_init == "nearest":
            rows = _nearest_rows(b, ds, [k for k, v in speaker_map.items() if v in new], emb, old, init_report,
                                 console) or rows
        state["speaker_embedding.weight"] = torch.cat([emb, torch.stack(rows)], 0).clone()

    defaults = STRATEGY_DEFAULTS[ft.strategy]
    frozen = modules_to_freeze(b.model, ft.strategy, ft.freeze)
    trainable_rows = [table.index(n) for n in names] if ft.strategy in ("speaker-embedding", "bitfit") else None
    cfg = RunConfig(
        **{k: getattr(b.voice, k) for k in VOICE_KEYS}, optim=OptimConfig(
            lr=lr or defaults["lr"], warmup_steps=defaults["warmup_steps"], decay="constant"), train=train,
        finetune=dataclasses.replace(ft, init_from=str(Path(ckpt_path).resolve()), frozen=frozen,
                                     trainable_speakers=names if trainable_rows is not None else []))
    cfg = dataclasses.replace(cfg, speakers=table, speaker_map=speaker_map)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists() and resume:
        cfg = load_yaml(RunConfig, run_dir / "config.yaml")  # resume exactly as configured
    symbols.save(run_dir / "symbols.json")
    stats.save(run_dir / "stats.json")
    atomic_write_text(run_dir / "base.txt", f"{Path(ckpt_path).resolve()}\n")
    if new:
        atomic_write_json(run_dir / "speaker_init.json", init_report)
    console.print(f"fine-tuning {b.voice.model} from {ckpt_path} ({ft.strategy}); speakers: {old} + new {new}")
    setup = _Setup(list(cfg.finetune.frozen), [table.index(n) for n in cfg.finetune.trainable_speakers] or None, console,
                   bitfit=cfg.finetune.strategy == "bitfit",
                   new_symbol_rows=list(range(len(b.symbols.symbols), len(symbols.symbols))))
    result = train_run(dataset_dir, run_dir, cfg, resume=resume, console=console, init_state=state, setup_model=setup,
                       auto=auto)
    result.extra["trainable_parameters"] = setup.report
    result.extra["speaker_init"] = init_report
    return result


def _nearest_rows(b: Base, ds: PreparedDataset, ds_names: list[str], emb: torch.Tensor, old: list[str],
                  report: dict, console: Console) -> list[torch.Tensor] | None:
    """Rows of the base speakers nearest to each new speaker, or None (with the reason said) to fall back."""
    try:
        from voicetrain.evaluation.models import SpeakerEncoder

        encoder = SpeakerEncoder()
    except ImportError as e:
        console.print(f"speaker init: the speaker encoder is not installed ({e}); starting from the mean row "
                      "(install voicetrain[eval] for the nearest-speaker start)")
        report["method"] = "mean"
        return None
    centroids = _base_centroids(b, encoder, console)
    known = {k: v for k, v in (centroids or {}).items() if k in old}
    if not known:
        console.print("speaker init: the base carries no speaker centroids and its dataset is gone; "
                      "starting from the mean row")
        report["method"] = "mean"
        return None
    mine = speaker_centroids(ds, encoder, per_speaker=10)
    rows = []
    for name in ds_names:
        spk, sim = nearest_speaker(mine[name], known)
        report["speakers"][name] = {"nearest": spk, "similarity": round(sim, 4)}
        console.print(f"speaker init: {name} starts from base speaker {spk} (speaker-encoder cosine {sim:.3f})")
        rows.append(emb[old.index(spk)])
    return rows
