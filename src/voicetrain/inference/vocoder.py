"""Resolve a vocoder name to a ready Vocoder: ``"griffin-lim"``, ``"builtin"`` (the universal vocoder shipped in
``voicetrain/pretrained/vocoder``), a vocoder RUN folder or checkpoint, or bundle files.

Never imports training code or Lightning. A vocoder checkpoint is a Lightning
checkpoint whose ``voicetrain`` entry says ``kind: vocoder`` and carries the
generator's name, config and AudioConfig as plain types, so it loads with
``torch.load(weights_only=True)``; only the ``generator.*`` weights are used.

A vocoder only fits an acoustic model computed on the same frame grid and mel
filterbank: :func:`check_compatible` compares the AudioConfig fields that define
the mel and names every one that differs.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetrain._version import __version__
from voicetrain.config import SCHEMA_VERSION, AudioConfig, ConfigError, from_dict, to_dict
from voicetrain.fileio import atomic_path, atomic_write_json, atomic_write_text
from voicetrain.inference.checkpoint import CheckpointError, find_checkpoint, load_checkpoint_safe
from voicetrain.vocoders.base import Vocoder
from voicetrain.vocoders.griffin_lim import GriffinLim
from voicetrain.vocoders.registry import VOCODERS, build_vocoder, vocoder_config

GRIFFIN_LIM = "griffin-lim"
BUILTIN = "builtin"
VOCODER_WEIGHTS = "vocoder.safetensors"
BUILTIN_JSON = "vocoder.json"
MEL_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max")
"""The AudioConfig fields that define a mel frame; f0 limits do not matter to a vocoder."""


class VocoderError(ConfigError):
    """A vocoder cannot be loaded or does not fit the acoustic model; the message names the cause."""


@dataclass
class LoadedVocoder:
    path: Path
    vocoder: Vocoder
    """In eval mode."""
    name: str
    """Registry name, e.g. 'vocos'."""
    model_config: dict[str, Any]
    audio: AudioConfig
    step: int

    def describe(self) -> dict[str, Any]:
        """voice.json / model.onnx.json entry (weights stored beside it as VOCODER_WEIGHTS)."""
        return {"name": self.name, "weights": VOCODER_WEIGHTS, "model_config": dict(self.model_config),
                "audio": to_dict(self.audio), "source": {"checkpoint": str(self.path), "step": self.step}}


def is_griffin_lim(spec: str | os.PathLike | None) -> bool:
    return spec is None or str(spec).strip().lower() in ("", GRIFFIN_LIM, "griffinlim", "gl")


def is_builtin(spec: str | os.PathLike | None) -> bool:
    return spec is not None and str(spec).strip().lower() == BUILTIN


def builtin_vocoder_dir() -> Path:
    """The package folder of the shipped universal vocoder (fp16 safetensors + vocoder.json + model card)."""
    return Path(__file__).resolve().parents[1] / "pretrained" / "vocoder"


def load_builtin_vocoder() -> LoadedVocoder:
    """The shipped universal vocoder, from the package: no network, no training."""
    import json

    folder = builtin_vocoder_dir()
    info_path = folder / BUILTIN_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"{folder}: this voicetrain ships no built-in vocoder; use '{GRIFFIN_LIM}' or a "
                                "vocoder run from `voicetrain train-vocoder`")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    audio = from_dict(AudioConfig, info["audio"], where=f"{info_path}: audio")
    vocoder = vocoder_from_files(folder, info, audio)
    return LoadedVocoder(folder / VOCODER_WEIGHTS, vocoder, info["name"], dict(info["model_config"]), audio,
                         int(info.get("source", {}).get("step", 0)))


def load_named_vocoder(spec: str | os.PathLike) -> LoadedVocoder:
    """A neural vocoder with its description: ``"builtin"`` or a vocoder RUN folder / checkpoint (its last)."""
    return load_builtin_vocoder() if is_builtin(spec) else load_vocoder_checkpoint(spec)


def vocoder_exists(spec: str | os.PathLike) -> bool:
    """Whether a neural vocoder spec names something loadable here ('builtin' when the package ships one)."""
    return (builtin_vocoder_dir() / BUILTIN_JSON).is_file() if is_builtin(spec) else Path(spec).exists()


DISCRIMINATOR_WEIGHTS = "discriminators.safetensors"


def write_pretrained_vocoder(loaded: LoadedVocoder, folder: str | os.PathLike, card_markdown: str,
                             facts: dict[str, Any], discriminators: dict[str, Any] | None = None) -> Path:
    """Ship ``loaded`` as FOLDER/vocoder.safetensors (fp16: half the bytes; the generator runs in float32
    after loading), FOLDER/vocoder.json (how to build it, its AudioConfig and ``facts``) and FOLDER/README.md.

    ``discriminators`` ({'mpd.…': tensor, 'mrd.…': tensor}, the source's live discriminators) go to
    FOLDER/discriminators.safetensors so that ``train-vocoder --from builtin`` continues the GAN game."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in loaded.vocoder.state_dict().items()}
    with atomic_path(folder / VOCODER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "dtype": "float16", "voicetrain_version": __version__})
    if discriminators:
        dstate = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in discriminators.items()}
        with atomic_path(folder / DISCRIMINATOR_WEIGHTS) as tmp:
            save_file(dstate, str(tmp), metadata={"format": "pt", "dtype": "float16"})
    info = loaded.describe()
    info["source"] = {"checkpoint": Path(loaded.path).name, "step": loaded.step}
    info["facts"] = facts
    atomic_write_json(folder / BUILTIN_JSON, info)
    atomic_write_text(folder / "README.md", card_markdown)
    return folder


