"""Run INSIDE the peer's venv: speak sentences with an exported Piper voice through the `piper` package.

    PEER_VENV/bin/python bench/peer/piper_speak.py --voice V.onnx --sentences S.tsv --out DIR

V.onnx comes from Piper's own ``python -m piper.train.export_onnx`` and V.onnx.json is the config its
trainer wrote (``--data.config_path``), as piper1-gpl's docs/TRAINING.md lays them out. S.tsv holds
``id<TAB>text``; DIR/ID.wav is written for each, with the voice config's default noise and
length scales.
Not imported by voicetrain or its tests: it needs piper-tts.
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voice", type=Path, required=True)
    ap.add_argument("--sentences", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from piper import PiperVoice

    voice = PiperVoice.load(args.voice)
    args.out.mkdir(parents=True, exist_ok=True)
    for line in args.sentences.read_text(encoding="utf-8").splitlines():
        sid, text = line.split("\t", 1)
        with wave.open(str(args.out / f"{sid}.wav"), "wb") as w:
            voice.synthesize_wav(text, w)


if __name__ == "__main__":
    main()
