"""The studio's own memory: RSS of a `voicetrain studio` process idle, after the page loaded, and after its
first take check (Whisper tiny.en and the QC's librosa loaded). Listening to a checkpoint later loads torch and
the model into it too (not measured here: it needs a trained run).

Training never runs in this process (jobs.py starts `voicetrain train` as a separate interpreter), so these
figures are all the studio adds beside a training run. Prints one JSON line.

    python bench/studio.py [--settle 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle", type=float, default=3.0, help="Seconds to wait before each reading.")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "voicetrain.cli", "studio", "--project", f"{tmp}/p",
                                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            t0 = time.time()
            while True:
                try:
                    urllib.request.urlopen(url + "/api/state", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() - t0 > 120:
                        raise SystemExit("the studio did not start")
                    time.sleep(0.2)
            start_s = time.time() - t0
            time.sleep(args.settle)
            idle = rss_mb(proc.pid)
            for path in ("/", "/static/studio.js", "/static/studio.css", "/api/prompts", "/api/takes"):
                urllib.request.urlopen(url + path, timeout=30).read()
            time.sleep(args.settle)
            page = rss_mb(proc.pid)
            wav = Path(tmp) / "take.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), "Author of the danger trail, Philip Steels, etc."], check=True)
            req = urllib.request.Request(url + "/api/takes/arctic_a0001", data=wav.read_bytes(), method="POST",
                                         headers={"Content-Type": "audio/wav"})
            t1 = time.time()
            verdict = json.loads(urllib.request.urlopen(req, timeout=300).read())["verdict"]
            first_check_s = time.time() - t1
            time.sleep(args.settle)
            checked = rss_mb(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps({"idle_rss_mb": round(idle, 1), "after_page_rss_mb": round(page, 1),
                      "after_first_take_check_rss_mb": round(checked, 1), "startup_s": round(start_s, 2),
                      "first_take_check_s": round(first_check_s, 2), "take_status": verdict["status"],
                      "load_avg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
