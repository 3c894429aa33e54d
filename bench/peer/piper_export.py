"""Run INSIDE the peer's venv: Piper's own ONNX export (``python -m piper.train.export_onnx``) on torch 2.13.

    PEER_VENV/bin/python bench/peer/piper_export.py --checkpoint C.ckpt --output-file V.onnx

piper-tts 1.8.0's exporter calls ``torch.onnx.export(..., opset_version=15, dynamic_axes=...)``
without ``dynamo=``; since torch 2.9 that defaults to the dynamo exporter, which needs the
``onnxscript`` package (not among piper's dependencies: "No module named 'onnxscript'") and
does not take VITS' data-dependent lengths. Pinning ``dynamo=False`` gives the TorchScript exporter
Piper was written for (voicetrain's own export does the same). Everything else is Piper's module.
Not imported by voicetrain or its tests: it needs piper-tts[train].
"""

from __future__ import annotations

import functools

import torch

if __name__ == "__main__":
    torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
    from piper.train import export_onnx

    export_onnx.main()
