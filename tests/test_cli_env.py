"""The CLI's OpenMP spin setting (bench/omp_wait.py measured why), and that a user's setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

SHOW = "import voicetrain.cli, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _run(**env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_cli_sets_a_short_openmp_spin_before_torch_loads():
    assert _run() == "1000 None"
    # it only works if torch is not loaded yet when the CLI module is imported
    out = subprocess.run([sys.executable, "-c", "import voicetrain.cli, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_a_users_openmp_settings_are_kept():
    assert _run(GOMP_SPINCOUNT="50") == "50 None"
    assert _run(OMP_WAIT_POLICY="ACTIVE") == "None ACTIVE"
