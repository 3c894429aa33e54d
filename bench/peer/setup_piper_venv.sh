#!/usr/bin/env bash
# Build the peer's own venv for `bench/train_demo.py --peer piper`: Piper's Lightning VITS trainer
# (piper-tts[train]==1.8.0) on the CPU torch, kept apart from voicetrain's venv so neither
# resolves the other's pins.
#
#   bash bench/peer/setup_piper_venv.sh [VENV]     (default /tmp/voicetrain-bench/piper-venv)
#
# Why each step:
# * torch==2.13.0 first, pinned by a constraint file: an unpinned `lightning`/`torch>=2` resolves to a
#   CUDA torch plus ~18 nvidia packages (several GB); the CPU wheel is on local disk here.
# * The wheel ships vits/monotonic_align/setup.py without its core.pyx, so
#   piper.train.vits.monotonic_align.monotonic_align.core is missing and `python -m piper.train` dies at
#   import. In its place goes bench/peer/mas_core.py, copied to
#   .../monotonic_align/monotonic_align/core.py: Piper's maximum_path_c signature over the compiled
#   glow-tts kernel of PyPI's monotonic-alignment-search (the package voicetrain uses), so no C
#   compiler or Cython build is needed (tests/bench/test_peer_side_by_side.py checks it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-/tmp/voicetrain-bench/piper-venv}"
PY="${PYTHON:-python3}"
CONSTRAINTS="$VENV/peer-constraints.txt"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
cat > "$CONSTRAINTS" <<'PINS'
torch==2.13.0
onnxruntime==1.30.0
setuptools<81
PINS
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "torch==2.13.0"
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "piper-tts[train]==1.8.0" "monotonic-alignment-search==0.2.1"

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MA="$SITE/piper/train/vits/monotonic_align"
mkdir -p "$MA/monotonic_align"
touch "$MA/monotonic_align/__init__.py"
cp "$HERE/mas_core.py" "$MA/monotonic_align/core.py"
"$VENV/bin/python" -c 'from piper.train.vits.monotonic_align.monotonic_align.core import maximum_path_c; import piper.train.vits.lightning; print("piper trainer imports")'
