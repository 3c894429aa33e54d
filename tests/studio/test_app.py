"""voicetrain studio, server side: takes round-trip and survive a restart, QC and Whisper verdicts, nothing
written outside the project, oversize bodies 413, malformed takes 4xx (never 500), key and host checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from voicetrain.data.formats import read_corpus  # noqa: E402
from voicetrain.studio.app import MAX_TAKE_BYTES, create_app  # noqa: E402
from voicetrain.studio.checks import TakeChecker  # noqa: E402

PROMPTS = {
    "p1": "The sun is warm and the sky is blue today.",
    "p2": "My brother reads a book every night before bed.",
    "p3": "Please open the window when the kitchen gets hot.",
}


def espeak(text: str, out: Path, extra: tuple[str, ...] = ()) -> bytes:
    subprocess.run(["espeak-ng", "-v", "en-us", *extra, "-w", str(out), text], check=True)
    return out.read_bytes()


def wav_bytes(audio: np.ndarray, sr: int = 22050) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("voice")
    takes = {pid: espeak(text, d / f"{pid}.wav") for pid, text in PROMPTS.items()}
    takes["other"] = espeak("Seven large dogs ran across the frozen river at dawn.", d / "other.wav")
    return takes


def make_client(project: Path, whisper: bool = False, **kw) -> TestClient:
    app = create_app(project, checker=TakeChecker(whisper=whisper), check_on_start=False, **kw)
    client = TestClient(app)
    if not (project / "prompts.tsv").exists():
        r = client.post("/api/prompts", content="".join(f"{k}\t{v}\n" for k, v in PROMPTS.items()).encode(),
                        headers={"content-type": "text/plain"})
        assert r.status_code == 200, r.text
    return client


def post_take(client: TestClient, pid: str, data: bytes):
    return client.post(f"/api/takes/{pid}", content=data, headers={"content-type": "audio/wav"})


def test_take_round_trip_survives_a_restart_in_the_layout_prepare_reads(tmp_path, voice):
    project = tmp_path / "proj"
    c = make_client(project)
    r = post_take(c, "p1", voice["p1"])
    assert r.status_code == 200, r.text
    v = r.json()["verdict"]
    assert v["status"] == "good", v
    assert 2.0 < v["measures"]["speech_seconds"] < 5.0
    # the bytes as sent, and the prompt text beside them
    assert (project / "takes" / "p1.wav").read_bytes() == voice["p1"]
    assert (project / "takes" / "p1.txt").read_text().strip() == PROMPTS["p1"]
    assert c.get("/api/takes/p1/audio").content == voice["p1"]
    # a new server process (same folder) sees the take and its verdict
    c2 = make_client(project)
    takes = c2.get("/api/takes").json()["takes"]
    assert [(t["id"], t["verdict"]["status"]) for t in takes] == [("p1", "good")]
    assert {p["id"]: p["take"] for p in c2.get("/api/prompts").json()["prompts"]} == {"p1": "good", "p2": None, "p3": None}
    # `voicetrain prepare PROJECT/takes` reads it as a NAME.wav + NAME.txt corpus
    corpus = read_corpus(project / "takes")
    assert corpus.format == "pairs"
    assert [(it.id, it.text) for it in corpus.items] == [("p1", PROMPTS["p1"])]


def test_qc_verdicts_name_their_reasons(tmp_path, voice):
    c = make_client(tmp_path / "proj")
    audio, sr = sf.read(io.BytesIO(voice["p1"]), dtype="float32")
    cases = {
        "clipping": np.clip(audio * 30, -1, 1),
        "silence_only": np.zeros(sr * 2, dtype=np.float32),
        "too_short": np.concatenate([np.zeros(sr), audio[int(0.4 * sr): int(0.7 * sr)] / max(1e-3, np.abs(audio).max()) * 0.5, np.zeros(sr)]),
        "low_snr": audio + np.random.default_rng(0).normal(0, 0.08, audio.shape).astype(np.float32),
    }
    for code, samples in cases.items():
        r = post_take(c, "p2", wav_bytes(samples, sr))
        assert r.status_code == 200, r.text
        v = r.json()["verdict"]
        assert v["status"] == "bad", (code, v)
        assert code in [i["code"] for i in v["issues"]], (code, v)
        # the reason is shown as words that say what to do
        msg = next(i["message"] for i in v["issues"] if i["code"] == code)
        assert "takes/p2.wav" in msg and any(w in msg for w in ("re-record", "record", "microphone", "gain")), msg
    # silence around the speech: kept, with a warning
    padded = np.concatenate([np.zeros(int(2.5 * sr), dtype=np.float32), audio, np.zeros(int(3 * sr), dtype=np.float32)])
    v = post_take(c, "p3", wav_bytes(padded, sr)).json()["verdict"]
    assert v["status"] == "warn", v
    assert {"leading_silence", "trailing_silence"} <= {i["code"] for i in v["issues"]}
    v = post_take(c, "p3", wav_bytes(audio[: int(len(audio) * 0.6)], sr)).json()["verdict"]
    assert "cut_off" in {i["code"] for i in v["issues"]}, v


def test_enough_quotes_the_shipped_curve_at_the_minutes_recorded(tmp_path, voice):
    from voicetrain.data.enough import CURVE

    c = make_client(tmp_path / "proj")
    assert post_take(c, "p1", voice["p1"]).json()["verdict"]["status"] == "good"
    r = c.get("/api/enough").json()
    assert r["good_takes"] == 1 and 0.02 < r["minutes"] < 0.1
    # a few seconds: below the least measured amount, whose figures are quoted as an upper bound
    rows = json.loads(CURVE.read_text())
    least = min(p["audio_minutes"] for p in rows)
    at = {p["run"]: p for p in rows if p["audio_minutes"] == least}
    reach = r["reach"]
    assert reach["measured_minutes"] == least and reach["below_measured"] is True
    assert "finetune_curve.json" in reach["source"] and "flite slt" in reach["source"]
    got = {row["run"]: row for row in reach["rows"]}
    assert set(got) == {"finetune", "scratch"}
    for run, key in (("finetune", "full"), ("scratch", "scratch")):
        for field in ("audio_minutes", "train_minutes", "cer_ratio", "similarity_gap", "dnsmos_gap"):
            assert got[run][field] == at[key][field], (run, field)
    assert f"{at['full']['cer_ratio']:.2f}x" in got["finetune"]["text"]
    assert "less audio than anything measured" in r["advice"]


def test_whisper_hears_a_take_that_does_not_say_its_prompt(tmp_path, voice):
    pytest.importorskip("faster_whisper")
    c = make_client(tmp_path / "proj", whisper=True)
    good = post_take(c, "p1", voice["p1"]).json()["verdict"]
    assert good["status"] == "good", good
    assert good["measures"]["prompt_cer"] < 0.3
    bad = post_take(c, "p2", voice["other"]).json()["verdict"]
    assert bad["status"] == "bad"
    issue = next(i for i in bad["issues"] if i["code"] == "prompt_mismatch")
    assert "does not match the prompt" in issue["message"] and "dogs" in bad["measures"]["heard"].lower()


def test_uploads_outside_the_project_are_refused(tmp_path, voice):
    project = tmp_path / "proj"
    c = make_client(project)
    outside = tmp_path / "outside.wav"
    for pid in ("..%2Foutside", "../outside", "..", "%2Ftmp%2Fx", "takes%2F..%2F..%2Foutside", ".hidden"):
        r = post_take(c, pid, voice["p1"])
        # '../outside' and '..' reach the server as /api/outside and /api (the client resolves them): no route,
        # a take-sized body over that path's JSON limit -> 413; the other forms reach the take route, refused there
        resolved = pid in ("../outside", "..")
        assert r.status_code in ((404, 413) if resolved else (400, 404)), (pid, r.status_code, r.text)
        assert "detail" in r.json()
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    # a take file that is a link pointing out of the project is never written through
    target = tmp_path / "victim.wav"
    target.write_bytes(b"precious")
    (project / "takes" / "p1.wav").symlink_to(target)
    r = post_take(c, "p1", voice["p1"])
    assert r.status_code == 400 and "outside the project" in r.json()["detail"], r.text
    assert target.read_bytes() == b"precious"
    # run names and prompt ids from a user's prompt file cannot name paths either
    assert c.post("/api/runs/..%2Fx/start", json={}).status_code in (400, 404)
    r = c.post("/api/prompts", content=b"../../evil\tHello there my friend.\n", headers={"content-type": "text/plain"})
    assert r.status_code == 200
    assert [p["id"] for p in c.get("/api/prompts").json()["prompts"]] == ["evil"]


def test_oversize_bodies_get_413_before_they_are_read(tmp_path, voice):
    project = tmp_path / "proj"
    c = make_client(project)
    big = b"RIFF" + b"\0" * MAX_TAKE_BYTES
    r = post_take(c, "p1", big)
    assert r.status_code == 413, r.text
    # without a declared length (chunked), refused as soon as it passes the limit

    def chunks():
        for _ in range(MAX_TAKE_BYTES // 65536 + 2):
            yield b"\0" * 65536
    r = c.post("/api/takes/p1", content=chunks(), headers={"content-type": "audio/wav"})
    assert r.status_code == 413, r.text
    r = c.post("/api/prompts", content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413
    assert not (project / "takes" / "p1.wav").exists()


def test_malformed_takes_are_reported_as_such_never_500(tmp_path, voice):
    project = tmp_path / "proj"
    c = make_client(project)
    assert post_take(c, "p1", voice["p1"]).status_code == 200
    good = (project / "takes" / "p1.wav").read_bytes()
    for data, words in [(b"", "empty"), (b"hello, not audio at all", "not a readable audio file"),
                        (voice["p1"][:30], "not a readable audio file"),
                        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40, "not a readable audio file")]:
        r = post_take(c, "p1", data)
        assert r.status_code == 422, (data[:20], r.status_code, r.text)
        assert words in r.json()["detail"], r.text
    # a malformed upload never replaces a good take
    assert (project / "takes" / "p1.wav").read_bytes() == good
    # an unknown prompt, a bad JSON body and a bad value are 4xx too
    assert post_take(c, "nope", voice["p1"]).status_code == 404
    assert c.post("/api/runs/r1/start", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    r = c.post("/api/runs/r1/start", json={"mode": "sideways"})
    assert r.status_code == 400 and "scratch or finetune" in r.json()["detail"]
    r = c.post("/api/runs/r1/start", json={"settings": ["rm -rf /"]})
    assert r.status_code == 400 and "SECTION.KEY=VALUE" in r.json()["detail"]
    assert c.post("/api/synthesize", json={"run": "r1", "text": "hi"}).status_code == 404
    r = c.post("/api/prompts", content=b"\x00\x01\x02binary", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"]


def test_api_key_host_and_origin_checks(tmp_path):
    app = create_app(tmp_path / "keyed", api_key="s3cret", checker=TakeChecker(whisper=False), check_on_start=False)
    c = TestClient(app)
    assert c.get("/api/state").status_code == 401
    assert c.get("/api/state", headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.get("/api/state", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/api/state", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/state?key=s3cret").status_code == 200  # audio elements cannot send headers
    assert c.get("/").status_code == 200  # the page itself holds no data
    local = TestClient(create_app(tmp_path / "local", allowed_hosts={"127.0.0.1", "localhost"},
                                  checker=TakeChecker(whisper=False), check_on_start=False),
                       base_url="http://127.0.0.1:7860")
    assert local.get("/api/state").status_code == 200
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 still sends its own Host
    assert local.get("/api/state", headers={"host": "evil.example:7860"}).status_code == 421
    r = local.post("/api/prompts/arctic", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert local.post("/api/prompts/arctic", headers={"origin": "http://127.0.0.1:7860"}).status_code == 200


def test_studio_refuses_a_public_address_without_a_key(tmp_path):
    from voicetrain.studio.app import serve_studio

    with pytest.raises(ValueError, match="--api-key"):
        serve_studio(tmp_path / "p", host="0.0.0.0", port=0)
    assert not os.path.exists(tmp_path / "p")


def test_capabilities_follow_the_cli_help():
    """The studio offers fine-tuning and the Piper download only when this install's CLI accepts them."""
    from voicetrain.studio.jobs import Capabilities

    now = Capabilities.probe()  # this install: finetune starts from the shipped base, export knows piper
    ft_required = "│ *  --from   <path>  Base voice: a RUN folder or a checkpoint file. [required] │"
    ft_optional = "│    --from   <path>  Base voice (default: the shipped base model). │\n│ --dry-run │"
    ex_piper = "│ --format  <str>  onnx or piper (a voice.onnx + voice.onnx.json Piper loads) │"
    assert Capabilities.from_help(ft_required, "onnx").finetune_needs_from
    later = Capabilities.from_help(ft_optional, ex_piper)
    assert not later.finetune_needs_from and later.finetune_dry_run and later.piper_export
    assert Capabilities.from_help("", "").finetune_needs_from  # no help at all: offer nothing
    assert not now.finetune_needs_from and now.piper_export
    assert "builtin" in _help("finetune") and "piper" in _help("export")


def _help(cmd: str) -> str:
    from voicetrain.studio.jobs import _env, cli

    return subprocess.run(cli(cmd, "--help"), capture_output=True, text=True, env=_env()).stdout
