"""benchmarks/bench_kd_control.py, the control's tiny version end to end (issue 14): a larger SASRec teacher with
cross-fitted lists, a plain and a KD student, the rows in issue 14's format, and a rerun that reuses every run."""
import json
import os

import pytest
import torch

from tests.benches import load_bench
from tests.test_llmrec import SLICE_NAME, make_ml_slice

pytestmark = pytest.mark.slow

ISSUE_14_FIELDS = {"dataset", "student", "kd_method", "teacher", "hidden_size", "seed", "ndcg@10", "hit@10",
                   "ndcg@20", "hit@20"}


def _load_bench():
    return load_bench("bench_kd_control")


def test_control_with_cross_fitted_lists_end_to_end(tmp_path, capsys):
    from recbole_llmkd.data.artifacts import load_artifacts

    make_ml_slice(tmp_path / "data", n_users=12)
    properties = tmp_path / "slice.yaml"  # the slice's columns, as a user's own dataset needs them
    properties.write_text("load_col:\n  inter: [user_id, item_id, rating, timestamp]\n", encoding="utf-8")
    bench = _load_bench()
    results_json = tmp_path / "kd_quality.json"
    argv = ["--out-dir", str(tmp_path / "out"), "--dataset", SLICE_NAME, "--data-path", str(tmp_path / "data"),
            "--slice", "[0,inf)", "--teacher-hidden", "16", "--teacher-layers", "1", "--student-hidden", "8",
            "--epochs", "1", "--seeds", "2020", "--methods", "none", "dllm2rec-noed", "--topk", "10",
            "--cross-fit", "2", "--results-json", str(results_json), "--config-files", str(properties)]
    assert bench.main(argv) == 0
    table = capsys.readouterr().out
    assert "| SASRec-8 | dllm2rec-noed |" in table and "| teacher SASRec-1x16 |" in table  # the teacher's own row

    out = tmp_path / "out"
    artifact = load_artifacts(out / "teacher-sasrec-1x16-e1p5" / "teacher_artifacts-xfit2.safetensors")
    assert artifact.teacher["cross_fit"]["folds"] == 2  # the students learnt from the cross-fitted lists
    report = json.loads((out / "control-sasrec-1x16-xfit2-student8-e1p5.json").read_text())  # one file per setting
    assert (out / "teacher-sasrec-1x16-e1p5-xfit2" / "SASRec8-dllm2rec-noed-seed2020-e1p5" / "results.json").is_file()
    by_method = {row["kd_method"]: row for row in report["rows"]}
    assert by_method["none"]["teacher"] == "none" and by_method["dllm2rec-noed"]["teacher"] == "SASRec-1x16-xfit2"
    rows = json.loads(results_json.read_text())
    assert {row["kd_method"] for row in rows} == {"teacher", "none", "dllm2rec-noed"}
    for row in rows:
        assert ISSUE_14_FIELDS <= set(row) and row["dataset"] == SLICE_NAME and 0.0 <= row["ndcg@10"] <= 1.0
        assert row["train_time_s"] > 0.0  # the run's training time, under the name bench_kd_grid's rows use too
    assert {row["hidden_size"] for row in rows if row["kd_method"] != "teacher"} == {8}
    # the budget (not the default 50 epochs / patience 5) is in every row: the teacher is trained with it too
    assert [(row.get("max_epochs"), row.get("patience")) for row in rows] == [(1, 5), (1, 5), (1, 5)]

    # a rerun reuses every run (results.json) and merges the same rows again, not twice
    runs = sorted(str(path) for path in out.rglob("results.json"))
    mtimes = {path: os.path.getmtime(path) for path in runs}
    assert bench.main(argv) == 0
    assert sorted(str(path) for path in out.rglob("results.json")) == runs
    assert all(os.path.getmtime(path) == mtime for path, mtime in mtimes.items())
    assert json.loads(results_json.read_text()) == rows

    # an export interrupted between its artifact and its diagnostics: the rerun exports it again, the same lists
    from recbole_llmkd.data.paths import diagnostics_path

    crossed_path = out / "teacher-sasrec-1x16-e1p5" / "teacher_artifacts-xfit2.safetensors"
    crossed_lists = {name: tensor.clone() for name, tensor in artifact.tensors.items()}
    diagnostics_path(crossed_path).unlink()
    assert bench.main(argv) == 0
    assert diagnostics_path(crossed_path).is_file()
    again = load_artifacts(crossed_path).tensors
    assert again.keys() == crossed_lists.keys()
    for name, tensor in crossed_lists.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0)
    # an artifact of another K is never reused under a row that names this one
    with pytest.raises(SystemExit, match="teacher_artifacts.safetensors holds top-10 lists, --topk is 20"):
        bench.main([*argv[:argv.index("--topk")], "--topk", "20", *argv[argv.index("--topk") + 2:]])

    # another student on the same teacher: only its own runs train, named and labelled by the student
    gru_argv = argv[:argv.index("--methods")] + ["--student", "GRU4Rec", "--methods", "none", "dllm2rec"] \
        + argv[argv.index("--topk"):]
    assert bench.main(gru_argv) == 0
    assert "| GRU4Rec-8 | dllm2rec |" in capsys.readouterr().out
    gru = json.loads((out / "control-sasrec-1x16-xfit2-gru4rec-student8-e1p5.json").read_text())["rows"]
    assert [(row["student"], row["kd_method"]) for row in gru] == [("GRU4Rec", "none"), ("GRU4Rec", "dllm2rec")]
    assert (out / "teacher-sasrec-1x16-e1p5-xfit2" / "GRU4Rec8-dllm2rec-seed2020-e1p5" / "results.json").is_file()
    new_runs = set(str(path) for path in out.rglob("results.json")) - set(runs)
    assert len(new_runs) == 2  # the teacher and its fold teachers were reused

    # the students' selection rule (--valid-smoothing): new student runs (-vs2) and rows, the teacher and its fold
    # teachers reused, the earlier rows kept
    before = set(str(path) for path in out.rglob("results.json"))
    n_rows = len(json.loads(results_json.read_text()))
    assert bench.main(argv + ["--valid-smoothing", "2"]) == 0
    smoothed_runs = {os.path.relpath(path, out) for path in set(str(p) for p in out.rglob("results.json")) - before}
    assert smoothed_runs == {os.path.join("no-teacher", "SASRec8-none-seed2020-e1p5-vs2", "results.json"),
                             os.path.join("teacher-sasrec-1x16-e1p5-xfit2", "SASRec8-dllm2rec-noed-seed2020-e1p5-vs2",
                                          "results.json")}
    for run in smoothed_runs:  # the students were trained with it (RecBole logs the run's config)
        assert "valid_smoothing = 2" in (out / os.path.dirname(run) / "run.log").read_text(encoding="utf-8")
    smoothed = json.loads((out / "control-sasrec-1x16-xfit2-student8-e1p5-vs2.json").read_text())["rows"]
    assert [row.get("valid_smoothing") for row in smoothed] == [2, 2]
    assert len(json.loads(results_json.read_text())) == n_rows + 2

    # an ensemble teacher (--teacher-seeds): the seed-2020 teacher and its fold teachers reused, the second member
    # and its fold runs trained; the students learn from the members' cross-fitted lists; the teacher's row gives
    # its lists' test metrics, which for one teacher are RecBole's own (the single teacher's row above)
    before = set(str(path) for path in out.rglob("results.json"))
    ensemble_argv = [*argv[:argv.index("--topk")], "--topk", "20", *argv[argv.index("--topk") + 2:]]
    with pytest.raises(SystemExit):  # its row is read off its lists: K >= 20
        bench.parse_args(argv + ["--teacher-seeds", "2020", "2021"])
    assert "an ensemble teacher's row is scored from its top-K lists, so K >= 20" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one teacher's runs and rows carry no seed: it is 2020's
        bench.parse_args(ensemble_argv + ["--teacher-seeds", "2021"])
    assert "--teacher-seeds 2021: a single teacher is trained with seed 2020" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(ensemble_argv + ["--teacher-seeds", "2020", "2020"])
    assert "an ensemble's seeds must differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # named -ens<M>: the seeds 2020 ... 2020 + M - 1
        bench.parse_args(ensemble_argv + ["--teacher-seeds", "2021", "2022"])
    assert "an ensemble of M teachers has the seeds 2020 ... 2020 + M - 1" in capsys.readouterr().err
    assert bench.main(ensemble_argv + ["--teacher-seeds", "2020", "2021"]) == 0
    assert "an ensemble, seeds 2020, 2021" in capsys.readouterr().out
    assert {os.path.relpath(path, out) for path in set(str(p) for p in out.rglob("results.json")) - before} == {
        os.path.join(name, "results.json") for name in (
            "teacher-sasrec-1x16-e1p5-seed2021", "teacher-sasrec-1x16-e1p5-seed2021-fold0of2",
            "teacher-sasrec-1x16-e1p5-seed2021-fold1of2",
            os.path.join("teacher-sasrec-1x16-e1p5-ens2-xfit2", "SASRec8-dllm2rec-noed-seed2020-e1p5"))}
    crossed = load_artifacts(out / "teacher-sasrec-1x16-e1p5" / "teacher_artifacts-xfit2-ens2.safetensors").teacher
    assert [len(group) for group in crossed["cross_fit"]["checkpoints"]] == [2, 2]
    assert crossed["ensemble"]["checkpoints"][0].startswith(str(out / "teacher-sasrec-1x16-e1p5-seed2021"))
    ensemble_rows = json.loads((out / "control-sasrec-1x16-ens2-xfit2-student8-e1p5.json").read_text())
    assert ensemble_rows["rows"][1]["teacher"] == "SASRec-1x16-ens2-xfit2"
    assert ensemble_rows["meta"]["teacher"]["teacher"] == "SASRec-1x16-ens2"
    assert ensemble_rows["meta"]["teacher"]["ensemble_seeds"] == [2020, 2021]
    single_lists = json.loads(diagnostics_path(out / "teacher-sasrec-1x16-e1p5" / "teacher_artifacts.safetensors")
                              .read_text())["list_metrics"]["test"]
    single_row = next(row for row in rows if row["kd_method"] == "teacher")
    for metric in ("ndcg@10", "hit@10"):
        assert single_lists[metric] == pytest.approx(single_row[metric], abs=1e-4)

    # a teacher that reads a longer history than the students: its own directory and name, its lists keyed on the
    # students' examples all the same (the keys use the last 10 items), the plain student shared
    long_argv = argv[:argv.index("--methods")] + ["--teacher-history", "20", "--methods", "none", "dllm2rec-noed"] \
        + argv[argv.index("--topk"):argv.index("--cross-fit")] + argv[argv.index("--results-json"):]
    before = set(str(path) for path in out.rglob("results.json"))
    assert bench.main(long_argv) == 0
    long_teacher = load_artifacts(out / "teacher-sasrec-1x16-h20-e1p5" / "teacher_artifacts.safetensors").teacher
    assert long_teacher["config"]["MAX_ITEM_LIST_LENGTH"] == 20
    long_rows = json.loads((out / "control-sasrec-1x16-h20-student8-e1p5.json").read_text())["rows"]
    assert [row["teacher"] for row in long_rows] == ["none", "SASRec-1x16-h20"]
    assert long_rows[0] == by_method["none"]  # the plain student reused
    assert {os.path.relpath(path, out) for path in set(str(p) for p in out.rglob("results.json")) - before} == {
        os.path.join("teacher-sasrec-1x16-h20-e1p5", "results.json"),
        os.path.join("teacher-sasrec-1x16-h20-e1p5", "SASRec8-dllm2rec-noed-seed2020-e1p5", "results.json")}

    # an ensemble of two recipes (--ensemble-with): the history-20 teacher with the history-10 teacher of the first
    # call, cross-fitted from both recipes' fold runs (the history-10 ones reused, the history-20 ones trained); the
    # history-10 member reads each row's last 10 items (jobs/export.py history_view)
    with_argv = [*long_argv[:long_argv.index("--topk")], "--topk", "20", *long_argv[long_argv.index("--topk") + 2:],
                 "--cross-fit", "2"]
    with pytest.raises(SystemExit, match=r"teacher-nothing has no results.json: train .* first"):
        bench.main(with_argv + ["--ensemble-with", "teacher-nothing"])
    with pytest.raises(SystemExit):
        bench.parse_args(with_argv + ["--ensemble-with", "teacher-sasrec-1x16-e1p5", "--teacher-seeds", "2020", "2021"])
    assert "--ensemble-with: not with --teacher-seeds" in capsys.readouterr().err
    before = set(str(path) for path in out.rglob("results.json"))
    assert bench.main(with_argv + ["--ensemble-with", "teacher-sasrec-1x16-e1p5"]) == 0
    assert "an ensemble with teacher-sasrec-1x16-e1p5" in capsys.readouterr().out
    assert {os.path.relpath(path, out) for path in set(str(p) for p in out.rglob("results.json")) - before} == {
        os.path.join(name, "results.json") for name in (
            "teacher-sasrec-1x16-h20-e1p5-fold0of2", "teacher-sasrec-1x16-h20-e1p5-fold1of2",
            os.path.join("teacher-sasrec-1x16-h20-e1p5-with-sasrec-1x16-e1p5-xfit2",
                         "SASRec8-dllm2rec-noed-seed2020-e1p5"))}
    mixed = load_artifacts(out / "teacher-sasrec-1x16-h20-e1p5"
                           / "teacher_artifacts-xfit2-with-sasrec-1x16-e1p5.safetensors").teacher
    assert mixed["config"]["MAX_ITEM_LIST_LENGTH"] == 20
    assert mixed["ensemble"]["checkpoints"][0].startswith(str(out / "teacher-sasrec-1x16-e1p5" / ""))
    for fold, group in enumerate(mixed["cross_fit"]["checkpoints"]):
        assert group[0].startswith(str(out / f"teacher-sasrec-1x16-h20-e1p5-fold{fold}of2"))
        assert group[1].startswith(str(out / f"teacher-sasrec-1x16-e1p5-fold{fold}of2"))
    mixed_rows = json.loads((out / "control-sasrec-1x16-h20-with-sasrec-1x16-e1p5-xfit2-student8-e1p5.json").read_text())
    assert mixed_rows["rows"][1]["teacher"] == "SASRec-1x16-h20-with-sasrec-1x16-e1p5-xfit2"
    assert mixed_rows["meta"]["teacher"]["teacher"] == "SASRec-1x16-h20-with-sasrec-1x16-e1p5"
    assert mixed_rows["meta"]["teacher"]["ensemble_with"] == ["teacher-sasrec-1x16-e1p5"]

    # students with another budget from the same teacher (--teacher-budget): the teacher and its folds are reused
    argv_budget = [*argv[:argv.index("--epochs")], "--epochs", "2", "--teacher-budget", "1", "5",
                   *argv[argv.index("--epochs") + 2:]]
    assert bench.main(argv_budget) == 0
    assert all(os.path.getmtime(path) == mtime for path, mtime in mtimes.items())
    assert (out / "teacher-sasrec-1x16-e1p5-xfit2" / "SASRec8-dllm2rec-noed-seed2020-e2p5" / "results.json").is_file()
    report = json.loads((out / "control-sasrec-1x16-xfit2-student8-e2p5-teacher-e1p5.json").read_text())
    assert (report["meta"]["teacher"]["max_epochs"], [row["max_epochs"] for row in report["rows"]]) == (1, [2, 2])
    assert report["rows"][1]["teacher"] == "SASRec-1x16-xfit2-e1p5"  # not the rows of a teacher with the students' budget
    # a teacher trained with its own budget: 2 epochs while the students have 1
    assert bench.main([*argv, "--teacher-budget", "2", "5"]) == 0
    teacher_log = (out / "teacher-sasrec-1x16-e2p5" / "run.log").read_text(encoding="utf-8")
    assert "epochs = 2" in teacher_log and "epoch 1 training" in teacher_log
    for fold in range(2):
        assert "epochs = 2" in (out / f"teacher-sasrec-1x16-e2p5-fold{fold}of2" / "run.log").read_text(encoding="utf-8")


