"""benchmarks/bench_teacher_views.py's tiny version end to end (issue 14, point 1): an LLMRec teacher (a tiny random
decoder) on a plain SASRec's item table, its cross-fitted lists (fold teachers reading fold SASRec tables), a student
and its plain twin, the rows in issue 14's format."""
import json
from pathlib import Path

import pytest

from tests.benches import load_bench
from tests.test_llmrec import SLICE_NAME, make_ml_slice

pytestmark = pytest.mark.slow


def test_teacher_views_with_cross_fitted_lists_end_to_end(tmp_path, capsys):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.llm import sha256_file
    from recbole_llmkd.run import read_checkpoint, resolve_checkpoint

    make_ml_slice(tmp_path / "data", n_users=12)
    properties = tmp_path / "slice.yaml"
    properties.write_text("load_col:\n  inter: [user_id, item_id, rating, timestamp]\n", encoding="utf-8")
    out, results_json = tmp_path / "out", tmp_path / "kd_quality.json"
    argv = ["--out-dir", str(out), "--plain-dir", str(tmp_path / "plain"), "--dataset", SLICE_NAME,
            "--data-path", str(tmp_path / "data"), "--slice", "[0,inf)", "--config-files", str(properties),
            "--backbone", "tiny", "--layers", "1", "--views", "id", "--seeds", "2020", "--methods", "dllm2rec-noed",
            "--epochs", "1", "--cost-batches", "1", "--cross-fit", "2", "--results-json", str(results_json)]
    assert load_bench("bench_teacher_views").main(argv) == 0
    table = capsys.readouterr().out
    assert "| id-xfit2 | SASRec-32 | dllm2rec-noed |" in table and "| titles-tokens |" in table  # one seed: no std

    # the students' lists come from the two fold teachers, each reading the fold SASRec trained without its users
    artifact = load_artifacts(out / "teacher-id" / "teacher_artifacts-xfit2.safetensors")
    cross_fit = artifact.teacher["cross_fit"]
    fold_dirs = [out / f"teacher-id-fold{fold}of2" for fold in range(2)]
    assert cross_fit["folds"] == 2 and cross_fit["item_table_leaks"] == [None, None]
    assert cross_fit["checkpoints_sha256"] == [sha256_file(resolve_checkpoint(d)) for d in fold_dirs]
    for fold, fold_dir in enumerate(fold_dirs):
        fold_config = read_checkpoint(resolve_checkpoint(fold_dir))["config"]
        assert (fold_config["cross_fit_folds"], fold_config["cross_fit_fold"]) == (2, fold)
        assert Path(fold_config["item_table"]).parent == out / f"SASRec-64-fold{fold}of2"
    assert (out / "teacher-id-xfit2" / "SASRec32-dllm2rec-noed-seed2020" / "results.json").is_file()

    report = json.loads((out / "teacher_views-xfit2.json").read_text())
    assert len(report["teachers"]["id"]["fold_teachers_ndcg@10"]) == 2
    rows = json.loads(results_json.read_text())
    assert [(row["kd_method"], row["teacher"]) for row in rows] == [
        ("teacher", "LLMRec-1L-id"), ("dllm2rec-noed", "LLMRec-1L-id-xfit2"), ("none", "none")]
    assert all(row["dataset"] == SLICE_NAME and 0.0 <= row["ndcg@10"] <= 1.0 for row in rows)
