"""Export the acoustic model to ONNX: tokens -> normalized log-mel, with a JSON config beside it.

``FastSpeech2.infer`` does not trace as is: ``regulate_length`` uses
``torch.searchsorted`` (no ONNX symbolic in the TorchScript exporter) and sizes
its output with ``int(lens.max())``, which tracing would freeze to the example's
length; ``infer`` also branches in Python on ``over.any()``. The wrapper below
recomputes the same maths with export-friendly ops (a comparison-count instead of
searchsorted, ``torch.where`` instead of the branch, ``arange`` of a tensor for the
frame count) and reuses every trained submodule as is. ``tests/test_export.py``
checks the ONNX graph against ``infer`` on several sentences and speeds.

Griffin-Lim stays outside the graph (the runtime runs it in torch, see
``onnx_runtime.py``): its 32 STFT/ISTFT iterations would export only as DFT
loops, and any runtime can apply its own vocoder to the mel output. A neural
vocoder named by the voice travels beside the graph as vocoder.safetensors (its
inverse STFT has no ONNX operator either); ``onnx_runtime.py`` runs it in torch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voicetrain.fileio import atomic_path, atomic_write_json, sha256_file
from voicetrain.inference.bundle import BundleParts, load_bundle_parts
from voicetrain.registry.store import ModelStore, RegistryError, VoiceRef, is_bundle_dir

ONNX_FILE = "model.onnx"
ONNX_CONFIG = "model.onnx.json"
ONNX_SCHEMA_VERSION = 1
INPUTS = ("tokens", "speakers", "speed")
OUTPUTS = ("mel", "mel_lengths")


class ExportError(RuntimeError):
    pass


class ExportableFastSpeech2(nn.Module):
    """``FastSpeech2.infer`` for one utterance, traceable with dynamic token and frame counts.

    forward(tokens (1, L) int64, speakers (1,) int64, speed () float32)
      -> (mel (1, n_mels, T) normalized, mel_lengths (1,) int64)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, speakers: torch.Tensor, speed: torch.Tensor):
        m = self.model
        cfg = m.cfg
        L = tokens.shape[1]
        token_lens = torch.ones_like(tokens).sum(1)
        h, tmask, _ = m.encode(tokens, token_lens, speakers)
        log_dur = m.duration_predictor(h, tmask)
        dur = torch.clamp(torch.round((torch.exp(log_dur) - 1) / torch.clamp(speed, min=1e-3)),
                          0, cfg.max_frames_per_token)
        dur = (dur * tmask).long()
        # every utterance gets at least one frame (infer's in-place dur[:, 0] = where(...))
        first = torch.where(dur.sum(1) == 0, torch.ones_like(dur[:, 0]), dur[:, 0])
        dur = torch.cat([first[:, None], dur[:, 1:]], dim=1)
        # cap at max_frames (infer's `if over.any()` branch, as an unconditional where)
        total = dur.sum(1, keepdim=True)
        scale = cfg.max_frames / total.clamp(min=1)
        dur = torch.where(total > cfg.max_frames, torch.floor(dur * scale).long(), dur)
        pitch = m.pitch_predictor(h, tmask) * tmask
        energy = m.energy_predictor(h, tmask)
        hv = m._variance_embed(h, pitch, energy)
        # regulate_length: token index of frame t = number of cumulative durations <= t
        lens = dur.sum(1)
        frames = torch.arange(lens.max().clamp(min=1))[None, :]  # (1, T); T from data, not the trace
        cum = torch.cumsum(dur, dim=1)
        idx = (cum[:, None, :] <= frames[:, :, None]).long().sum(-1).clamp(max=L - 1)
        x = torch.gather(hv, 1, idx.unsqueeze(-1).expand(-1, -1, hv.shape[2]))
        fmask = frames < lens[:, None]
        x = x * fmask.unsqueeze(-1).to(x.dtype)
        return m.decode_frames(x, fmask, speakers), lens


def load_source(source: str | os.PathLike, store: ModelStore | str | os.PathLike | None = None,
                which: str = "best") -> tuple[BundleParts, str]:
    """A bundle folder, a registered NAME[@VERSION|@TAG], or a run folder / checkpoint file.

    A bare NAME that is registered means the registered voice even when the current
    folder holds a same-named folder; write ./NAME (or pass a Path) for the folder.
    """
    p = Path(source)
    st = store if isinstance(store, ModelStore) else ModelStore(store)
    if is_bundle_dir(p):
        return load_bundle_parts(p), str(p)
    s = str(source)
    if not isinstance(source, os.PathLike) and os.sep not in s and "@" not in s and s in st.names():
        # a registered NAME wins over a same-named folder in the cwd (write ./NAME for the folder)
        path = st.resolve(VoiceRef.parse(s))
        return load_bundle_parts(path), f"{s} ({path})"
    if p.is_file() or (p.is_dir() and (p / "checkpoints").is_dir()):
        from voicetrain.inference.checkpoint import find_checkpoint, load_model

        ck = find_checkpoint(p, which)
        lc = load_model(ck)
        return BundleParts(ck, {"name": p.resolve().name, "version": f"step{lc.step}"}, lc.voice, lc.model,
                           lc.symbols, lc.stats), str(ck)
    if p.exists():
        raise ExportError(f"{p} is neither a voice bundle, a run folder with checkpoints/, nor a checkpoint file")
    path = st.resolve(VoiceRef.parse(s))
    return load_bundle_parts(path), f"{source} ({path})"


