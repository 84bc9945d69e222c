"""benchmarks/bench_kd_grid.py without training: the students' jobs (width, selection rule, run names), the report's
tables and paired differences from a hand-written rows.jsonl; and every bench parser's refusals."""
import json
import os

import pytest

from tests.benches import load_bench


def _load_grid():
    return load_bench("bench_kd_grid")


def test_student_jobs_carry_width_and_selection_rule(tmp_path):
    grid = _load_grid()
    args = grid.parse_args(["--out-dir", str(tmp_path), "--student-hidden", "16", "--valid-smoothing", "3"])
    teacher = {"name": "SASRec-4x256-xfit2", "artifact": "/x/teacher_artifacts-xfit2.safetensors"}
    job = grid.student_job(args, "lastfm", "GRU4Rec", "dllm2rec", 2021, teacher)
    assert job["model"] == "KDGRU4Rec" and job["hidden"] == 16
    assert job["config"]["embedding_size"] == 16 and job["config"]["hidden_size"] == 32  # the GRU twice as wide
    assert job["config"]["valid_smoothing"] == 3 and job["config"]["teacher"] == teacher["artifact"]
    assert job["run_dir"] == os.path.join(str(tmp_path), "lastfm", "SASRec-4x256-xfit2", "GRU4Rec16-dllm2rec-seed2021-vs3")

    plain = grid.student_job(grid.parse_args(["--out-dir", str(tmp_path)]), "ml-100k", "SASRec", "none", 2020)
    assert plain["model"] == "KDSASRec" and plain["config"]["hidden_size"] == 32  # the defaults: hidden 32, rule 1
    assert "valid_smoothing" not in plain["config"] and plain["config"]["teacher"] is None  # no teacher read
    assert plain["run_dir"] == os.path.join(str(tmp_path), "ml-100k", "no-teacher", "SASRec32-none-seed2020")


def _row(student, hidden, method, teacher, seed, ndcg, **extra):
    return {"dataset": "lastfm", "users": "[0,inf)", "student": student, "kd_method": method, "teacher": teacher,
            "hidden_size": hidden, "seed": seed, "ndcg@10": ndcg, "hit@10": 2 * ndcg, "ndcg@20": 1.25 * ndcg,
            "hit@20": 3 * ndcg, "best_valid_ndcg@10": ndcg, "train_time_s": 1.0, **extra}


def test_report_keeps_widths_and_selection_rules_apart(tmp_path):
    grid = _load_grid()
    rows = [_row("SASRec", 16, "none", "none", 2020, 0.0300), _row("SASRec", 16, "none", "none", 2021, 0.0400),
            _row("SASRec", 16, "dllm2rec", "T", 2020, 0.0330), _row("SASRec", 16, "dllm2rec", "T", 2021, 0.0420),
            _row("SASRec", 32, "none", "none", 2020, 0.0500),  # another width: its own table and plain student
            _row("SASRec", 32, "dllm2rec", "T", 2020, 0.0450),
            _row("SASRec", 16, "none", "none", 2020, 0.0100, valid_smoothing=5),  # another selection rule
            _row("SASRec", 16, "dllm2rec", "T", 2020, 0.0200, valid_smoothing=5)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    table = grid.report(str(tmp_path))
    assert "lastfm, SASRec-16 students (test" in table and "lastfm, SASRec-32 students (test" in table
    assert "lastfm, SASRec-16 students, valid_smoothing 5 (test" in table
    # hidden 16, rule 1: +0.0030 and +0.0020 over 0.0300 / 0.0400, mean +0.0025 = +7.1 % of their mean 0.0350
    assert "| dllm2rec | T | 2 | 0.0375 ± 0.0064 | 0.0375 ± 0.0064 |" in table
    assert "| +0.0030, +0.0020 | +0.0025 (+7.1%) |" in table
    assert "| -0.0050 | -0.0050 (-10.0%) |" in table  # hidden 32 against its own plain student
    assert "| +0.0100 | +0.0100 (+100.0%) |" in table  # valid_smoothing 5 against the plain student selected so too

    merged = tmp_path / "kd_quality.json"
    grid.merge(str(tmp_path), str(merged))
    kept = json.loads(merged.read_text(encoding="utf-8"))
    assert len(kept) == len(rows)  # no run collapsed into another
    assert sorted(r.get("valid_smoothing", 1) for r in kept) == [1, 1, 1, 1, 1, 1, 5, 5]


@pytest.mark.parametrize("bench, argv, message", [
    (bench, ["--cross-fit", "1"], "argument --cross-fit: 1: the number of folds, at least 2")
    for bench in ("bench_kd_control", "bench_kd_grid", "bench_teacher_views")
] + [
    (bench, ["--valid-smoothing", "0"], "argument --valid-smoothing: 0: the number of evaluations averaged, at least 1")
    for bench in ("bench_kd_control", "bench_kd_grid")
])
def test_benches_refuse_impossible_fold_and_selection_counts(capsys, bench, argv, message):
    """Every bench with these options refuses them in its parser (exit 2, one line), before anything trains."""
    with pytest.raises(SystemExit) as stop:
        load_bench(bench).parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
