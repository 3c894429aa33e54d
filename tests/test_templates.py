"""The three HTML pages (prepare's report.html, eval's report.html, compare.html) from their jinja2 templates:
a hostile transcript or speaker name is shown as text, never as markup, and the players and figures are there."""

from __future__ import annotations

import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest

from voicetrain.templates import num

EVIL = "<script>alert(1)</script>\"'&"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class _Page(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, path: Path):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text = ""
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data

    def srcs(self, tag: str) -> list[str]:
        return [a["src"] for t, a in self.tags if t == tag]


def _check_escaped(path: Path) -> _Page:
    raw = path.read_text(encoding="utf-8")
    assert "<script" not in raw and ESCAPED in raw
    page = _Page(path)
    assert "script" not in {t for t, _ in page.tags}
    assert EVIL in page.text  # shown, as text
    return page


def _stats(**means):
    return {"means": means, "counts": {k: 1 for k in means}, "n": 1}


def _utt(uid, set_, audio):
    return {"id": uid, "set": set_, "speaker": f"spk {EVIL}", "text": f"said {EVIL}", "audio": audio,
            "hypothesis": f"heard {EVIL}", "hypothesis_pocketsphinx": f"ps {EVIL}", "asr": "whisper", "cer": 0.25,
            "speaker_similarity": 0.8, "speaker_mismatch": True, "nearest_speaker": f"other {EVIL}"}


def test_eval_report_escapes_and_plays(tmp_path):
    from voicetrain.evaluation.report import write_report

    ck = {"name": f"step=2{EVIL}.ckpt", "step": 2, "val": _stats(cer=0.25), "texts": _stats(cer=0.5),
          "all": {**_stats(speaker_similarity=0.8), "speaker_mismatch_rate": 1.0, "rtf": 0.01},
          "utterances": [_utt("v1", "val", f"synth/{EVIL}.wav"), _utt("t1", "texts", "synth/t1.wav")]}
    result = {"run": f"/runs/{EVIL}", "dataset": "/ds", "created": "today", "timings": {"wall_seconds": 3.0},
              "asr": {"names": ["whisper", "pocketsphinx"]}, "speakers": {"centroids": [1, 2]},
              "real": {**_stats(cer=0.1), "speaker_mismatch_rate": 0.0, "utterances": [_utt("v1", "val", "real/v1.wav")]},
              "checkpoints": [ck], "plots": {"metrics": "plots/metrics.png"},
              "selection": {"selected": ck["name"], "step": 2, "written": "sel.txt", "rule": f"rule {EVIL}",
                            "verdicts": [{"name": ck["name"], "step": 2, "quality": 0.5, "delta": None,
                                          "verdict": "selected"}]},
              "overfitting": None, "qc": {"error": f"qc.json: {EVIL}"}}
    page = _check_escaped(write_report(tmp_path, result))
    assert page.srcs("audio") == ["real/v1.wav", f"synth/{EVIL}.wav", "synth/t1.wav"]  # the attribute survives whole
    assert page.srcs("img") == ["plots/metrics.png"]
    assert "CER 25.0% · cos 0.800" in page.text and "✔ selected" in page.text


def test_compare_page_escapes_and_plays(tmp_path):
    from voicetrain.evaluation.compare import write_html

    name = f"run {EVIL}"
    row = {"checkpoint": f"step=4{EVIL}.ckpt", "step": 4, "minutes": 0.5, "distance": -30.0, "val_loss": 1.25,
           "cer": 0.5, "speaker_similarity": None}
    audio = {"val|v1": {"a": "runs/a/v1.wav", name: f"runs/b/{EVIL}.wav"}}
    result = {"created": "today", "timings": {}, "asr": {"names": ["whisper"]}, "plots": {"val_loss": "plots/v.png"},
              "runs": [{"name": n, "run": f"/r/{n}", "real": {"cer": 0.1}, "report": f"runs/{n}/report.html"}
                       for n in ("a", name)],
              "sentences": [{"key": "val|v1", "set": "val", "id": "v1", "text": f"said {EVIL}",
                             "real_audio": "runs/a/real.wav"}],
              "matched_steps": {"definition": "d", "points": []},
              "matched_time": {"definition": f"by time {EVIL}", "points": [
                  {"target_minutes": 0.5, "runs": {"a": row, name: row}, "audio": audio}]}}
    page = _check_escaped(write_html(tmp_path, result))
    assert page.srcs("audio") == ["runs/a/real.wav", "runs/a/v1.wav", f"runs/b/{EVIL}.wav"]
    assert page.srcs("img") == ["plots/v.png"]
    assert [a["href"] for t, a in page.tags if t == "a"] == ["runs/a/report.html", f"runs/{name}/report.html"]
    assert "-30 s" in page.text and "50.0%" in page.text


def test_dataset_report_escapes_and_draws(tmp_path):
    from voicetrain.data.formats import Corpus, SourceItem
    from voicetrain.data.manifest import Utterance
    from voicetrain.data.qc import Issue, Reason
    from voicetrain.data.report import write_report

    items = [SourceItem(f"u{i}", f"spk {EVIL}", tmp_path / f"{i}.wav", f"said {EVIL}") for i in range(3)]
    corpus = Corpus(tmp_path, "pairs", items, warnings=[f"orphan {EVIL}"])
    issues = {"u0": [], "u1": [Issue(Reason.CLIPPING, f"clips {EVIL}")], "u2": [Issue(Reason.TOO_SHORT, f"short {EVIL}")]}
    utts = {u: Utterance(u, f"spk {EVIL}", f"wavs/{u}.wav", "t", "t", "h ə l oʊ", 2.0) for u in ("u0", "u1")}
    write_report(tmp_path, corpus, issues, utts, {"u0": -20.0, "u1": float("nan")})
    page = _check_escaped(tmp_path / "report.html")
    assert page.srcs("img") == ["plots/durations.png", "plots/speaking_rate.png", "plots/loudness_per_speaker.png"]
    assert all((tmp_path / s).is_file() for s in page.srcs("img"))
    assert f"short {EVIL}" in page.text and f"clips {EVIL}" in page.text and "too_short" in page.text


@pytest.mark.parametrize("value, spec, shown", [
    (None, "pct", "–"), (float("nan"), ".2f", "–"), (float("inf"), ".3f", "–"), (0.1234, "pct", "12.3%"),
    (3.14159, ".2f", "3.14"), (-30.4, "+.0f", "-30"), (8, ".0f", "8"), (0.01234, ".3f", "0.012"),
])
def test_numbers_print_alike_on_every_page(value, spec, shown):
    assert num(value, spec) == shown


def test_wheel_carries_the_templates():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["voicetrain"]
    files = [p.relative_to(root / "src" / "voicetrain").as_posix()
             for p in (root / "src" / "voicetrain" / "templates").iterdir() if p.suffix != ".py" and p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
