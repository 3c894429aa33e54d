"""'Is it enough?': the advice follows the measured curve it is given."""

from __future__ import annotations

import json

from voicetrain.data.enough import CurvePoint, advise, load_curve, reach

CURVE = [CurvePoint("full", 1.0, 1.0, 1.8, -0.09, -0.4), CurvePoint("full", 3.0, 3.0, 1.1, -0.03, -0.2),
         CurvePoint("scratch", 3.0, 3.0, 2.5, -0.12, -0.6)]


def test_advice_names_every_measured_point_and_warns_below_the_least():
    lines = advise(0.5, CURVE)
    assert lines[0] == "0.5 minutes of audio kept."
    assert any("1 min of audio" in ln and "1.80x" in ln for ln in lines)
    assert any("3 min of audio" in ln and "1.10x" in ln and "-0.030" in ln for ln in lines)
    assert any("from scratch" in ln and "2.50x" in ln for ln in lines)
    assert "less audio than anything measured (1 min)" in lines[-1]
    assert "voicetrain finetune" in advise(4.0, CURVE)[-1]


def test_missing_or_damaged_curve_gives_no_figures(tmp_path):
    assert load_curve(tmp_path / "absent.json") == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert load_curve(bad) == []
    assert "No measured curve" in advise(2.0, [])[-1]
    good = tmp_path / "curve.json"
    good.write_text(json.dumps([CURVE[1].__dict__]))
    assert load_curve(good) == [CURVE[1]]


def test_reach_quotes_the_measured_amount_nearest_below():
    r = reach(2.0, CURVE)  # between 1 and 3 minutes: the 1-minute figures, never the 3-minute ones
    assert (r.measured_minutes, r.finetune, r.scratch, r.below_measured) == (1.0, CURVE[0], None, False)
    r = reach(10.0, CURVE)
    assert (r.measured_minutes, r.finetune, r.scratch, r.below_measured) == (3.0, CURVE[1], CURVE[2], False)
    r = reach(0.2, CURVE)  # under everything measured: the least amount, flagged
    assert (r.measured_minutes, r.finetune, r.below_measured) == (1.0, CURVE[0], True)
    assert reach(2.0, []).measured_minutes is None