@dataclass
class ExportResult:
    onnx: Path
    config: Path
    seconds: float


def export_onnx(source: str | os.PathLike, out: str | os.PathLike, *, store=None, which: str = "best",
                opset: int = 17) -> ExportResult:
    """Write OUT/model.onnx and OUT/model.onnx.json for SOURCE (see :func:`load_source`)."""
    import time

    from voicetrain._version import __version__
    from voicetrain.config import to_dict

    t0 = time.perf_counter()
    parts, described = load_source(source, store, which)
    if parts.voice.model != "fastspeech2":
        raise ExportError(f"ONNX export supports fastspeech2 voices; {described} is a {parts.voice.model}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableFastSpeech2(parts.model).eval()
    example = (torch.ones(1, 8, dtype=torch.long) * min(10, len(parts.symbols) - 1), torch.zeros(1, dtype=torch.long),
               torch.tensor(1.0))
    target = out / ONNX_FILE
    try:
        with atomic_path(target) as tmp, warnings.catch_warnings():
            # the TorchScript exporter announces its deprecation and warns about unpacking q, k, v
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, example, str(tmp), dynamo=False, opset_version=opset,
                              input_names=list(INPUTS), output_names=list(OUTPUTS),
                              dynamic_axes={"tokens": {1: "tokens"}, "mel": {2: "frames"}})
    except Exception as e:
        raise ExportError(f"exporting {described} to ONNX failed: {type(e).__name__}: {e}") from e
    cfg = parts.voice
    config: dict[str, Any] = {
        "schema_version": ONNX_SCHEMA_VERSION, "voicetrain_version": __version__,
        "name": parts.info.get("name"), "version": parts.info.get("version"), "source": described,
        "model": cfg.model, "onnx": ONNX_FILE, "onnx_sha256": sha256_file(target), "opset": opset,
        "inputs": {"tokens": "int64 (1, L) symbol ids", "speakers": "int64 (1,) speaker id",
                   "speed": "float32 () >1 speaks faster"},
        "outputs": {"mel": "float32 (1, n_mels, T) normalized log-mel: mel * stats.mel_std + stats.mel_mean",
                    "mel_lengths": "int64 (1,)"},
        "symbols": list(parts.symbols.symbols), "stats": to_dict(parts.stats),
        "speakers": list(cfg.speakers), "audio": to_dict(cfg.audio), "text": to_dict(cfg.text),
        "vocoder": _export_vocoder(parts, out), "voice_config": to_dict(cfg),
    }
    cpath = out / ONNX_CONFIG
    atomic_write_json(cpath, config)
    return ExportResult(target, cpath, time.perf_counter() - t0)


def _export_vocoder(parts: BundleParts, out: Path) -> dict[str, Any] | str:
    """Put the voice's neural vocoder beside the graph (OUT/vocoder.safetensors); return its config entry,
    or 'griffin-lim'. A bundle's vocoder is copied; a run's is read from the vocoder run it names."""
    import shutil

    from voicetrain.inference.vocoder import (
        GRIFFIN_LIM, VOCODER_WEIGHTS, check_compatible, is_griffin_lim, load_named_vocoder, save_vocoder_files,
        vocoder_exists)

    target = out / VOCODER_WEIGHTS
    entry: dict[str, Any] | None = None
    bundled = parts.info.get("vocoder")
    if isinstance(bundled, dict):
        with atomic_path(target) as tmp:
            shutil.copyfile(Path(parts.path) / bundled.get("weights", VOCODER_WEIGHTS), tmp)
        entry = dict(bundled, weights=VOCODER_WEIGHTS)
    elif not isinstance(bundled, str) and not is_griffin_lim(parts.voice.vocoder):
        if vocoder_exists(parts.voice.vocoder):
            voc = load_named_vocoder(parts.voice.vocoder)
            check_compatible(voc.audio, parts.voice.audio, str(voc.path))
            entry = save_vocoder_files(voc, out)
        else:
            warnings.warn(f"vocoder {parts.voice.vocoder} named by the run does not exist; exporting with "
                          f"{GRIFFIN_LIM}", stacklevel=2)
    if entry is None:
        if target.exists():  # a neural vocoder of an earlier export into the same folder
            target.unlink()
        return GRIFFIN_LIM
    entry["sha256"] = sha256_file(target)
    return entry


__all__ = ["ExportableFastSpeech2", "ExportError", "ExportResult", "export_onnx", "load_source", "RegistryError"]