def _build(name: str, model_config: dict[str, Any], audio: AudioConfig, where: str) -> Vocoder:
    try:
        # the stored config is complete: the preset only supplies the field list, every value is overridden
        preset = next(iter(VOCODERS[name].presets)) if name in VOCODERS else ""
        cfg = vocoder_config(name, preset, model_config)
    except ConfigError as e:
        raise VocoderError(f"{where}: {e}") from None
    return build_vocoder(name, cfg, audio)


def load_vocoder_checkpoint(path: str | os.PathLike, which: str = "last") -> LoadedVocoder:
    """A vocoder RUN folder (its ``which`` checkpoint: last, best or a step) or checkpoint file.

    'last' by default: a GAN vocoder's log-mel L1 (what best-step=N.ckpt minimizes) is not its quality.
    Adversarial training trades a little mel L1 for phase coherence and texture, so the lowest-L1
    checkpoint is often one from before the discriminators joined, the buzzy one. HiFi-GAN and Vocos
    likewise release their latest weights.
    """
    ckpt_path = find_checkpoint(path, which)
    ckpt = load_checkpoint_safe(ckpt_path)
    meta = ckpt.get("voicetrain") or {}
    if meta.get("kind") != "vocoder":
        what = "an acoustic model" if "run_config" in meta and "symbols" in meta else "not a voicetrain vocoder"
        raise VocoderError(f"{ckpt_path} is {what} checkpoint; give a vocoder run from `voicetrain train-vocoder` "
                           f"or '{GRIFFIN_LIM}'")
    if meta.get("schema_version", 1) > SCHEMA_VERSION:
        raise VocoderError(f"{ckpt_path}: written by a newer voicetrain ({meta.get('version')}); upgrade voicetrain")
    audio = from_dict(AudioConfig, meta["audio"], where=f"{ckpt_path}:audio")
    vocoder = _build(meta["vocoder"], meta["model_config"], audio, str(ckpt_path))
    sd = ckpt.get("state_dict") or {}
    state = {k[len("generator."):]: v for k, v in sd.items() if k.startswith("generator.")}
    try:
        vocoder.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path}: generator weights do not fit its config ({e})") from None
    return LoadedVocoder(Path(ckpt_path), vocoder.eval(), meta["vocoder"], dict(meta["model_config"]), audio,
                         int(ckpt.get("global_step", 0)))


def check_compatible(vocoder_audio: AudioConfig, audio: AudioConfig, vocoder_desc: str) -> None:
    """Raise VocoderError naming each mel-defining field where the vocoder and the acoustic model differ."""
    diffs = [f"{f} {getattr(vocoder_audio, f)} vs {getattr(audio, f)}" for f in MEL_FIELDS
             if getattr(vocoder_audio, f) != getattr(audio, f)]
    if diffs:
        raise VocoderError(f"vocoder {vocoder_desc} was trained on other mels than this voice uses "
                           f"(vocoder vs voice: {'; '.join(diffs)}); train a vocoder on a dataset prepared with "
                           f"the voice's settings, or use '{GRIFFIN_LIM}'")


