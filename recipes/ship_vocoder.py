"""Ship a vocoder run's last checkpoint as voicetrain's built-in vocoder (src/voicetrain/pretrained/vocoder/).

    .venv/bin/python recipes/ship_vocoder.py VOCODER_RUN --bench BENCH.json [--out src/voicetrain/pretrained/vocoder]

Writes fp16 safetensors of the averaged generator (what synthesis uses) and of the live
discriminators (so `train-vocoder --from builtin` continues the GAN game), vocoder.json (how to
build it, its AudioConfig, the full vocoder run config and the facts below) and README.md, the
model card: data, steps, CPU time, and the figures of `bench/vocoder.py --vocoder VOCODER_RUN`,
whose JSON line --bench names. Commit the result only when it beats the committed weights on that
bench (BENCHMARKS.md keeps the history). A run trained `--from builtin` continues the shipped vocoder:
the card and vocoder.json (facts.continued_from) keep the earlier stages, and --corpus says how this
stage's dataset was made. A run trained `--from RUN2` where RUN2 continued the shipped vocoder ships as
two stages (each run on the chain back to `builtin` is one; --corpus describes them all). Where the bench
JSON scored the shipped weights beside the run (`bench/vocoder.py --baseline builtin`), the card's "against
the previously shipped weights" comes from that same process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def card(facts: dict) -> str:
    b = facts["bench"]
    gl, nn, real = b["griffin_lim"], b["neural"], b["real"]
    d = nn["minus_griffin_lim"]

    def row(name, r):
        return (f"| {name} | {r['cer_whisper']:.4f} | {r['cer_pocketsphinx']:.4f} | {r['speaker_similarity']:.4f} | "
                f"{r['dnsmos_ovrl']:.3f} | {r.get('mcd_db', float('nan')):.3f} |")

    met = "\n".join(f"- {k}: {'met' if v else 'NOT met'}" for k, v in b["targets"].items()
                    if not k.startswith("real_recordings"))
    ceiling = [f"{k.removeprefix('real_recordings_meet_')}: {'yes' if v else 'no'}" for k, v in b["targets"].items()
               if k.startswith("real_recordings")]
    if ceiling:  # a target the recordings themselves miss cannot be met by resynthesizing them
        met += "\n\nThe real recordings against the same bar (the best a vocoder can do): " + "; ".join(ceiling) + "."
    stages = [*facts.get("continued_from", []), facts]
    prev = facts.get("vs_previous")
    vs_previous = ("Against the previously shipped weights (paired, the same utterances), mean [95% bootstrap interval]: "
                   + ", ".join(f"{k} {v['mean']:+.4f} {v['ci95']}" for k, v in prev.items()) + ".\n\n") if prev else ""
    stage_lines = "\n".join(
        f"{i}. `voicetrain train-vocoder`{f' --from stage {i - 1}' if i > 1 else ''} on {st['corpus']}: {st['n_voices']} voices, "
        f"{st['train_utterances']} training utterances; {st['steps']} steps ({st['gan_start_step']} "
        f"reconstruction-only, then GAN){_loss_note(st)}, {st['train_minutes']:.0f} minutes on {st['machine']}."
        for i, st in enumerate(stages, 1))
    return f"""# voicetrain built-in vocoder (`--vocoder builtin`)

Vocos generator ({facts['model_config']}), {facts['generator_parameters']} parameters, fp16 safetensors.
Trained by voicetrain's own recipe (recipes/vocoder_cpu.md), in {len(stages)} stage(s) (no slt voice in any):

{stage_lines}

- In all: {sum(st['steps'] for st in stages)} generator updates, {sum(st['train_minutes'] for st in stages):.0f} minutes of CPU training (no GPU).
- Source checkpoint: {facts['source_checkpoint']} (exponential moving average of the generator).

## Held-out figures (`bench/vocoder.py`, {b['held_out']}, real mels, same run)

