"""Ship a multi-speaker base run as voicetrain's built-in base voice (src/voicetrain/pretrained/base/).

    .venv/bin/python recipes/ship_base.py BASE_RUN --bench BENCH.jsonl [--checkpoint best] \
        [--out src/voicetrain/pretrained/base]

The result is a registry bundle (voice.json, manifest.json, card) that `voicetrain models list` shows
as the read-only voice ``builtin`` and `voicetrain finetune DATA --out RUN` starts from:

- model.safetensors: the chosen checkpoint's weights in fp16 (widened to float32 on load);
- speaker_centroids.json: each base speaker's resemblyzer centroid (10 training clips), so a new
  speaker's row starts from the nearest base voice without the base corpus;
- finetune_curve.json: the measured curve `prepare` answers "is my data enough?" from (the bench
  lines of runs `full` and `scratch`: minutes of audio, minutes of training, figures against real);
- README.md: the model card: data, steps, CPU time, and the figures of `bench/finetune.py --base
  builtin`, whose JSON lines --bench names (optional on a first ship: the card then says so).

Machine-local paths (the run and dataset folders) are replaced by their names. Commit the result
only when it beats the committed base on bench/finetune.py (BENCHMARKS.md keeps the history).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/voicetrain/pretrained/base"
MAX_BYTES = 8 * 1024 * 1024


def _scrub(text: str, paths: dict[str, str]) -> str:
    for p, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(p, name)
    return text


def _same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def bench_table(lines: list[dict]) -> str:
    if not lines:
        return "No held-out figures yet: run `bench/finetune.py --base builtin` and re-ship with --bench.\n"
    keys = [("run", "run"), ("target_source_audio_s", "slt audio s"), ("cer_whisper", "Whisper CER"), ("cer", "pocketsphinx CER"),
            ("speaker_similarity", "similarity to slt"), ("target_nearest_rate", "nearest = slt"),
            ("dnsmos_ovrl", "DNSMOS"), ("steps", "steps"), ("budget_min", "train min")]
    rows = ["| " + " | ".join(h for _, h in keys) + " |", "|" + "---|" * len(keys)]
    for ln in lines:
        rows.append("| " + " | ".join(str(ln.get(k, "")) for k, _ in keys) + " |")
    r = lines[0]
    real = (f"Real slt recordings on the same sentences: Whisper CER {r.get('real_cer_whisper')}, pocketsphinx CER "
            f"{r.get('real_cer')}, similarity {r.get('real_speaker_similarity')}, DNSMOS {r.get('real_dnsmos_ovrl')}.")
    return "\n".join(rows) + "\n\n" + real + f"\nHeld-out text: {r.get('held_out')}; vocoder: {r.get('vocoder')}; " \
        f"target audio {r.get('target_source_audio_s')} s; machine: {r.get('machine')}, load {r.get('load_avg_1m_now')}.\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--bench", nargs="*", help="Files of bench/finetune.py's JSON lines for this base (one per run).")
    ap.add_argument("--checkpoint", default="best", help="best (by quality when the run scored it), last, or a step.")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--corpus", default="demo-data --voices base --utterances 200")
    ap.add_argument("--compute", default="", help="What trained it, e.g. '95 minutes of one torch thread on a "
                                                   "2-core x86_64 machine (no GPU)'.")
    args = ap.parse_args(argv)

    import yaml
    from safetensors.torch import load_file, save_file

    from voicetrain.data.manifest import PreparedDataset
    from voicetrain.evaluation.models import SpeakerEncoder
    from voicetrain.inference.bundle import register_run
    from voicetrain.registry.store import ModelStore, _make_writable, verify_bundle, write_manifest
    from voicetrain.training.finetune import CENTROIDS, speaker_centroids
    from voicetrain.voice_config import load_voice_config

    run = Path(args.run).resolve()
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    dataset = Path(cfg["dataset"]).resolve()
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    bench = [json.loads(ln) for f in (args.bench or []) for ln in Path(f).read_text().splitlines()
             if ln.strip().startswith("{")]
    bench = [ln for ln in bench if ln.get("bench") == "finetune"]  # the finetune-vocoder line is the vocoder's
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = register_run(run, name="builtin-ship", checkpoint=args.checkpoint, store=ModelStore(tmp),
                              vocoder="griffin-lim")
        _make_writable(bundle)
        staging = Path(tmp) / "staging"
        shutil.copytree(bundle, staging)
        (staging / "manifest.json").unlink()
        # fp16 weights: half the size; load_state_dict widens them into the float32 model
        w = staging / "model.safetensors"
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(w)).items()}
        save_file(state, str(w), metadata={"format": "pt", "dtype": "float16"})
        shipped = out / "model.safetensors"
        if shipped.exists() and _same_tensors(load_file(str(shipped)), state):
            # the same weights (a re-ship for new figures): keep the committed bytes, so git sees no change
            shutil.copyfile(shipped, w)
        enc = SpeakerEncoder()
        cents = speaker_centroids(PreparedDataset.open(dataset), enc, per_speaker=10)
        (staging / CENTROIDS).write_text(json.dumps({k: [round(float(x), 6) for x in v] for k, v in cents.items()}))
        curve = [{"run": ln["run"], "audio_minutes": round((ln["target_train_audio_s"] + ln["target_val_audio_s"]) / 60, 2),
                  "train_minutes": ln["budget_min"], "cer_ratio": round(ln["cer_whisper"] / max(ln["real_cer_whisper"], 1e-3), 3),
                  "similarity_gap": round(ln["speaker_similarity"] - ln["real_speaker_similarity"], 4),
                  "dnsmos_gap": round(ln["dnsmos_ovrl"] - ln["real_dnsmos_ovrl"], 3)}
                 for ln in bench if ln.get("run") in ("full", "scratch")]
        if curve:
            (staging / "finetune_curve.json").write_text(json.dumps(curve, indent=1))
        paths = {str(run): run.name, str(dataset): dataset.name, str(Path(tmp)): "store"}
        for name in ("voice.json", "card.json", "card.md"):
            p = staging / name
            p.write_text(_scrub(p.read_text(encoding="utf-8"), paths), encoding="utf-8")
        info = json.loads((staging / "voice.json").read_text())
        info["name"], info["version"] = "builtin", "v1"
        (staging / "voice.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
        n_params = sum(v.numel() for v in state.values())
        steps = info["source"]["step"]
        card = f"""# voicetrain built-in base voice (`builtin`)

