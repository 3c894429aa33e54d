"""GPU-aware defaults in train(): the open settings filled for a described device (or kept on resume), and the
batch probe's real training step run on the CPU against a fake device memory."""

from __future__ import annotations

import dataclasses
import io

import torch
from rich.console import Console

from tests.training.conftest import tiny_cfg
from voicetrain import hardware
from voicetrain.config import save_yaml
from voicetrain.data.cache import FeatureStats
from voicetrain.data.manifest import PreparedDataset
from voicetrain.hardware import DeviceInfo, memory_fits, probe_batch_size
from voicetrain.models.registry import build_model, model_config
from voicetrain.run_config import RunConfig
from voicetrain.text.symbols import SymbolTable
from voicetrain.training.lit_module import TTSLightningModule
from voicetrain.training.loop import ResumePoint
from voicetrain.training.oom import is_out_of_memory
from voicetrain.training.train import (
    OPEN_SETTINGS, _fill_open_settings, _single_process, batch_probe_step, make_loaders)

ALL = frozenset(OPEN_SETTINGS)


def _quiet():
    return Console(file=io.StringIO(), width=300)


def test_open_settings_follow_the_described_device(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: DeviceInfo("NVIDIA A100", (8, 0), 40.0))
    cfg, probe = _fill_open_settings(RunConfig(), ALL, tmp_path, ResumePoint(), _quiet())
    assert (cfg.preset, cfg.train.precision, probe) == ("gpu", "bf16-mixed", True)
    assert cfg.train.batch_size == 16  # the probe starts here once model and data exist

    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: DeviceInfo("Tesla T4", (7, 5), 14.6))
    chosen = RunConfig(preset="tiny")  # the user chose the preset; precision and batch are open
    cfg, probe = _fill_open_settings(chosen, frozenset({"train.precision", "train.batch_size"}), tmp_path,
                                     ResumePoint(), _quiet())
    assert (cfg.preset, cfg.train.precision, probe) == ("tiny", "16-mixed", True)

    cfg, probe = _fill_open_settings(RunConfig(), ALL - {"train.batch_size"}, tmp_path, ResumePoint(), _quiet())
    assert probe is False  # a batch given by the user is never probed

    # under DDP every process would probe alone (all on device 0 before Lightning assigns devices): not probed
    out = io.StringIO()
    ddp = dataclasses.replace(RunConfig(), train=dataclasses.replace(RunConfig().train, devices="2"))
    cfg, probe = _fill_open_settings(ddp, ALL, tmp_path, ResumePoint(), Console(file=out, width=300))
    assert (cfg.preset, probe) == ("gpu", False) and "not probed under DDP" in out.getvalue()


def test_single_process(monkeypatch):
    from voicetrain.run_config import TrainConfig

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert _single_process(TrainConfig(devices="1")) and _single_process(TrainConfig(devices="0,"))
    assert not _single_process(TrainConfig(devices="2")) and not _single_process(TrainConfig(devices="0,1"))
    assert not _single_process(TrainConfig(devices="1", num_nodes=2))
    assert _single_process(TrainConfig(devices="auto")) == (torch.cuda.device_count() <= 1)
    monkeypatch.setenv("SLURM_NTASKS", "8")  # srun started 8 tasks
    assert not _single_process(TrainConfig(devices="1"))


def _with_batch(cfg: RunConfig, batch_size: int) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))


def test_the_cpu_or_a_cpu_accelerator_takes_the_cpu_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: None)
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda cpuinfo=None: False)
    cfg, probe = _fill_open_settings(RunConfig(), ALL, tmp_path, ResumePoint(), _quiet())
    assert cfg == _with_batch(RunConfig(), hardware.CPU_BATCH_SIZE) and probe is False
    assert hardware.CPU_BATCH_SIZE == 8 != RunConfig().train.batch_size
    # a batch the user gave is not open: it stays
    cfg, _ = _fill_open_settings(RunConfig(), ALL - {"train.batch_size"}, tmp_path, ResumePoint(), _quiet())
    assert cfg == RunConfig()
    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: DeviceInfo("NVIDIA A100", (8, 0), 40.0))
    cpu = dataclasses.replace(RunConfig(), train=tiny_cfg(accelerator="cpu", batch_size=16).train)
    # the GPU is not asked: CPU defaults, no probe
    assert _fill_open_settings(cpu, ALL, tmp_path, ResumePoint(), _quiet()) == (_with_batch(cpu, 8), False)
    assert _fill_open_settings(RunConfig(), frozenset(), tmp_path, ResumePoint(), _quiet()) == (RunConfig(), False)


