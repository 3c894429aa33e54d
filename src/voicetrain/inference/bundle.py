"""Registry bundles: build one from a training run (``register_run``) and load one into a ready-to-use voice.
Never imports training code or Lightning.

``load_voice("NAME")``, ``load_voice("NAME@v2")``, ``load_voice("NAME@prod")`` or
``load_voice("/path/to/NAME/v2")``. Every file is checked against the bundle's
sha256 manifest before anything is parsed; weights are read with safetensors (no pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicetrain._version import __version__
from voicetrain.config import to_dict
from voicetrain.fileio import atomic_path, atomic_write_json, atomic_write_text
from voicetrain.registry.card import build_card, render_markdown
from voicetrain.registry.store import (
    BUNDLE_SCHEMA_VERSION, VOICE_JSON, WEIGHTS, DamagedBundleError, ModelStore, RegistryError, is_bundle_dir, now_iso,
    validate_name, verify_bundle)


@dataclass
class BundleParts:
    """A verified bundle's contents, before a Synthesizer is built (also used by ONNX export)."""

    path: Path
    info: dict[str, Any]
    voice: Any  # VoiceConfig
    model: Any  # torch.nn.Module, eval mode
    symbols: Any  # SymbolTable
    stats: Any  # FeatureStats
    vocoder: Any = None
    """The bundle's neural vocoder (Vocoder, eval mode), or None for Griffin-Lim."""


def resolve_voice(name_or_path: str | os.PathLike, store: ModelStore | str | os.PathLike | None = None) -> Path:
    """A bundle folder path, or NAME[@VERSION|@TAG] looked up in ``store`` (default store when None)."""
    p = Path(name_or_path)
    if is_bundle_dir(p):
        return p
    s = str(name_or_path)
    if isinstance(name_or_path, os.PathLike) or os.sep in s:
        raise RegistryError(f"{p} is not a voice bundle folder (no {VOICE_JSON}); give a bundle folder "
                            "or a registered NAME[@VERSION] (see `voicetrain models list`)")
    # a bare string is a registered name, even if a folder of that name happens to be in the cwd
    store = store if isinstance(store, ModelStore) else ModelStore(store)
    return store.resolve(s)


def load_bundle_parts(path: str | os.PathLike) -> BundleParts:
    from safetensors.torch import load_file

    from voicetrain.data.cache import FeatureStats
    from voicetrain.models.registry import build_model
    from voicetrain.text.symbols import SymbolTable
    from voicetrain.voice_config import load_voice_config

    path = Path(path)
    verify_bundle(path)
    vj = path / VOICE_JSON
    try:
        info = json.loads(vj.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DamagedBundleError(f"{vj} is not valid JSON ({e})") from None
    if info.get("schema_version", 1) > BUNDLE_SCHEMA_VERSION:
        raise RegistryError(f"{vj}: bundle schema_version {info['schema_version']} is newer than this voicetrain "
                            f"understands ({BUNDLE_SCHEMA_VERSION}); upgrade voicetrain")
    voice = load_voice_config(info, str(vj))  # bundles before VoiceConfig hold a whole run_config
    symbols = SymbolTable(tuple(info["symbols"]))
    stats = FeatureStats(**info["stats"])
    model = build_model(voice.model, voice.model_config, len(symbols), voice.audio.n_mels, max(len(voice.speakers), 1))
    weights = path / info.get("weights", "model.safetensors")
    try:
        state = load_file(str(weights), device="cpu")
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - name the file whatever safetensors/torch says
        raise DamagedBundleError(f"{weights}: weights do not fit the {voice.model} model described in "
                                 f"{vj} ({type(e).__name__}: {e})") from None
    model.eval()
    from voicetrain.inference.vocoder import VocoderError, vocoder_from_files

    vocoder = None
    if isinstance(info.get("vocoder"), dict):
        try:
            vocoder = vocoder_from_files(path, info["vocoder"], voice.audio)
        except (KeyError, TypeError) as e:
            raise DamagedBundleError(f"{vj}: the vocoder entry is incomplete ({e})") from None
        except VocoderError as e:
            raise DamagedBundleError(str(e)) from None
    return BundleParts(path, info, voice, model, symbols, stats, vocoder)


@dataclass
class Voice:
    """A loaded voice: ``synthesize(text, speaker=None, speed=1.0) -> (float32 samples, sample_rate)``;
    ``stream(...)`` yields the same samples sentence by sentence."""

    name: str
    version: str
    path: Path
    info: dict[str, Any]
    synthesizer: Any  # voicetrain.inference.synthesizer.Synthesizer

    @property
    def sample_rate(self) -> int:
        return self.synthesizer.sample_rate

    @property
    def speakers(self) -> list[str]:
        return list(self.synthesizer.speakers)

    def synthesize(self, text: str, speaker: str | int | None = None, speed: float = 1.0) -> tuple[np.ndarray, int]:
        return self.synthesizer.synthesize(text, speaker=speaker, speed=speed)

    def stream(self, text: str, speaker: str | int | None = None, speed: float = 1.0):
        """The same audio as ``synthesize``, one float32 chunk per sentence as it is made."""
        return self.synthesizer.stream(text, speaker=speaker, speed=speed)


def load_voice(name_or_path: str | os.PathLike, store: ModelStore | str | os.PathLike | None = None,
               griffin_lim_iters: int = 32) -> Voice:
    """Load a registered voice (NAME, NAME@vN, NAME@TAG) or a bundle folder, hash-checked."""
    from voicetrain.inference.synthesizer import Synthesizer

    path = resolve_voice(name_or_path, store)
    parts = load_bundle_parts(path)
    # the bundle's own vocoder (or Griffin-Lim): never the vocoder path its run config recorded
    synth = Synthesizer.from_parts(parts.model, parts.voice, parts.symbols, parts.stats,
                                   vocoder=parts.vocoder or "griffin-lim", griffin_lim_iters=griffin_lim_iters,
                                   checkpoint=str(path))
    return Voice(parts.info.get("name", path.parent.name), parts.info.get("version", path.name), path, parts.info, synth)


def voice_json(*, name: str, version: str, loaded, checkpoint: Path, created: str,
               vocoder: dict | str = "griffin-lim") -> dict:
    """``vocoder``: 'griffin-lim', or the entry describing vocoder.safetensors in the bundle. The bundle carries
    the VoiceConfig (every model value written out, so it never depends on a later version's presets)."""
    cfg = loaded.voice
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION, "voicetrain_version": __version__,
        "name": name, "version": version, "created": created,
        "model": cfg.model, "weights": WEIGHTS,
        "voice_config": to_dict(cfg),
        "symbols": list(loaded.symbols.symbols),
        "stats": to_dict(loaded.stats),
        "speakers": list(cfg.speakers),
        "vocoder": vocoder,
        "audio": to_dict(cfg.audio),
        "text": to_dict(cfg.text),
        "source": {"checkpoint": str(checkpoint), "step": loaded.step},
    }


