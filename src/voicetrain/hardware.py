"""The machine a run trains on: what it has, and the settings that fit it.

Everything that decides is a pure function of a *described* machine, so it is tested for devices this
machine does not have:

* :class:`DeviceInfo` describes one accelerator (name, compute capability, memory);
  :func:`describe_cuda_device` reads it from torch (None without CUDA/ROCm);
* :func:`choose_defaults` picks accelerator, precision and model preset for a device (or the CPU), and
  says whether the batch size should be probed;
* :func:`probe_batch_size` is the search for the largest batch that fits (double, then bisect, capped),
  over a ``fits(batch)`` test that :func:`memory_fits` builds from one training step and a peak-memory
  reading (the real device's, or a fake one in tests);
* :func:`meminfo` and :func:`ram_warning`: RAM available, and the warning given before a CPU run whose
  measured peak would not fit in it.

No Lightning here: ``doctor`` (which reports what would be chosen) and ``training`` both import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PROBE_CAP = 128
"""Largest batch the probe tries: beyond it a TTS step gains little and the learning-rate schedule,
tuned at batch 16, drifts further from what was measured."""
PROBE_HEADROOM = 0.85
"""A probed batch fits when its step's peak memory stays under this fraction of the device's memory:
validation, sample synthesis and allocator fragmentation need the rest."""
GPU_PRESET_MIN_GB = 4.0
"""Below this much device memory the ``cpu`` preset is kept (the ``gpu`` one with its optimizer state and
a useful batch would not fit)."""


@dataclass(frozen=True)
class DeviceInfo:
    """One accelerator, as the defaults need it."""

    name: str
    capability: tuple[int, int]
    """CUDA compute capability (major, minor): 7.x Volta/Turing, 8.x Ampere/Ada, 9.0 Hopper."""
    memory_gb: float
    bf16: bool | None = None
    """Native bfloat16; None = from the capability (CUDA: 8.0 and newer). ROCm devices state it."""

    @property
    def native_bf16(self) -> bool:
        return self.bf16 if self.bf16 is not None else self.capability >= (8, 0)


@dataclass(frozen=True)
class HardwareDefaults:
    """What a run uses for the settings its user left open."""

    accelerator: str
    """'gpu' or 'cpu'."""
    preset: str
    precision: str
    probe_batch: bool
    """Search the largest batch that fits (only on an accelerator)."""
    reason: str
    """One line for the estimate and ``doctor``."""
    batch_size: int | None = None
    """The batch for a run that left it open (None: as configured, or probed where ``probe_batch``)."""


CPU_BATCH_SIZE = 8
"""The CPU's batch when the user sets none. Against 16, from scratch on one thread in 32-true (bench/train_demo.py,
BENCHMARKS.md, issue 21), paired Whisper CER on 20 held-out sentences: at 3 minutes -0.035 [-0.066, -0.004] and
-0.043 [-0.078, -0.014] (flite rms, two commands), -0.082 [-0.137, -0.032] (flite awb); at 15 minutes -0.006
[-0.035, +0.021] (rms) and +0.022 [-0.009, +0.056] (awb): no difference. Peak RSS 916-1014 MB instead of
1157-1215, at 0.75-0.89x the samples per second (1.76x the steps). On two threads (rms, 3 minutes): -0.080
[-0.136, -0.026] at 1 minute, -0.004 [-0.031, +0.023] at 3, 914 against 1125 MB. Fine-tuning keeps its own batch (16)."""


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of native bfloat16 arithmetic (AVX512-BF16: AMD Zen 4 and newer, Intel Cooper Lake and
Sapphire Rapids; AMX-BF16: Sapphire Rapids and newer). oneDNN then runs bf16 matmuls and convolutions natively."""


