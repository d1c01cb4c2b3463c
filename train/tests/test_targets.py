"""train.targets: the model targets read from the evaluations' JSON files."""
import json

from train import targets


def drawn(full=(0.90, 1.1, 0.80), **rows):
    """A drawn_eval-shaped dict: the full row and each ablation as (iou, chamfer, colour)."""
    base = {name: (0.80, 1.5, 0.70) for name in targets.DRAWN_ABLATIONS}
    base.update(rows)
    base["full"] = full
    return {"means": {k: dict(zip(("iou", "chamfer", "colour"), v)) for k, v in base.items()}}


def swd_rows(full, **rows):
    base = {name: 100.0 for name in targets.SWD_ABLATIONS}
    base.update(rows)
    base["full"] = full
    return {"0": {k: {"swd": v} for k, v in base.items()}}


def failed(checks):
    return [text for text, ok in checks if not ok]


def test_all_met():
    assert failed(targets.drawn_checks(drawn())) == []
    assert failed(targets.swd_checks("heldout", swd_rows(80.0))) == []


def test_each_hand_drawn_target_and_ablation_can_fail():
    assert failed(targets.drawn_checks(drawn(full=(0.84, 1.1, 0.80)))) == ["hand-drawn iou 0.840 >= 0.85"]
    assert "hand-drawn chamfer 2.100 <= 2.0" in failed(targets.drawn_checks(drawn(full=(0.90, 2.1, 0.80))))
    assert failed(targets.drawn_checks(drawn(full=(0.90, 1.1, 0.74)))) == ["hand-drawn colour 0.740 >= 0.75"]
    # An ablation ahead on one measure (chamfer lower is better), or level with the full row.
    assert failed(targets.drawn_checks(drawn(no_mask=(0.80, 1.0, 0.70)))) == [
        "hand-drawn chamfer: full 1.1000 against no_mask 1.0000"]
    assert len(failed(targets.drawn_checks(drawn(no_interleave=(0.80, 1.5, 0.80))))) == 1


def test_swd_full_must_be_below_every_ablation_mean_over_seeds():
    assert failed(targets.swd_checks("v", swd_rows(80.0, no_mask=79.0))) == ["v SWD: full 80.0 against no_mask 79.0"]
    two = {"0": swd_rows(80.0, no_refinement=81.0)["0"], "1": swd_rows(84.0, no_refinement=82.0)["0"]}
    # Means over the seeds: full 82.0, no refinement 81.5.
    assert failed(targets.swd_checks("v", two)) == ["v SWD: full 82.0 against no_refinement 81.5"]


def test_a_missing_row_is_a_miss():
    rows = swd_rows(80.0)
    del rows["0"]["warp_only"]
    assert failed(targets.swd_checks("v", rows)) == ["v: no row warp_only"]


def test_main_exit_status(tmp_path, capsys):
    d, s = tmp_path / "d.json", tmp_path / "s.json"
    d.write_text(json.dumps(drawn()))
    s.write_text(json.dumps(swd_rows(80.0)))
    assert targets.main(["--drawn", str(d), "--swd", f"heldout={s}"]) == 0
    s.write_text(json.dumps(swd_rows(120.0)))
    assert targets.main(["--drawn", str(d), "--swd", f"heldout={s}"]) == 1
    assert "MISSED" in capsys.readouterr().out
