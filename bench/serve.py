"""HTTP serving under load, malformed-request burst, and ONNX vs PyTorch RTF; prints one JSON line.

1. A voice: ``--run RUN`` (its best checkpoint), else a FastSpeech 2 (``--preset``, default
   cpu) trained for ``--train-minutes`` (default 1) on ``--dataset`` or on a freshly
   prepared demo corpus (flite rms, ``--utterances`` ARCTIC prompts).
2. It is registered in a temporary model store and served by ``voicetrain serve`` in a
   subprocess on 127.0.0.1 (a free port, with an API key).
3. ``--clients`` concurrent clients post Harvard sentences for ``--seconds`` (bounded
   loop): requests/s, p50/p99 latency, errors (must be 0), served audio seconds.
4. A burst of malformed requests: every answer must be 4xx, and the server still healthy.
5. RTF of onnxruntime vs PyTorch on the same sentences in this process (server stopped).

    .venv/bin/python bench/serve.py [--run RUN] [--seconds 30] [--clients 4]

``--first-audio`` measures instead the time to the first audio of a 60-word paragraph, streamed
(OpenAI endpoint, pcm: sentence by sentence; Wyoming: the first audio-chunk) against not streamed
(POST /v1/synthesize: the whole text before the first byte), ``--repeats`` times each, one JSON line:

    .venv/bin/python bench/serve.py --first-audio [--run RUN] [--vocoder builtin] [--repeats 5]
``--piper`` measures something else instead (see :func:`piper_bench`): the voice exported with
``voicetrain export --format piper`` spoken by piper-tts (its PiperVoice on onnxruntime, one
thread) beside voicetrain's torch Synthesizer with the same vocoder (one thread), on the same
Harvard sentences, text to audio; one JSON line with RTFs and the machine load.

    .venv/bin/python bench/serve.py --piper [--run RUN] [--sentences 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path

import numpy as np
import soundfile as sf

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

KEY = "bench-key"


def log(msg: str) -> None:
    print(f"[bench/serve] {msg}", file=sys.stderr, flush=True)


def harvard(n: int) -> list[str]:
    rows = files("voicetrain.data").joinpath("prompts/harvard_sentences.tsv").read_text(encoding="utf-8").splitlines()
    return [r.split("\t", 1)[1] for r in rows if "\t" in r][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes | dict, key: str | None = KEY, timeout: float = 120.0) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get(url: str, key: str | None = KEY) -> int:
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def build_run(args, work: Path) -> Path:
    if args.run:
        return Path(args.run)
    from voicetrain.run_config import RunConfig, TrainConfig
    from voicetrain.training.train import train

    dataset = Path(args.dataset) if args.dataset else None
    if dataset is None:
        from voicetrain.data.demo import make_demo_corpus
        from voicetrain.data.prepare import PrepareConfig, prepare

        corpus = work / "corpus"
        make_demo_corpus(corpus, ["flite:rms"], utterances=args.utterances, seed=0)
        dataset = work / "dataset"
        prepare(PrepareConfig(input=str(corpus), out=str(dataset)))
    run = work / "run"
    cfg = RunConfig(preset=args.preset, train=TrainConfig(
        max_steps=100000, max_minutes=args.train_minutes, val_every_steps=100, checkpoint_every_steps=100,
        sample_every_steps=100000, batch_size=8, threads=0))
    log(f"training {args.preset} on {dataset} for {args.train_minutes} min")
    train(dataset, run, cfg)
    return run


def load_test(base: str, texts: list[str], clients: int, seconds: float) -> dict:
    lat: list[float] = []
    audio_s = [0.0]
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        n = i
        while time.perf_counter() < deadline:  # bounded: no request starts after the deadline
            text = texts[n % len(texts)]
            n += clients
            t0 = time.perf_counter()
            try:
                status, body = post(f"{base}/v1/synthesize", {"text": text})
            except OSError as e:
                status, body = 0, str(e).encode()
            dt = time.perf_counter() - t0
            with lock:
                if status == 200:
                    lat.append(dt)
                    audio_s[0] += sf.info(io.BytesIO(body)).duration
                else:
                    errors.append(f"{status}: {body[:200]!r}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(lat) + len(errors),
            "requests_per_s": round(len(lat) / wall, 3),
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "latency_p99_s": round(float(np.percentile(lat, 99)), 3) if lat else None,
            "errors": len(errors), "error_examples": errors[:3],
            "audio_seconds_served": round(audio_s[0], 1),
            "server_rtf": round(wall / audio_s[0], 4) if audio_s[0] else None}


def malformed_burst(base: str, rounds: int) -> dict:
    url = f"{base}/v1/synthesize"
    cases = [
        ("bad_json", lambda: post(url, b"{not json")),
        ("no_body", lambda: post(url, b"")),
        ("array_body", lambda: post(url, b'["hello"]')),
        ("missing_text", lambda: post(url, {"voice": "bench"})),
        ("text_not_string", lambda: post(url, {"text": 42})),
        ("empty_text", lambda: post(url, {"text": ""})),
        ("unspeakable_text", lambda: post(url, {"text": "?!... ;"})),
        ("too_long", lambda: post(url, {"text": "word " * 1000})),
        ("speed_high", lambda: post(url, {"text": "Hello.", "speed": 100})),
        ("speed_low", lambda: post(url, {"text": "Hello.", "speed": 0})),
        ("speed_nan_string", lambda: post(url, {"text": "Hello.", "speed": "NaN"})),
        ("unknown_voice", lambda: post(url, {"text": "Hello.", "voice": "nobody"})),
        ("unknown_speaker", lambda: post(url, {"text": "Hello.", "speaker": "mallory"})),
        ("speaker_out_of_range", lambda: post(url, {"text": "Hello.", "speaker": 99})),
        ("extra_field", lambda: post(url, {"text": "Hello.", "pitch": 3})),
        ("no_api_key", lambda: post(url, {"text": "Hello."}, key=None)),
        ("wrong_api_key", lambda: post(url, {"text": "Hello."}, key="nope")),
        ("binary_garbage", lambda: post(url, os.urandom(512))),
    ]
    by_case: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    for _ in range(rounds):
        for name, fn in cases:
            status, _ = fn()
            by_case.setdefault(name, []).append(status)
    statuses = [s for v in by_case.values() for s in v]
    return {"requests": len(statuses), "all_4xx": all(400 <= s < 500 for s in statuses),
            "non_4xx": [f"{k}:{s}" for k, v in by_case.items() for s in v if not 400 <= s < 500][:5],
            "status_by_case": {k: sorted(set(v)) for k, v in by_case.items()},
            "seconds": round(time.perf_counter() - t0, 2)}


def rtf_compare(store, onnx_dir: Path, texts: list[str]) -> dict:
    import torch

    from voicetrain.inference.bundle import load_voice
    from voicetrain.inference.onnx_runtime import load_onnx_synthesizer

    torch.set_num_threads(1)
    out = {}
    for label, synth in (("pytorch", load_voice("bench", store=store).synthesizer),
                         ("onnxruntime", load_onnx_synthesizer(onnx_dir, threads=1))):
        synth.synthesize("Warm up.")
        t_model = t_total = audio = 0.0
        for text in texts:
            ids, _ = synth.tokenizer(text)
            t0 = time.perf_counter()
            synth.mel_for_ids(ids)
            t_model += time.perf_counter() - t0
            t0 = time.perf_counter()
            wav, sr = synth.synthesize(text)
            t_total += time.perf_counter() - t0
            audio += len(wav) / sr
        out[label] = {"rtf": round(t_total / audio, 4), "rtf_acoustic_model": round(t_model / audio, 5)}
    out["acoustic_speedup_onnx"] = round(out["pytorch"]["rtf_acoustic_model"] / out["onnxruntime"]["rtf_acoustic_model"], 2)
    out["sentences"] = len(texts)
    out["threads"] = 1
    return out


def paragraph(words: int = 60) -> str:
    """Harvard sentences, whole, until the paragraph has at least ``words`` words."""
    out: list[str] = []
    for sentence in harvard(100)[50:]:
        out.append(sentence)
        if sum(len(s.split()) for s in out) >= words:
            return " ".join(out)
    raise RuntimeError("not enough Harvard sentences")


def first_byte_times(port: int, path: str, body: dict) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the last, body bytes) of one POST."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "X-API-Key": KEY})
    r = conn.getresponse()
    first = r.read(1)
    t_first = time.perf_counter() - t0
    if r.status != 200:
        raise SystemExit(f"{path}: {r.status} {first + r.read()!r}")
    n = len(first) + len(r.read())
    t_all = time.perf_counter() - t0
    conn.close()
    return t_first, t_all, n


def wyoming_first_chunk(port: int, text: str) -> tuple[float, float, int]:
    """(seconds to the first audio-chunk, seconds to audio-stop, audio bytes) of one Wyoming synthesize."""
    import asyncio

    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    async def talk() -> tuple[float, float, int]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            t0 = time.perf_counter()
            await client.write_event(Synthesize(text=text).event())
            t_first, n = None, 0
            while (event := await client.read_event()) is not None and event.type != "audio-stop":
                if AudioChunk.is_type(event.type):
                    t_first = t_first or time.perf_counter() - t0
                    n += len(AudioChunk.from_event(event).audio)
            return t_first, time.perf_counter() - t0, n

    return asyncio.run(talk())


def first_audio_bench(args) -> dict:
    """Time to first audio, streamed vs not, for a 60-word paragraph (``--first-audio``)."""
    import statistics

    import torch

    from voicetrain.inference.bundle import register_run
    from voicetrain.registry.store import ModelStore
    from voicetrain.text.sentences import split_sentences

    tmp = tempfile.TemporaryDirectory(prefix="vt-bench-ttfa-")
    work = Path(args.work or tmp.name)
    run = build_run(args, work)
    store = ModelStore(work / "store")
    bundle = register_run(run, "bench", store=store, vocoder=args.vocoder)
    voice = json.loads((bundle / "voice.json").read_text())
    text = paragraph(60)
    http_port, wy_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "voicetrain.cli", "serve", "bench", "--store", str(store.root), "--port",
           str(http_port), "--api-key", KEY, "--workers", str(args.workers), "--wyoming",
           f"tcp://127.0.0.1:{wy_port}"]
    load_before = os.getloadavg()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows: dict[str, list[tuple[float, float, int]]] = {"streamed_http_pcm": [], "streamed_wyoming": [],
                                                       "not_streamed_http_wav": []}
    try:
        t_start = time.perf_counter()
        while get(f"http://127.0.0.1:{http_port}/healthz", key=None) != 200:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - t_start > 180:
                raise SystemExit("server did not become healthy within 180 s")
            time.sleep(0.2)
        speech = {"model": "bench", "voice": "default", "input": text, "response_format": "pcm"}
        first_byte_times(http_port, "/v1/audio/speech", speech)  # warm-up
        log(f"first audio: {len(text.split())} words, {args.repeats} repeats of each way")
        for _ in range(args.repeats):  # interleaved, so load changes hit each way alike
            rows["streamed_http_pcm"].append(first_byte_times(http_port, "/v1/audio/speech", speech))
            rows["streamed_wyoming"].append(wyoming_first_chunk(wy_port, text))
            rows["not_streamed_http_wav"].append(first_byte_times(http_port, "/v1/synthesize", {"text": text}))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    sr = voice["audio"]["sample_rate"]
    audio_s = rows["streamed_http_pcm"][0][2] / 2 / sr

    def summary(r: list[tuple[float, float, int]]) -> dict:
        firsts, totals = [x[0] for x in r], [x[1] for x in r]
        return {"first_audio_s_median": round(statistics.median(firsts), 3), "first_audio_s_min": round(min(firsts), 3),
                "total_s_median": round(statistics.median(totals), 3)}

    out = {k: summary(v) for k, v in rows.items()}
    result = {
        "bench": "serve_first_audio", "words": len(text.split()), "sentences": len(split_sentences(text)),
        "characters": len(text), "audio_seconds": round(audio_s, 2), "repeats": args.repeats, **out,
        "first_audio_speedup_streamed": round(out["not_streamed_http_wav"]["first_audio_s_median"]
                                              / out["streamed_http_pcm"]["first_audio_s_median"], 1),
        "voice": {"source": "--run" if args.run else f"trained {args.train_minutes} min", "run": str(run),
                  "model": voice["model"], "preset": voice["voice_config"]["preset"],
                  "vocoder": args.vocoder or voice["voice_config"].get("vocoder")},
        "server": {"workers": args.workers, "torch_threads_per_synthesis": 1},
        "cpu_count": os.cpu_count(), "torch_version": torch.__version__,
        "load_average_1m_before": round(load_before[0], 2), "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    tmp.cleanup()
    return result
def piper_bench(args) -> dict:
    """RTF of the Piper export under piper-tts's onnxruntime beside voicetrain's torch path, one thread each.

    Both paths go from text to audio: piper phonemizes with its bundled espeak-ng and runs one
    ONNX graph (FastSpeech 2 + Vocos); voicetrain normalizes, phonemizes with phonemizer and runs
    torch with the same vocoder. Each round speaks every sentence once; RTFs are per round."""
    import torch
    from onnxruntime import InferenceSession, SessionOptions
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig

    from voicetrain.inference.export import load_source
    from voicetrain.inference.piper_export import choose_vocoder, export_piper
    from voicetrain.inference.synthesizer import Synthesizer

    tmp = tempfile.TemporaryDirectory(prefix="vt-bench-piper-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    run = build_run(args, work)
    load_before = os.getloadavg()
    export = export_piper(run, work / "piper", name="bench", vocoder=args.vocoder, force=True)
    parts, _ = load_source(run)
    vocoder, vocoder_desc = choose_vocoder(parts, args.vocoder)
    synth = Synthesizer.from_checkpoint(run, vocoder=vocoder)
    synth.threads = 1
    torch.set_num_threads(1)

    def piper_voice(threads: int):
        opts = SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = InferenceSession(str(export.onnx), sess_options=opts, providers=["CPUExecutionProvider"])
        return PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(export.config.read_text())))

    texts = [t for t in harvard(200) if 8 <= len(t.split()) <= 12][: args.sentences]

    def timed(speak) -> dict:
        speak("Warm up the caches.")
        rtfs, audio_s = [], 0.0
        for _ in range(args.rounds):
            t = audio_s = 0.0
            for text in texts:
                t0 = time.perf_counter()
                n, sr = speak(text)
                t += time.perf_counter() - t0
                audio_s += n / sr
            rtfs.append(t / audio_s)
        return {"rtf_median": round(float(np.median(rtfs)), 4), "rtf_min": round(min(rtfs), 4),
                "audio_s_per_round": round(audio_s, 1)}

    def piper_speak(voice):
        def speak(text):
            chunks = list(voice.synthesize(text))
            return sum(c.audio_float_array.size for c in chunks), chunks[0].sample_rate
        return speak

    def torch_speak(text):
        wav, sr = synth.synthesize(text)
        return wav.size, sr

    one = piper_voice(1)
    result_piper = timed(piper_speak(one))
    result_torch = timed(torch_speak)
    result_default = timed(piper_speak(piper_voice(0)))  # piper's own session settings (all cores)
    # the same sentence through both, before piper's peak normalization: they must be the same audio
    ids = one.phonemes_to_ids(one.phonemize(texts[0])[0])
    a = one.phoneme_ids_to_audio(ids, SynthesisConfig(normalize_audio=False))
    b, _ = synth.synthesize(texts[0])
    onnx_mb = round(export.onnx.stat().st_size / 2**20, 2)
    tmp.cleanup()
    return {
        "bench": "piper", "run": str(run), "vocoder": vocoder_desc, "onnx_mb": onnx_mb,
        "export_s": round(export.seconds, 1), "sentences": len(texts), "rounds": args.rounds,
        "piper_onnxruntime_1thread": result_piper, "voicetrain_torch_1thread": result_torch,
        "piper_onnxruntime_default_threads": result_default,
        "speedup_piper_vs_torch": round(result_torch["rtf_median"] / result_piper["rtf_median"], 2),
        "same_audio_max_abs_diff": float(np.abs(a - b).max()) if a.shape == b.shape else f"shapes {a.shape} vs {b.shape}",
        "cpu_count": os.cpu_count(), "load_average_1m_before": round(load_before[0], 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="Serve this RUN's best checkpoint instead of training a new voice.")
    ap.add_argument("--dataset", help="Prepared DATASET to train on (default: a fresh demo corpus).")
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--train-minutes", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--burst-rounds", type=int, default=5)
    ap.add_argument("--work", help="Working folder (default: a temp dir, removed afterwards).")
    ap.add_argument("--first-audio", action="store_true",
                    help="Measure time to first audio, streamed vs not, for a 60-word paragraph (only that).")
    ap.add_argument("--repeats", type=int, default=5, help="--first-audio: requests of each kind.")
    ap.add_argument("--piper", action="store_true", help="Only the Piper-export RTF benchmark (piper_bench).")
    ap.add_argument("--vocoder", help="--first-audio: bundle this vocoder ('builtin', 'griffin-lim', a vocoder "
                                      "RUN) instead of the run's; --piper: the vocoder for the export and the torch "
                                      "path (default: the voice's, else builtin).")
    ap.add_argument("--sentences", type=int, default=20, help="--piper: Harvard sentences of 8-12 words.")
    ap.add_argument("--rounds", type=int, default=3, help="--piper: passes over the sentences.")
    args = ap.parse_args()
    if args.first_audio:
        print(json.dumps(first_audio_bench(args)))
        return
    if args.piper:
        print(json.dumps(piper_bench(args)))
        return

    from voicetrain.inference.export import export_onnx
    from voicetrain.inference.bundle import register_run
    from voicetrain.registry.store import ModelStore

    tmp = tempfile.TemporaryDirectory(prefix="vt-bench-serve-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = build_run(args, work)
    store = ModelStore(work / "store")
    bundle = register_run(run, "bench", store=store)
    export_onnx("bench", work / "onnx", store=store)
    voice = json.loads((bundle / "voice.json").read_text())
    card = json.loads((bundle / "card.json").read_text())
    setup_s = time.perf_counter() - t0

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "voicetrain.cli", "serve", "bench", "--store", str(store.root), "--port", str(port),
           "--api-key", KEY, "--workers", str(args.workers)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t_start = time.perf_counter()
        while get(f"{base}/healthz", key=None) != 200:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - t_start > 180:
                raise SystemExit("server did not become healthy within 180 s")
            time.sleep(0.2)
        startup_s = time.perf_counter() - t_start
        texts = harvard(40)
        post(f"{base}/v1/synthesize", {"text": texts[0]})  # warm-up
        log(f"server up in {startup_s:.1f} s; load test {args.seconds} s with {args.clients} clients")
        load = load_test(base, texts, args.clients, args.seconds)
        log(f"load: {load['requests']} requests, {load['errors']} errors; malformed burst")
        burst = malformed_burst(base, args.burst_rounds)
        healthy = get(f"{base}/healthz", key=None) == 200 and post(f"{base}/v1/synthesize", {"text": texts[1]})[0] == 200
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    log("RTF: onnxruntime vs PyTorch")
    rtf = rtf_compare(store, work / "onnx", harvard(60)[40:50])
    result = {
        "bench": "serve", "voice": {"source": "--run" if args.run else f"trained {args.train_minutes} min",
                                     "run": str(run), "model": voice["model"],
                                     "preset": voice["voice_config"]["preset"],
                                     "parameters": card["architecture"]["parameters"],
                                     "steps": card["training"].get("steps")},
        "setup_seconds": round(setup_s, 1), "server_startup_s": round(startup_s, 2), "workers": args.workers,
        "load": load, "malformed_burst": burst, "healthy_after_burst": healthy, "rtf": rtf,
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    tmp.cleanup()


if __name__ == "__main__":
    main()