Multi-speaker {info['model']} (preset `{load_voice_config(info, 'voice.json').preset}`), {n_params:,} parameters, fp16 safetensors.
`voicetrain finetune DATA --out RUN` starts from it when `--from` is not given; `voicetrain models list` shows it.

- Data: `voicetrain {args.corpus}` — {len(info['speakers'])} English voices (espeak-ng variants, flite awb and
  kal16, festival kal and ked, sox pitch-shifted copies); flite rms (the demo voice) and every slt voice are
  kept out. Speakers: {', '.join(info['speakers'])}.
- Steps: {steps} (checkpoint `{info['source']['checkpoint']}`, chosen as {args.checkpoint}).
- Compute: {args.compute or f"{result.get('wall_seconds', 0) / 60:.0f} minutes of training"} (no GPU).
- Speaker centroids: resemblyzer, 10 training clips per speaker ({CENTROIDS}).

## Fine-tuning to the held-out voice flite slt (`bench/finetune.py --base builtin`)

{bench_table(bench)}
Continue training it: fine-tune on the base corpus with `voicetrain finetune BASE_DATASET --from builtin
--strategy full --out RUN`, re-run the bench, and re-ship only when it beats these figures.
"""
        (staging / "README.md").write_text(card, encoding="utf-8")
        write_manifest(staging)
        verify_bundle(staging)
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        if size > MAX_BYTES:
            print(f"error: the bundle is {size / 1e6:.1f} MB, over the 8 MB budget", file=sys.stderr)
            return 1
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
        for p in [out, *out.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    print(json.dumps({"out": str(out), "bytes": size, "parameters": n_params, "step": steps,
                      "speakers": len(info["speakers"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