def test_a_cpu_with_native_bf16_trains_in_bf16_mixed(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: None)
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda cpuinfo=None: True)
    cfg, probe = _fill_open_settings(RunConfig(), ALL, tmp_path, ResumePoint(), _quiet())
    assert (cfg.preset, cfg.train.precision, cfg.train.batch_size, probe) == ("cpu", "bf16-mixed", 8, False)
    # a precision the user set is not open: it stays
    cfg, _ = _fill_open_settings(RunConfig(), ALL - {"train.precision"}, tmp_path, ResumePoint(), _quiet())
    assert cfg.train.precision == "32-true"


def test_a_resumed_run_keeps_its_settings(monkeypatch, tmp_path):
    """What the machine picked (or an out-of-memory fallback halved) at the run's start stays, on any machine."""
    monkeypatch.setattr(hardware, "describe_cuda_device", lambda i=0: None)
    saved = dataclasses.replace(RunConfig(preset="gpu"),
                                train=tiny_cfg(batch_size=24, accumulate=2, precision="bf16-mixed").train)
    save_yaml(saved, tmp_path / "config.yaml")
    out = io.StringIO()
    cfg, probe = _fill_open_settings(RunConfig(), ALL, tmp_path, ResumePoint("last.ckpt", 10), Console(file=out))
    assert (cfg.preset, cfg.train.precision, cfg.train.batch_size, cfg.train.accumulate) == ("gpu", "bf16-mixed", 24, 2)
    assert probe is False and "resumed run keeps" in out.getvalue()


class Recording:
    """The training set, noting which utterances were read."""

    def __init__(self, inner):
        self.inner, self.lengths, self.seen = inner, inner.lengths, []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        self.seen.append(i)
        return self.inner[i]


def test_the_probe_step_trains_a_copy_on_the_longest_utterances(prepared_demo_dataset):
    """The real step (forward, losses, backward, AdamW) on the CPU; the device memory is a fake that grows by
    1 GB per utterance on a 6.5 GB device (85%: 5.5 GB, so 5 utterances fit)."""
    ds = PreparedDataset.open(prepared_demo_dataset)
    cfg = dataclasses.replace(tiny_cfg(), speakers=list(ds.info.speakers))
    symbols, stats = SymbolTable.load(ds.symbols_path), FeatureStats.load(ds.stats_path)
    train_set, *_ = make_loaders(ds, cfg, symbols, stats)
    model = build_model("fastspeech2", model_config("fastspeech2", "tiny"), len(symbols), 80, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recording = Recording(train_set)
    step = batch_probe_step(model, TTSLightningModule, cfg, symbols, stats, recording, "cpu")
    peak = {"bytes": 0}

    def run_step(b: int) -> None:
        step(b)  # a real step: raises on any real error
        peak["bytes"] = b * 1024**3

    fits = memory_fits(run_step, lambda: peak["bytes"], lambda: peak.update(bytes=0), 5.5 * 1024**3, is_out_of_memory)
    r = probe_batch_size(fits, start=2, cap=len(train_set))
    assert r.fits and r.batch_size == 5 and [b for b, _ in r.trials][:3] == [2, 4, 8]
    longest = sorted(range(len(train_set)), key=lambda i: train_set.lengths[i], reverse=True)
    assert recording.seen[:2] == longest[:2] and recording.seen[2:6] == longest[:4]  # each trial: the longest utterances first
    for k, v in model.state_dict().items():  # the probe trains a throw-away copy
        assert torch.equal(v, before[k]), k
