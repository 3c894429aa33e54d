"""voicetrain.hardware: defaults for described devices, the batch probe over a fake device memory, the RAM warning."""

from __future__ import annotations

import pytest
import torch

from voicetrain import doctor, hardware
from voicetrain.hardware import DeviceInfo, choose_defaults, memory_fits, probe_batch_size, ram_warning

GB = 1024**3


@pytest.mark.parametrize("device, preset, precision", [
    (DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 79.1), "gpu", "bf16-mixed"),
    (DeviceInfo("NVIDIA A100-SXM4-40GB", (8, 0), 39.4), "gpu", "bf16-mixed"),
    (DeviceInfo("NVIDIA GeForce RTX 3060", (8, 6), 11.8), "gpu", "bf16-mixed"),
    (DeviceInfo("NVIDIA GeForce RTX 3050 Laptop GPU", (8, 6), 3.7), "cpu", "bf16-mixed"),  # small: the small preset
    (DeviceInfo("Tesla T4", (7, 5), 14.6), "gpu", "16-mixed"),  # Turing: fp16 tensor cores, bf16 only emulated
    (DeviceInfo("Tesla V100-SXM2-16GB", (7, 0), 15.8), "gpu", "16-mixed"),
    (DeviceInfo("NVIDIA GeForce GTX 1080", (6, 1), 7.9), "gpu", "32-true"),  # Pascal: no tensor cores
    (DeviceInfo("AMD Instinct MI250X", (9, 0), 64.0, bf16=True), "gpu", "bf16-mixed"),  # ROCm states bf16
    (DeviceInfo("AMD Radeon Pro W6800", (10, 3), 32.0, bf16=False), "gpu", "16-mixed"),
])
def test_defaults_for_described_devices(device, preset, precision):
    d = choose_defaults(device)
    assert (d.accelerator, d.preset, d.precision, d.probe_batch) == ("gpu", preset, precision, True)
    assert device.name in d.reason and precision in d.reason


def test_the_cpu_keeps_todays_defaults():
    d = choose_defaults(None)
    assert (d.accelerator, d.preset, d.precision, d.probe_batch) == ("cpu", "cpu", "32-true", False)
    assert d.batch_size == 8 and "batch 8" in d.reason


def test_a_gpu_leaves_the_batch_to_the_probe():
    d = choose_defaults(DeviceInfo("NVIDIA A100-SXM4-40GB", (8, 0), 39.4))
    assert d.batch_size is None and d.probe_batch


def test_a_cpu_with_native_bf16_trains_in_bf16_mixed():
    d = choose_defaults(None, cpu_bf16=True)
    assert (d.accelerator, d.preset, d.precision, d.probe_batch) == ("cpu", "cpu", "bf16-mixed", False)
    assert "bfloat16" in d.reason


@pytest.mark.parametrize("flags, native", [
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4/5, Intel Cooper Lake
    ("fpu sse2 avx2 avx512f amx_tile amx_bf16", True),  # Intel Sapphire Rapids
    ("fpu sse2 avx2 avx512f avx512_vnni", False),  # AVX-512 without BF16: emulated, slower than fp32
    ("fpu sse2 avx2", False),
])
def test_cpu_native_bf16_reads_the_flags(flags, native):
    cpuinfo = f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    assert hardware.cpu_native_bf16(cpuinfo) is native


def test_describe_cuda_device_is_none_without_cuda():
    if torch.cuda.is_available():
        d = hardware.describe_cuda_device(0)
        assert d.memory_gb > 0 and d.capability >= (3, 0)
    else:
        assert hardware.describe_cuda_device(0) is None


class FakeDevice:
    """A device of ``total`` bytes on which a step at batch b peaks at base + b * per_item bytes; past ``total``
    the step raises torch.cuda.OutOfMemoryError, as CUDA's allocator does."""

    def __init__(self, total: float, base: float, per_item: float):
        self.total, self.base, self.per_item = total, base, per_item
        self.peak = 0.0
        self.steps: list[int] = []

    def step(self, batch: int) -> None:
        self.steps.append(batch)
        need = self.base + batch * self.per_item
        if need > self.total:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {need / GB:.2f} GiB")
        self.peak = max(self.peak, need)

    def reset(self) -> None:
        self.peak = 0.0

    def fits(self, headroom: float = 0.85):
        from voicetrain.training.oom import is_out_of_memory

        return memory_fits(self.step, lambda: self.peak, self.reset, headroom * self.total, is_out_of_memory)


def test_probe_doubles_then_bisects_under_the_headroom():
    dev = FakeDevice(total=40 * GB, base=2 * GB, per_item=0.6 * GB)  # 85% of 40 GB = 34 GB -> 53 items fit
    r = probe_batch_size(dev.fits(), start=16)
    assert r.fits and 47 <= r.batch_size <= 53  # within 1/8 of the largest that fits
    assert dev.base + r.batch_size * dev.per_item <= 0.85 * dev.total
    tried = [b for b, _ in r.trials]
    assert tried[:3] == [16, 32, 64] and len(tried) <= 10
    assert dict(r.trials)[64] is False  # 64 raised out-of-memory: caught, counted as too big
    assert "probed: 16 ok, 32 ok, 64 too big" in r.describe()


def test_probe_stops_at_the_cap():
    dev = FakeDevice(total=140 * GB, base=1 * GB, per_item=0.01 * GB)
    r = probe_batch_size(dev.fits(), start=16, cap=128)
    assert r.batch_size == 128 and [b for b, _ in r.trials] == [16, 32, 64, 128]


def test_probe_halves_when_the_start_does_not_fit():
    dev = FakeDevice(total=8 * GB, base=1 * GB, per_item=1 * GB)  # 6.8 GB budget: 5 items
    r = probe_batch_size(dev.fits(), start=16)
    assert r.fits and r.batch_size == 5 and [b for b, _ in r.trials][:3] == [16, 8, 4]


def test_probe_reports_when_nothing_fits():
    dev = FakeDevice(total=1 * GB, base=2 * GB, per_item=1 * GB)
    r = probe_batch_size(dev.fits(), start=4)
    assert not r.fits and r.batch_size == 1 and [b for b, _ in r.trials] == [4, 2, 1]


def test_probe_lets_real_errors_through():
    def broken(batch):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        probe_batch_size(memory_fits(broken, lambda: 0, lambda: None, 1e9, lambda e: False), start=4)


def test_ram_warning():
    assert ram_warning(peak_rss_mb=900, current_rss_mb=800, available_mb=4000) is None
    w = ram_warning(peak_rss_mb=3000, current_rss_mb=800, available_mb=2500)  # 300 MB would be left
    assert w and "3000 MB" in w and "2500 MB is available" in w and "300 MB would be left" in w and "--batch-size" in w
    # two DDP processes of 1.5 GB each need 2 GB more than this process holds: 500 MB left, under the margin
    w = ram_warning(peak_rss_mb=1500, current_rss_mb=1000, available_mb=2500, processes=2)
    assert w and "2 processes" in w and "500 MB would be left" in w
    assert ram_warning(peak_rss_mb=1500, current_rss_mb=1000, available_mb=2500, processes=1) is None


def test_doctor_reports_what_train_would_choose_on_a_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "describe_cuda_device", lambda i=0: DeviceInfo("Tesla T4", (7, 5), 14.6))
    r = doctor.run_doctor(tmp_path, measure_step=False)
    assert r.recommended["preset"] == "gpu" and r.recommended["precision"] == "16-mixed"
    assert r.recommended["accelerator"] == "gpu" and "probed" in r.recommended["batch"]
    assert "train would choose: --preset gpu --precision 16-mixed" in r.summary()