def test_control_rejects_a_teacher_history_shorter_than_the_example_keys(capsys):
    bench = _load_bench()
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(["--teacher-history", "5"])
    assert stop.value.code == 2
    assert "--teacher-history 5" in capsys.readouterr().err
    assert bench.parse_args(["--teacher-history", "10"]).teacher_history == 10


@pytest.mark.text_encoder
def test_control_with_another_ed_source_is_another_artifact_and_row(tmp_path, capsys):
    """``--ed-source text_encoder`` on an ID teacher: the MiniLM title vectors go into an artifact of its own, and the
    students that read it are runs and rows of their own; the teacher and the plain student are shared."""
    from recbole_llmkd.data.artifacts import load_artifacts

    make_ml_slice(tmp_path / "data", n_users=12)
    properties = tmp_path / "slice.yaml"
    properties.write_text("load_col:\n  inter: [user_id, item_id, rating, timestamp]\n", encoding="utf-8")
    bench = _load_bench()
    argv = ["--out-dir", str(tmp_path / "out"), "--dataset", SLICE_NAME, "--data-path", str(tmp_path / "data"),
            "--slice", "[0,inf)", "--teacher-hidden", "16", "--teacher-layers", "1", "--student-hidden", "8",
            "--epochs", "1", "--seeds", "2020", "--methods", "none", "dllm2rec", "--topk", "10",
            "--results-json", str(tmp_path / "kd_quality.json"), "--config-files", str(properties)]
    assert bench.main(argv) == 0
    assert bench.main(argv + ["--ed-source", "text_encoder"]) == 0
    assert "| teacher SASRec-1x16 |" in capsys.readouterr().out

    out = tmp_path / "out"
    teacher_dir = out / "teacher-sasrec-1x16-e1p5"
    table_source = load_artifacts(teacher_dir / "teacher_artifacts.safetensors")
    text_source = load_artifacts(teacher_dir / "teacher_artifacts-edminilm.safetensors")
    assert table_source.item_text_emb.shape[1] == 16  # the teacher's item table, its kind's default
    assert text_source.item_text_emb.shape[1] == 384  # all-MiniLM-L6-v2
    train_lists = text_source.split_tensors("train")["topk_ids"]  # the same teacher, the same lists
    assert torch.equal(train_lists, table_source.split_tensors("train")["topk_ids"])
    rows = json.loads((out / "control-sasrec-1x16-edminilm-student8-e1p5.json").read_text())["rows"]
    assert [row["teacher"] for row in rows] == ["none", "SASRec-1x16-edminilm"]
    assert (out / "teacher-sasrec-1x16-e1p5-edminilm" / "SASRec8-dllm2rec-seed2020-e1p5" / "results.json").is_file()
    assert len(list(out.rglob("results.json"))) == 4  # teacher, plain student, and one KD student per ED source
