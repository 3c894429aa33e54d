"""voicetrain studio: fine-tune the shipped base (`builtin`) from the Train screen's job route, register the result,
download it for Piper, and the Keep screen's snippets (curl, Home Assistant over Wyoming, the Piper add-on).

Real `voicetrain` subprocesses on the 12-utterance demo corpus: a few fine-tuning steps, the real export, the
real Wyoming server started with the command the snippet gives.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
from tests.studio.test_train import job, studio_with_demo_takes, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, demo_corpus_dir):
    """A studio project whose run `ft` fine-tuned the shipped base for 3 steps, registered as myvoice@v1."""
    project = tmp_path_factory.mktemp("keep") / "proj"
    c, _ = studio_with_demo_takes(project, demo_corpus_dir)
    opts = c.get("/api/train/options").json()
    # the shipped base is in this install, so the Train screen offers fine-tuning and the export offers Piper
    assert opts["finetune_available"] and opts["piper_export"], opts
    body = {"mode": "finetune", "max_minutes": None, "max_steps": 3,
            "settings": ["train.batch_size=4", "train.threads=1", "train.early_stopping_patience=0"]}
    r = c.post("/api/runs/ft/start", json=body)
    assert r.status_code == 200, r.text
    j = wait_for("the fine-tune", lambda: (x := job(c, "ft")) and x["status"] not in ("running", "stopping") and x,
                 timeout=600)
    assert j["status"] == "finished", c.get("/api/runs/ft").json()["log"]
    r = c.post("/api/voices", json={"run": "ft", "name": "myvoice", "note": "fine-tuned in the studio"})
    assert r.status_code == 200, r.text
    return c, project


def test_finetune_from_the_shipped_base_through_the_job_route(finetuned):
    from voicetrain.registry.store import builtin_dir

    c, project = finetuned
    run = project / "runs" / "ft"
    view = c.get("/api/runs/ft").json()
    # the job ran `voicetrain finetune` (no --from: the shipped base) with the settings mapped to its flags
    assert view["job"]["command"].startswith("finetune ") and "--from" not in view["job"]["command"]
    assert "--batch-size 4" in view["job"]["command"] and "--threads 1" in view["job"]["command"]
    assert "--early-stop 0" in view["job"]["command"]
    assert (run / "base.txt").read_text().strip() == str(builtin_dir())
    base_speakers = json.loads((builtin_dir() / "voice.json").read_text())["speakers"]
    import yaml

    speakers = yaml.safe_load((run / "config.yaml").read_text())["speakers"]
    assert speakers[: len(base_speakers)] == base_speakers and len(speakers) == len(base_speakers) + 1
    assert json.loads((run / "result.json").read_text())["steps"] == 3
    ck = c.get("/api/runs/ft/checkpoints").json()
    assert ck["selected"] in ck["checkpoints"]
    # Listen speaks the voice it was fine-tuned for (the new last speaker), not the base's speaker 0
    text = "Hello there, how are you today?"
    r = c.post("/api/synthesize", json={"run": "ft", "checkpoint": "best", "text": text})
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    heard, _ = sf.read(io.BytesIO(r.content), dtype="int16")
    from voicetrain.inference.synthesizer import Synthesizer

    synth = Synthesizer.from_checkpoint(run)
    own, base0 = (synth.synthesize(text, speaker=s)[0] for s in (speakers[-1], speakers[0]))
    assert len(heard) == len(own) != len(base0)


def test_piper_download_is_a_voice_onnxruntime_and_piper_load(finetuned, tmp_path):
    import onnxruntime

    from voicetrain.inference.bundle import load_voice

    c, project = finetuned
    r = c.get("/api/voices/myvoice/v1/piper.zip")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="myvoice-v1-piper.zip"'
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["myvoice-v1-piper/myvoice.onnx", "myvoice-v1-piper/myvoice.onnx.json"]
    z.extractall(tmp_path)
    onnx_path = tmp_path / "myvoice-v1-piper" / "myvoice.onnx"
    cfg = json.loads(onnx_path.with_suffix(".onnx.json").read_text(encoding="utf-8"))

    # the map is the registered voice's own symbol table, plus Piper's ^ and $ after it
    voice = load_voice("myvoice@v1", store=project / "models")
    symbols = voice.synthesizer.tokenizer.symbols.symbols
    ids = {s: v[0] for s, v in cfg["phoneme_id_map"].items()}
    assert all(ids[s] == i for i, s in enumerate(symbols)), "phoneme_id_map does not match the voice's symbols"
    assert ids["^"] == len(symbols) and ids["$"] == len(symbols) + 1 and cfg["num_symbols"] == len(symbols) + 2
    # fine-tuned from the multi-speaker base: the new speaker is in the map
    assert cfg["num_speakers"] == len(voice.speakers) > 1 and set(cfg["speaker_id_map"]) == set(voice.speakers)
    assert cfg["dataset"] == "myvoice" and cfg["audio"]["sample_rate"] == voice.sample_rate

    sess = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "input_lengths", "scales", "sid"]
    synth = voice.synthesizer
    phones, _ = synth.tokenizer("Hello there, how are you today?")
    seq = [ids["^"]] + [x for p in phones for x in (0, p)] + [0, ids["$"]]

    def piper_audio(sid: int) -> np.ndarray:
        (audio,) = sess.run(None, {"input": np.array([seq], dtype=np.int64), "input_lengths": np.array([len(seq)]),
                                   "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32),
                                   "sid": np.array([sid], dtype=np.int64)})
        assert audio.shape[:2] == (1, 1) and np.isfinite(audio).all()
        return audio[0, 0]

    # Piper (and the Home Assistant add-on) speak sid 0 by default: that is the fine-tuned speaker
    own, first_base = voice.speakers[-1], voice.speakers[0]
    assert cfg["speaker_id_map"][own] == 0
    hop = synth.audio.hop_length
    for name in (own, first_base):
        frames = synth.mel_for_ids(phones, speaker=synth.speakers.index(name)).shape[-1]
        assert len(piper_audio(cfg["speaker_id_map"][name])) == frames * hop, name
    assert len(piper_audio(0)) != len(piper_audio(cfg["speaker_id_map"][first_base]))

    # and the real Piper speaks it from the downloaded files
    piper = pytest.importorskip("piper")
    pv = piper.PiperVoice.load(str(onnx_path), config_path=str(onnx_path.with_suffix(".onnx.json")))
    chunks = list(pv.synthesize("Hello there."))
    samples = sum(len(ch.audio_int16_array) for ch in chunks)
    assert samples > 0.3 * pv.config.sample_rate


def test_keep_snippets_serve_the_voice_to_home_assistant_as_they_say(finetuned, tmp_path):
    """The Home Assistant snippet's own `voicetrain serve` line, run as given (but for the port), answers the
    wyoming client the way Home Assistant's Wyoming integration asks: describe, then synthesize by voice name."""
    import asyncio
    import os
    import shlex
    import signal
    import socket
    import subprocess
    import sys

    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info
    from wyoming.tts import Synthesize, SynthesizeVoice

    from voicetrain.inference.bundle import load_voice

    c, project = finetuned
    (v,) = c.get("/api/voices").json()["voices"]
    snips = v["snippets"]
    assert set(snips) == {"curl", "home_assistant", "piper"} and v["snippet"] == snips["curl"]
    assert c.get("/api/voices/myvoice/v1/snippet", params={"kind": "home_assistant"}).text == snips["home_assistant"]
    assert c.get("/api/voices/myvoice/v1/snippet", params={"kind": "nope"}).status_code == 422
    ha = snips["home_assistant"]
    assert "Wyoming Protocol" in ha and "Host:" in ha and "Port: 10200" in ha and "Voice: myvoice (id myvoice@v1)" in ha
    # the Piper snippet names the files the download holds and the folder the add-on reads
    piper = snips["piper"]
    assert "myvoice-v1-piper/myvoice.onnx myvoice-v1-piper/myvoice.onnx.json /share/piper/" in piper
    assert "--voice myvoice --data-dir myvoice-v1-piper" in piper

    (line,) = [ln for ln in ha.splitlines() if ln.startswith("voicetrain serve ")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [a.replace("tcp://0.0.0.0:10200", f"tcp://127.0.0.1:{port}") for a in shlex.split(line)[1:]]
    assert argv[:2] == ["serve", "myvoice@v1"] and str(project / "models") in argv and "--no-http" in argv
    proc = subprocess.Popen([sys.executable, "-m", "voicetrain.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    text = "Hello there, how are you today?"

    async def home_assistant() -> tuple[Info, int, int]:
        for _ in range(600):  # the server loads torch and the voice first
            try:
                async with AsyncTcpClient("127.0.0.1", port) as client:
                    await client.write_event(Describe().event())
                    info = Info.from_event(await client.read_event())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("the Wyoming server did not start")
        async with AsyncTcpClient("127.0.0.1", port) as client:  # as homeassistant/components/wyoming/tts.py
            await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="myvoice@v1")).event())
            samples, rate = 0, 0
            while True:
                event = await client.read_event()
                if AudioStop.is_type(event.type):
                    return info, samples, rate
                if AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    samples, rate = samples + len(chunk.audio) // chunk.width, chunk.rate

    try:
        info, samples, rate = asyncio.run(home_assistant())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    (program,) = info.tts
    # what Home Assistant shows: the program's name for the entity, each voice's description, its id when asked
    assert program.name == "voicetrain" and [tv.name for tv in program.voices] == ["myvoice@v1"]
    assert program.voices[0].description.startswith("myvoice ")
    # no speaker named (Home Assistant's assistant names none): the fine-tuned speaker, not the base's first
    voice = load_voice("myvoice@v1", store=project / "models")
    own = voice.synthesize(text, speaker=voice.speakers[-1])[0]
    assert rate == voice.sample_rate and samples == len(own)