def register_run(run: str | os.PathLike, name: str | None = None, checkpoint: str = "best",
                 store: ModelStore | str | os.PathLike | None = None,
                 vocoder: str | os.PathLike | None = None, note: str = "") -> Path:
    """Add RUN's checkpoint (``best``, ``last`` or a step number) as the next version of NAME.

    NAME defaults to the run folder's name. ``vocoder`` ('griffin-lim' or a vocoder RUN / checkpoint)
    overrides the one the run names; a neural vocoder's generator weights go into the bundle as
    vocoder.safetensors, so the bundle speaks the same on a machine without the vocoder run.
    ``note``: the user's words about this version (what changed, what it is for), kept in the model card.
    Returns the new bundle folder.
    """
    import dataclasses

    from safetensors.torch import save_file

    from voicetrain.inference.checkpoint import choose_checkpoint, load_model
    from voicetrain.inference.vocoder import (
        BUILTIN, GRIFFIN_LIM, check_compatible, is_builtin, is_griffin_lim, load_named_vocoder, save_vocoder_files,
        vocoder_exists)

    store = store if isinstance(store, ModelStore) else ModelStore(store)
    run = Path(run)
    name = validate_name(run.resolve().name if name is None else name)
    if checkpoint not in ("best", "last") and not checkpoint.isdigit():
        raise RegistryError(f"--checkpoint must be best, last or a step number, got {checkpoint!r}")
    choice = choose_checkpoint(run, checkpoint)
    ckpt_path = choice.path
    loaded = load_model(ckpt_path)
    spec = loaded.voice.vocoder if vocoder is None else str(vocoder)
    voc = None
    if not is_griffin_lim(spec):
        if not vocoder_exists(spec):
            raise RegistryError(f"vocoder {spec} does not exist (named by "
                                f"{'--vocoder' if vocoder is not None else ckpt_path}); pass --vocoder "
                                f"VOCODER_RUN, --vocoder {BUILTIN} or --vocoder {GRIFFIN_LIM}")
        voc = load_named_vocoder(spec)
        check_compatible(voc.audio, loaded.voice.audio, str(voc.path))
        spec = BUILTIN if is_builtin(spec) else str(Path(spec).resolve())
    loaded.voice = dataclasses.replace(loaded.voice, vocoder=GRIFFIN_LIM if voc is None else spec)
    run_dir = run if run.is_dir() else (ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None)
    state = {k: v.detach().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    n_params = sum(p.numel() for p in loaded.model.parameters())

    def build(tmp: Path, version: str) -> None:
        # every file fsynced (voicetrain.fileio) before the store's rename publishes the version
        created = now_iso()
        with atomic_path(tmp / WEIGHTS) as part:
            save_file(state, str(part), metadata={"format": "pt", "voicetrain_version": __version__})
        voc_entry = save_vocoder_files(voc, tmp) if voc is not None else GRIFFIN_LIM
        atomic_write_json(tmp / VOICE_JSON, voice_json(name=name, version=version, loaded=loaded,
                                                       checkpoint=ckpt_path, created=created, vocoder=voc_entry))
        card = build_card(name=name, version=version, run=run_dir, checkpoint=ckpt_path, step=loaded.step,
                          voice=loaded.voice, training=loaded.run_config, n_parameters=n_params, created=created,
                          package_version=__version__)
        card["checkpoint_reason"] = choice.reason  # why this checkpoint of the run is the voice
        if note.strip():
            card["note"] = " ".join(note.split())
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "card.md", render_markdown(card))

    return store.add_folder(name, build)
