"""Synthesize with an exported ONNX acoustic model through onnxruntime.

The graph replaces only the PyTorch acoustic model: text still goes through the
same :class:`~voicetrain.text.tokenizer.Tokenizer`, sentence splitting, speaker
lookup and Griffin-Lim as :class:`~voicetrain.inference.synthesizer.Synthesizer`
(the ONNX model is plugged into a Synthesizer), so both paths give the same audio
up to float rounding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from voicetrain.inference.export import ONNX_CONFIG, ONNX_FILE, ONNX_SCHEMA_VERSION


class OnnxRuntimeError(RuntimeError):
    pass


def _ort():
    # onnxruntime >= 1.31 contacts a telemetry host unless this is set before import
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxRuntimeError("onnxruntime is not installed: pip install 'voicetrain[serve]'") from e
    return onnxruntime


class OnnxAcousticModel:
    """Duck-types ``FastSpeech2.infer`` over an onnxruntime session (one utterance per call)."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 0):
        ort = _ort()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])

    def eval(self) -> "OnnxAcousticModel":
        return self

    def infer(self, tokens: torch.Tensor, speakers: torch.Tensor | None = None, speed: float = 1.0, **_):
        """tokens (1, L) -> (mel (1, M, T) normalized, frame lengths (1,)), as torch tensors."""
        if tokens.shape[0] != 1:
            raise ValueError("the ONNX model synthesizes one utterance per call (batch size 1)")
        spk = np.zeros(1, np.int64) if speakers is None else np.asarray(speakers, dtype=np.int64).reshape(1)
        mel, lens = self.session.run(None, {"tokens": tokens.numpy().astype(np.int64), "speakers": spk,
                                            "speed": np.asarray(speed, dtype=np.float32)})
        return torch.from_numpy(mel), torch.from_numpy(lens)


def load_onnx_synthesizer(folder: str | os.PathLike, griffin_lim_iters: int = 32, threads: int = 0):
    """OUT folder of `voicetrain export` (model.onnx + model.onnx.json) -> a Synthesizer running onnxruntime."""
    from voicetrain.data.cache import FeatureStats
    from voicetrain.fileio import sha256_file
    from voicetrain.inference.synthesizer import Synthesizer
    from voicetrain.inference.vocoder import VOCODER_WEIGHTS, vocoder_from_files
    from voicetrain.text.symbols import SymbolTable
    from voicetrain.voice_config import load_voice_config

    folder = Path(folder)
    if folder.suffix == ".onnx":
        folder = folder.parent
    cpath = folder / ONNX_CONFIG
    try:
        cfg = json.loads(cpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OnnxRuntimeError(f"{cpath} is missing; export with `voicetrain export VOICE --format onnx --out {folder}`") from None
    except ValueError as e:
        raise OnnxRuntimeError(f"{cpath} is not valid JSON ({e})") from None
    if cfg.get("schema_version", 1) > ONNX_SCHEMA_VERSION:
        raise OnnxRuntimeError(f"{cpath} was written by a newer voicetrain; upgrade voicetrain")
    onnx_path = folder / cfg.get("onnx", ONNX_FILE)
    if not onnx_path.is_file():
        raise OnnxRuntimeError(f"{onnx_path} is missing (named in {cpath})")
    if cfg.get("onnx_sha256") and sha256_file(onnx_path) != cfg["onnx_sha256"]:
        raise OnnxRuntimeError(f"{onnx_path} is damaged: sha256 differs from {cpath}; export again")
    voice = load_voice_config(cfg, str(cpath))  # exports before VoiceConfig hold a whole run_config
    model = OnnxAcousticModel(onnx_path, threads=threads)
    voc = cfg.get("vocoder")
    if isinstance(voc, dict):
        weights = folder / voc.get("weights", VOCODER_WEIGHTS)
        if not weights.is_file():
            raise OnnxRuntimeError(f"{weights} is missing (named in {cpath})")
        if voc.get("sha256") and sha256_file(weights) != voc["sha256"]:
            raise OnnxRuntimeError(f"{weights} is damaged: sha256 differs from {cpath}; export again")
    # the folder's own vocoder (or Griffin-Lim), never a vocoder path recorded in the run config
    vocoder = vocoder_from_files(folder, voc, voice.audio, griffin_lim_iters)
    return Synthesizer.from_parts(model, voice, SymbolTable(tuple(cfg["symbols"])), FeatureStats(**cfg["stats"]),
                                  vocoder=vocoder, griffin_lim_iters=griffin_lim_iters, checkpoint=str(onnx_path))