def load_vocoder(spec: str | os.PathLike | None, audio: AudioConfig, griffin_lim_iters: int = 32,
                 which: str = "last") -> Vocoder:
    """``"griffin-lim"`` (or None) -> GriffinLim; ``"builtin"`` -> the shipped universal vocoder; a vocoder RUN
    folder or checkpoint -> its generator.

    The vocoder must fit ``audio`` (the acoustic model's AudioConfig), else VocoderError.
    """
    if is_griffin_lim(spec):
        return GriffinLim(audio, n_iter=griffin_lim_iters)
    if is_builtin(spec):
        loaded = load_builtin_vocoder()
        check_compatible(loaded.audio, audio, f"'{BUILTIN}' ({loaded.path})")
        return loaded.vocoder
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"vocoder {spec} does not exist; give a vocoder run folder from "
                                f"`voicetrain train-vocoder`, a checkpoint file, or '{GRIFFIN_LIM}'")
    loaded = load_vocoder_checkpoint(p, which)
    check_compatible(loaded.audio, audio, str(loaded.path))
    return loaded.vocoder


def vocoder_for_run(run_vocoder: str, audio: AudioConfig, griffin_lim_iters: int = 32) -> Vocoder:
    """The vocoder an acoustic run names. A neural vocoder that has since moved or vanished falls back to
    Griffin-Lim with a warning (the voice keeps speaking); one that does not fit is an error."""
    try:
        return load_vocoder(run_vocoder, audio, griffin_lim_iters)
    except FileNotFoundError as e:
        warnings.warn(f"{e}; using {GRIFFIN_LIM} instead", stacklevel=2)
        return GriffinLim(audio, n_iter=griffin_lim_iters)


def save_vocoder_files(loaded: LoadedVocoder, folder: str | os.PathLike) -> dict[str, Any]:
    """Write FOLDER/vocoder.safetensors (generator weights); return the JSON entry describing it."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in loaded.vocoder.state_dict().items()}
    with atomic_path(Path(folder) / VOCODER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "voicetrain_version": __version__})
    return loaded.describe()


def vocoder_from_files(folder: str | os.PathLike, info: dict[str, Any] | str | None, audio: AudioConfig,
                       griffin_lim_iters: int = 32) -> Vocoder:
    """The vocoder a bundle or export folder describes: ``info`` is its JSON entry (a dict), or a
    string ('griffin-lim' in bundles written before neural vocoders existed)."""
    if not isinstance(info, dict):
        return GriffinLim(audio, n_iter=griffin_lim_iters)
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / info.get("weights", VOCODER_WEIGHTS)
    v_audio = from_dict(AudioConfig, info["audio"], where=f"{folder}: vocoder.audio")
    check_compatible(v_audio, audio, str(weights))
    vocoder = _build(info["name"], info["model_config"], v_audio, str(weights))
    try:
        vocoder.load_state_dict(load_file(str(weights), device="cpu"))
    except Exception as e:  # noqa: BLE001 - name the file whatever safetensors/torch says
        raise VocoderError(f"{weights}: vocoder weights do not fit the {info['name']} described beside them "
                           f"({type(e).__name__}: {e})") from None
    return vocoder.eval()


def vocoder_spec(spec: str | os.PathLike | None) -> str:
    """Normalize a user's vocoder argument for storing in a RunConfig: 'griffin-lim', 'builtin' or an absolute path."""
    if is_griffin_lim(spec):
        return GRIFFIN_LIM
    if is_builtin(spec):
        return BUILTIN
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"vocoder {spec} does not exist; give a vocoder run folder or '{GRIFFIN_LIM}'")
    return str(p.resolve())


__all__ = ["DISCRIMINATOR_WEIGHTS", "BUILTIN", "GRIFFIN_LIM", "VOCODER_WEIGHTS", "builtin_vocoder_dir", "is_builtin", "load_builtin_vocoder",
           "load_named_vocoder", "vocoder_exists", "write_pretrained_vocoder", "LoadedVocoder", "VocoderError", "check_compatible", "is_griffin_lim",
           "load_vocoder", "load_vocoder_checkpoint", "save_vocoder_files", "vocoder_for_run", "vocoder_from_files",
           "vocoder_spec"]