def cpu_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (``cpuinfo``: /proc/cpuinfo's text; read when None).

    Without it torch emulates bfloat16 and a mixed-precision step is slower than a 32-bit one."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no claim
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return any(f in flags for f in CPU_BF16_FLAGS)


def choose_defaults(device: DeviceInfo | None, cpu_bf16: bool = False) -> HardwareDefaults:
    """The defaults for ``device`` (None: the CPU: ``cpu`` preset, batch :data:`CPU_BATCH_SIZE`, and bf16-mixed where
    the CPU has native bfloat16 (``cpu_bf16``, :func:`cpu_native_bf16`), else 32-bit).

    On the CPU, bf16-mixed (autocast: bf16 matmuls and convolutions, fp32 weights, optimizer and losses) made a
    FastSpeech 2 ``cpu``-preset step 1.35-1.47x faster on an AVX512-BF16 CPU (AMD Zen 5, bench/omp_wait.py,
    BENCHMARKS.md), at the same held-out quality per step.

    Precision: bf16-mixed where the device has native bfloat16 (Ampere and newer; fp32's range, so no loss
    scaling); 16-mixed on Volta/Turing (tensor cores, fp16 with Lightning's grad scaler); 32-true below 7.0,
    where fp16 has no tensor cores to gain from and only risks overflow. ``torch.cuda.is_bf16_supported()`` is
    not asked: it also answers True where bfloat16 is only emulated (slower than fp32).
    """
    if device is None:
        if cpu_bf16:
            return HardwareDefaults("cpu", "cpu", "bf16-mixed", False,
                                    f"no CUDA device: CPU defaults (batch {CPU_BATCH_SIZE}), bf16-mixed (this CPU has "
                                    "native bfloat16)", CPU_BATCH_SIZE)
        return HardwareDefaults("cpu", "cpu", "32-true", False, f"no CUDA device: CPU defaults (batch {CPU_BATCH_SIZE})",
                                CPU_BATCH_SIZE)
    if device.native_bf16:
        precision, why = "bf16-mixed", "native bfloat16"
    elif device.capability >= (7, 0):
        precision, why = "16-mixed", "fp16 tensor cores, no native bfloat16"
    else:
        precision, why = "32-true", "no tensor cores"
    preset = "gpu" if device.memory_gb >= GPU_PRESET_MIN_GB else "cpu"
    cap = ".".join(map(str, device.capability))
    return HardwareDefaults("gpu", preset, precision, True,
                            f"{device.name} (compute {cap}, {device.memory_gb:g} GB): {precision} ({why}), "
                            f"{preset} preset" + ("" if preset == "gpu" else f" (under {GPU_PRESET_MIN_GB:g} GB)"))


def describe_cuda_device(index: int = 0) -> DeviceInfo | None:
    """CUDA (or ROCm) device ``index`` as a :class:`DeviceInfo`; None when torch sees none."""
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    p = torch.cuda.get_device_properties(index)
    # ROCm reports its gfx architecture as a capability; bfloat16 is native from MI200 (gfx90a) on, and torch
    # knows it there, so ask it (on CUDA the capability decides: torch would count emulation)
    bf16 = bool(torch.cuda.is_bf16_supported()) if torch.version.hip else None
    return DeviceInfo(p.name, (p.major, p.minor), round(p.total_memory / 1024**3, 2), bf16)


# ----------------------------------------------------------------------------- batch probing


@dataclass
class ProbeResult:
    batch_size: int
    fits: bool
    """False when even batch 1 did not fit (training will then fail with out-of-memory)."""
    trials: list[tuple[int, bool]] = field(default_factory=list)
    """(batch, fitted) in the order tried."""

    def describe(self) -> str:
        tried = ", ".join(f"{b} {'ok' if ok else 'too big'}" for b, ok in self.trials)
        return f"batch {self.batch_size} (probed: {tried})"


def probe_batch_size(fits: Callable[[int], bool], start: int, cap: int = PROBE_CAP, max_trials: int = 10) -> ProbeResult:
    """The largest batch in [1, cap] for which ``fits(batch)`` holds, in at most ``max_trials`` calls.

    As Lightning's BatchSizeFinder (mode 'binsearch'): double from ``start`` until a batch does not fit or
    ``cap`` is reached (or halve from ``start`` until one fits), then bisect between the last that fitted and
    the first that did not, stopping within 1/8 of the answer: the batch varies by that much between
    length buckets anyway."""
    trials: list[tuple[int, bool]] = []

    def test(b: int) -> bool:
        ok = bool(fits(b))
        trials.append((b, ok))
        return ok

    cap = max(1, cap)
    b = max(1, min(start, cap))
    lo: int | None = None
    hi: int | None = None
    if test(b):
        lo = b
        while lo < cap and len(trials) < max_trials:
            nb = min(lo * 2, cap)
            if test(nb):
                lo = nb
            else:
                hi = nb
                break
    else:
        hi = b
        while hi > 1 and len(trials) < max_trials:
            nb = hi // 2
            if test(nb):
                lo = nb
                break
            hi = nb
        if lo is None:
            return ProbeResult(1, False, trials)
    while hi is not None and hi - lo > max(1, lo // 8) and len(trials) < max_trials:
        mid = (lo + hi) // 2
        if test(mid):
            lo = mid
        else:
            hi = mid
    return ProbeResult(lo, True, trials)


def memory_fits(run_step: Callable[[int], None], peak_bytes: Callable[[], int], reset_peak: Callable[[], None],
                budget_bytes: float, is_oom: Callable[[BaseException], bool]) -> Callable[[int], bool]:
    """A ``fits(batch)`` for :func:`probe_batch_size`: one training step at that batch (``run_step``) fits
    when it raises no out-of-memory error and its peak memory (``peak_bytes`` after ``reset_peak``) stays
    within ``budget_bytes``. The peak reading is what tests replace with a fake device."""

    def fits(batch: int) -> bool:
        reset_peak()
        try:
            run_step(batch)
        except Exception as e:  # noqa: BLE001 - anything but out-of-memory is a real error
            if not is_oom(e):
                raise
            return False
        return peak_bytes() <= budget_bytes

    return fits


# ----------------------------------------------------------------------------- RAM


def meminfo(path: str = "/proc/meminfo") -> dict[str, float]:
    """Total and available RAM in GB from /proc/meminfo (empty where there is none)."""
    out: dict[str, float] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            out["total_gb" if key == "MemTotal" else "available_gb"] = round(int(rest.split()[0]) / 1024**2, 2)
    return out


def current_rss_mb(path: str = "/proc/self/status") -> float:
    """This process's resident memory now (VmRSS; 0 where /proc is missing)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ram_warning(peak_rss_mb: float, current_rss_mb: float, available_mb: float, processes: int = 1,
                margin_mb: float = 512) -> str | None:
    """A warning when a CPU run would leave less than ``margin_mb`` of RAM free, else None.

    ``peak_rss_mb``: the estimate's measured peak of this process (model, optimizer, measured batches);
    ``current_rss_mb``: what this process holds now, already outside ``available_mb`` (MemAvailable);
    ``processes``: training processes on this machine (DDP ranks), each about as large as this one.
    The margin is for what the estimate does not see: longer batches, validation samples, quality models.
    """
    need = peak_rss_mb * processes - current_rss_mb
    left = available_mb - need
    if left >= margin_mb:
        return None
    per = f" ({processes} processes of ~{peak_rss_mb:.0f} MB)" if processes > 1 else ""
    return (f"training needs about {peak_rss_mb * processes:.0f} MB of RAM{per}; {available_mb:.0f} MB is available "
            f"beyond what this process holds, so {max(left, 0):.0f} MB would be left: the kernel may kill the run. "
            "Lower --batch-size (with --accumulate to keep the effective batch), use a smaller --preset, fewer "
            "--devices, or close other programs")


__all__ = ["DeviceInfo", "HardwareDefaults", "ProbeResult", "choose_defaults", "describe_cuda_device",
           "probe_batch_size", "memory_fits", "meminfo", "current_rss_mb", "ram_warning", "PROBE_CAP"]