def test_finetune_takes_only_the_settings_its_flags_carry():
    from voicetrain.studio.jobs import TrainRequest
    from voicetrain.studio.project import ProjectError

    req = TrainRequest("ft", "finetune", max_minutes=None, max_steps=5, settings=["optim.lr=1e-4", "train.threads=1"])
    assert req.train_args(Path("D"), Path("R")) == ["finetune", "D", "--out", "R", "--max-steps", "5",
                                                     "--lr", "1e-4", "--threads", "1"]
    with pytest.raises(ProjectError, match="fine-tuning takes only train.batch_size"):
        TrainRequest("ft", "finetune", settings=["train.val_every_steps=5"])


def test_default_speaker_is_the_fine_tuned_one_and_piper_sid_0():
    from types import SimpleNamespace

    from voicetrain.inference.piper_export import speaker_order
    from voicetrain.inference.synthesizer import default_speaker_id

    base = ["b0", "b1", "b2"]
    assert default_speaker_id(base, {}) == 0  # trained from scratch: the first
    assert default_speaker_id(base + ["me"], {"me": "me"}) == 3  # fine-tuned: its own speaker
    assert default_speaker_id(base + ["anna"], {"spk": "anna"}) == 3  # --speaker-name renamed it
    assert speaker_order(SimpleNamespace(speakers=base + ["me"], speaker_map={"me": "me"})) == [3, 0, 1, 2]
    assert speaker_order(SimpleNamespace(speakers=["solo"], speaker_map={})) == [0]