| system | Whisper CER | pocketsphinx CER | speaker similarity | DNSMOS OVRL | MCD dB |
|---|---|---|---|---|---|
{row('real recordings', {**real, 'mcd_db': float('nan')})}
{row('Griffin-Lim (32 iterations)', gl)}
{row('this vocoder', nn)}

Paired difference to Griffin-Lim, mean [95% bootstrap interval]: Whisper CER {d['cer_whisper']['mean']:+.4f}
{d['cer_whisper']['ci95']}, speaker similarity {d['speaker_similarity']['mean']:+.4f} {d['speaker_similarity']['ci95']},
DNSMOS {d['dnsmos_ovrl']['mean']:+.3f} {d['dnsmos_ovrl']['ci95']}. One-thread RTF {b['rtf_1thread']['neural']}
(Griffin-Lim {b['rtf_1thread']['griffin_lim']}).

{vs_previous}The bar for becoming the default vocoder (issue 15):
{met}

Until every target is met, Griffin-Lim stays the default and this vocoder is opt-in (`--vocoder builtin`).
Continue training it: `voicetrain train-vocoder DATASET --out RUN --from builtin --max-minutes N`.
"""


def _loss_note(stage: dict) -> str:
    """The stage's loss weights where they differ from the defaults (stages before this field say nothing)."""
    from voicetrain.vocoder_config import VocoderLossConfig

    loss, default = stage.get("loss") or {}, VocoderLossConfig()
    changed = {k: v for k, v in loss.items() if isinstance(v, (int, float)) and k != "gan_start_step"
               and getattr(default, k, v) != v}
    if not changed:
        return ""
    return (f" with {', '.join(f'{k} {v:g}' for k, v in changed.items())} "
            f"(default {', '.join(f'{getattr(default, k):g}' for k in changed)})")


def _vs_previous(new: dict, old: dict) -> dict:
    """Paired differences (this vocoder - the shipped one) over the same held-out utterances: both benches keep
    their per-utterance figures, and vocoding and the judges are deterministic, so the old run's figures stand."""
    from voicetrain.evaluation.quality import paired_difference

    out = {}
    for k, a in new["per_utterance"].items():
        b = old.get("per_utterance", {}).get(k)
        if b and len(b) == len(a):
            d = paired_difference(dict(enumerate(a)), dict(enumerate(b)), draws=10_000)
            out[k] = {"mean": round(d.mean, 4), "ci95": [round(d.low, 4), round(d.high, 4)]}
    return out


def _metrics_wall_seconds(run: Path) -> float:
    """Training wall time from metrics.csv, for a run stopped before it wrote result.json."""
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return max((float(r["wall_s"]) for r in csv.DictReader(f) if r.get("wall_s")), default=0.0)


