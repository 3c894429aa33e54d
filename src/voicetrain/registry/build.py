"""Turn a training run's checkpoint into an immutable bundle in a :class:`ModelStore`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from voicetrain.registry.card import build_card, render_markdown
from voicetrain.registry.store import (
    BUNDLE_SCHEMA_VERSION, VOICE_JSON, WEIGHTS, ModelStore, RegistryError, now_iso, validate_name)


def voice_json(*, name: str, version: str, loaded, checkpoint: Path, created: str,
               vocoder: dict | str = "griffin-lim") -> dict:
    """``vocoder``: 'griffin-lim', or the entry describing vocoder.safetensors in the bundle."""
    from voicetrain import __version__
    from voicetrain.config import to_dict

    cfg = loaded.run_cfg
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION, "voicetrain_version": __version__,
        "name": name, "version": version, "created": created,
        "model": cfg.model, "weights": WEIGHTS,
        "run_config": to_dict(cfg),
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
                 vocoder: str | os.PathLike | None = None) -> Path:
    """Add RUN's checkpoint (``best``, ``last`` or a step number) as the next version of NAME.

    NAME defaults to the run folder's name. ``vocoder`` ('griffin-lim' or a vocoder RUN / checkpoint)
    overrides the one the run names; a neural vocoder's generator weights go into the bundle as
    vocoder.safetensors, so the bundle speaks the same on a machine without the vocoder run.
    Returns the new bundle folder.
    """
    import dataclasses

    from voicetrain.inference.vocoder import (
        BUILTIN, GRIFFIN_LIM, check_compatible, is_builtin, is_griffin_lim, load_named_vocoder, save_vocoder_files,
        vocoder_exists)

    from safetensors.torch import save_file

    from voicetrain import __version__
    from voicetrain.inference.checkpoint import choose_checkpoint, load_model
    from voicetrain.models.registry import model_config

    store = store if isinstance(store, ModelStore) else ModelStore(store)
    run = Path(run)
    name = validate_name(run.resolve().name if name is None else name)
    if checkpoint not in ("best", "last") and not checkpoint.isdigit():
        raise RegistryError(f"--checkpoint must be best, last or a step number, got {checkpoint!r}")
    choice = choose_checkpoint(run, checkpoint)
    ckpt_path = choice.path
    loaded = load_model(ckpt_path)
    spec = loaded.run_cfg.vocoder if vocoder is None else str(vocoder)
    voc = None
    if not is_griffin_lim(spec):
        if not vocoder_exists(spec):
            raise RegistryError(f"vocoder {spec} does not exist (named by "
                                f"{'--vocoder' if vocoder is not None else ckpt_path}); pass --vocoder "
                                f"VOCODER_RUN, --vocoder {BUILTIN} or --vocoder {GRIFFIN_LIM}")
        voc = load_named_vocoder(spec)
        check_compatible(voc.audio, loaded.run_cfg.audio, str(voc.path))
        spec = BUILTIN if is_builtin(spec) else str(Path(spec).resolve())
    loaded.run_cfg = dataclasses.replace(loaded.run_cfg, vocoder=GRIFFIN_LIM if voc is None else spec)
    run_dir = run if run.is_dir() else (ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None)
    hparams = model_config(loaded.run_cfg.model, loaded.run_cfg.preset, loaded.run_cfg.model_config)
    state = {k: v.detach().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    n_params = sum(p.numel() for p in loaded.model.parameters())

    def build(tmp: Path, version: str) -> None:
        created = now_iso()
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "voicetrain_version": __version__})
        voc_entry = save_vocoder_files(voc, tmp) if voc is not None else GRIFFIN_LIM
        (tmp / VOICE_JSON).write_text(json.dumps(
            voice_json(name=name, version=version, loaded=loaded, checkpoint=ckpt_path, created=created,
                       vocoder=voc_entry), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        card = build_card(name=name, version=version, run=run_dir, checkpoint=ckpt_path, step=loaded.step,
                          run_cfg=loaded.run_cfg, model_hparams=hparams, n_parameters=n_params, created=created,
                          package_version=__version__)
        card["checkpoint_reason"] = choice.reason  # why this checkpoint of the run is the voice
        (tmp / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "card.md").write_text(render_markdown(card), encoding="utf-8")
        for p in tmp.iterdir():  # durable before the rename publishes the version
            with open(p, "rb") as f:
                os.fsync(f.fileno())

    return store.add_folder(name, build)