def _stage_facts(run: Path, corpus: str, ckpt: dict | None = None) -> dict:
    """What the card says of one training run: its data, steps, minutes and threads (from its last checkpoint's
    run config, ``ckpt`` where the caller has loaded it already, result.json or metrics.csv, and its dataset)."""
    import os
    import platform

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe

    ckpt = ckpt if ckpt is not None else load_checkpoint_safe(find_checkpoint(run, "last"))
    run_cfg = ckpt["voicetrain"]["vocoder_run_config"]
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    ds = PreparedDataset.open(run_cfg["dataset"])
    return {
        "vocoder_run_config": run_cfg, "corpus": corpus, "n_voices": len({u.speaker for u in ds.manifest("train")}),
        "train_utterances": len(ds.manifest("train")),
        "steps": int(ckpt.get("global_step") or ckpt["voicetrain"].get("step") or 0),
        "gan_start_step": run_cfg["loss"]["gan_start_step"], "loss": run_cfg["loss"],
        "train_minutes": (result.get("wall_seconds") or _metrics_wall_seconds(run)) / 60,
        # the threads the run trained on (config.yaml), not the machine's cores: a 1-thread run on 2 cores is not 2x
        "machine": f"{run_cfg['train']['threads'] or 'all'} torch thread(s) on a {os.cpu_count()}-core "
                   f"{platform.machine()} machine",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--bench", required=True, help="File with bench/vocoder.py's JSON line for this run.")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/voicetrain/pretrained/vocoder"))
    ap.add_argument("--corpus", default="`demo-data --voices universal --utterances 100`",
                    help="How the run's dataset was made, for the card (its voices are counted from the dataset).")
    args = ap.parse_args(argv)

    from voicetrain.inference.checkpoint import find_checkpoint, load_checkpoint_safe
    from voicetrain.inference.vocoder import BUILTIN, load_vocoder_checkpoint, write_pretrained_vocoder

    run = Path(args.run)
    bench = json.loads(Path(args.bench).read_text().strip().splitlines()[-1])
    loaded = load_vocoder_checkpoint(run, "last")
    ckpt = load_checkpoint_safe(find_checkpoint(run, "last"))
    live = ckpt.get("current_model_state") or ckpt["state_dict"]
    disc = {k: v for k, v in live.items() if k.startswith(("mpd.", "mrd."))}
    facts = {**_stage_facts(run, args.corpus, ckpt), "model_config": loaded.model_config,
             "generator_parameters": sum(p.numel() for p in loaded.vocoder.parameters()),
             "source_checkpoint": f"{run.name}/checkpoints/{loaded.path.name}", "bench": bench}
    # Earlier runs this one continued (--from RUN), back to the shipped vocoder ("builtin"): each is a stage.
    chain, init = [], facts["vocoder_run_config"].get("init_from")
    while init and init != BUILTIN:
        p = Path(init)  # a run folder, or one of its checkpoints (RUN/checkpoints/NAME.ckpt)
        st = _stage_facts(p.parent.parent if p.suffix == ".ckpt" else p, args.corpus)
        chain.insert(0, {k: v for k, v in st.items() if k != "vocoder_run_config"})
        init = st["vocoder_run_config"].get("init_from")
    if init == BUILTIN:
        # a continuation of the shipped vocoder: its stages stay on the card
        shipped = json.loads((Path(args.out) / "vocoder.json").read_text())["facts"]
        earlier = {k: v for k, v in shipped.items() if k not in ("bench", "continued_from", "vocoder_run_config")}
        threads = shipped.get("vocoder_run_config", {}).get("train", {}).get("threads")
        if threads:  # cards before continuations named the machine's cores, not the run's threads
            earlier["machine"] = f"{threads} torch thread(s) on a 2-core x86_64 machine"
        earlier.setdefault("corpus", f"`demo-data --voices {shipped.get('corpus_preset', 'universal')} --utterances "
                                     f"{shipped.get('utterances_per_voice', 100)}`")
        facts["continued_from"] = [*shipped.get("continued_from", []), earlier, *chain]
        baseline = bench.get("baseline") or {}
        shipped_weights = Path(args.out) / "vocoder.safetensors"
        if baseline.get("path") and Path(baseline["path"]).is_file() and \
                Path(baseline["path"]).read_bytes() == shipped_weights.read_bytes():
            # the bench scored the shipped weights in the same process: same Griffin-Lim draw, judges and CPU
            facts["vs_previous"] = bench["neural"]["minus_baseline"]
        else:
            facts["vs_previous"] = _vs_previous(bench["neural"], shipped["bench"]["neural"])
    elif chain or facts["vocoder_run_config"].get("init_from"):
        sys.exit(f"{run} does not continue the shipped vocoder (its --from chain ends elsewhere): its card would "
                 "lack those stages (nothing was written)")
    folder = write_pretrained_vocoder(loaded, args.out, card(facts), facts, discriminators=disc)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(json.dumps({"out": str(folder), "bytes": size, "step": loaded.step}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
