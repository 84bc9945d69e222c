"""benchmarks/bench_kd_quality.py on the tiny profile: teacher + two method rows, CSV per run, reuse on rerun."""
import csv
import json
import math
import os
import re

import pytest

from recbole_llmkd.pipeline import Pipeline, resolve_profile
from tests.benches import load_bench

pytestmark = pytest.mark.slow


def _load_bench():
    return load_bench("bench_kd_quality")


def _tiny_teacher_only(run_dir: str) -> Pipeline:
    """The tiny profile's steps up to the artifact export only (what the benchmark reads of a pipeline run)."""
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.pipeline import EXPORT_STEP, fill_checkpoints

    pipeline = Pipeline(resolve_profile("tiny"), run_dir=run_dir)
    checkpoints = {}
    for step, model, config_dict in pipeline.plan():
        if model == EXPORT_STEP:
            export_teacher(**fill_checkpoints(config_dict, checkpoints), show_progress=False)
            return pipeline
        checkpoints[step] = pipeline.run_model(step, model, fill_checkpoints(config_dict, checkpoints))["checkpoint"]
    raise AssertionError("the tiny pipeline has no export step")


def _row_cells(fragment: str, model: str, method: str):
    for line in fragment.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] == model and cells[1] == method:
            return cells
    raise AssertionError(f"no row {model}/{method} in:\n{fragment}")


def test_kd_quality_table_and_resume(tmp_path):
    bench = _load_bench()
    pipe_dir = str(tmp_path / "pipe")
    pipeline = _tiny_teacher_only(pipe_dir)
    out_dir = str(tmp_path / "kdq")
    argv = ["--pipeline-dir", pipe_dir, "--profile", "tiny", "--seeds", "2020", "--students", "SASRec",
            "--methods", "none", "dllm2rec", "--out-dir", out_dir, "--out", str(tmp_path / "fragment.md"),
            "--variant", "dllm2rec-noneg=dllm2rec", "rd_neg_term=none", "ed_weight=0.0"]
    cwd = os.getcwd()
    first = bench.main(argv)
    assert os.getcwd() == cwd  # the temporary cwd for RecBole is left again
    assert sorted(first["runs_run"]) == ["SASRec-dllm2rec-noneg-seed2020", "SASRec-dllm2rec-seed2020",
                                         "SASRec-none-seed2020"]
    assert first["runs_reused"] == []

    fragment = first["fragment"]
    assert open(tmp_path / "fragment.md").read().strip() == fragment.strip()
    # Metric cells are plain means with one seed; the teacher row and both method rows hold finite numbers.
    teacher = _row_cells(fragment, "LLMRec (teacher)", "–")
    none = _row_cells(fragment, "KDSASRec", "none")
    dllm2rec = _row_cells(fragment, "KDSASRec", "dllm2rec")
    for cells in (teacher, none, dllm2rec):
        numbers = [float(c) for c in cells[3:8]]  # NDCG@10, NDCG@20, HR@10, HR@20, MRR@20
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in numbers), cells
        assert numbers[2] > 0, cells  # HR@10 of any trained model on ml-100k is above 0
    teacher_test = json.load(open(os.path.join(pipe_dir, "teacher", "results.json")))["test_result"]
    assert float(teacher[3]) == pytest.approx(teacher_test["ndcg@10"], abs=1e-4)
    # The none row has no teacher knowledge (no RD, no ED); dllm2rec carries both. The vs-none column is relative.
    assert none[2] == "no teacher" and "+ ED" in dllm2rec[2]
    assert none[8] == "–" and re.fullmatch(r"[+-]\d+\.\d%", dllm2rec[8])
    expected_gain = 100 * (float(dllm2rec[3]) - float(none[3])) / float(none[3])
    assert float(dllm2rec[8][:-1]) == pytest.approx(expected_gain, abs=0.2)
    assert "machine:" in fragment and "commit" in fragment and "Seeds: 2020" in fragment

    with open(first["csv"], newline="") as f:
        runs = list(csv.DictReader(f))
    assert [(r["student"], r["method"], r["seed"]) for r in runs] == [("SASRec", "none", "2020"),
                                                                      ("SASRec", "dllm2rec", "2020"),
                                                                      ("SASRec", "dllm2rec-noneg", "2020")]
    # The variant is its base row with the two keys changed, typed as on the command line, and says so.
    variant = _row_cells(fragment, "KDSASRec", "dllm2rec-noneg")
    assert variant[2].endswith("no ED; rd_neg_term=none, ed_weight=0.0") and "importance-aware RD" in variant[2]
    assert re.fullmatch(r"[+-]\d+\.\d%", variant[8])
    assert "`dllm2rec-noneg=dllm2rec rd_neg_term=none ed_weight=0.0`" in fragment
    assert json.load(open(first["json"]))["meta"]["variants"] == {
        "dllm2rec-noneg": {"base": "dllm2rec", "changes": {"rd_neg_term": "none", "ed_weight": "0.0"}}}  # as given
    variant_log = open(os.path.join(out_dir, "SASRec-dllm2rec-noneg-seed2020", "run.log")).read()
    assert re.search(r"rd_neg_term\W+=\W+none", variant_log) and "(ed_projector)" not in variant_log
    assert re.search(r"rd_neg_term\W+=\W+logsigmoid", open(os.path.join(out_dir, "SASRec-dllm2rec-seed2020",
                                                                         "run.log")).read())
    for run in runs:
        assert os.path.isfile(os.path.join(out_dir, f"SASRec-{run['method']}-seed2020", "results.json"))
        assert math.isfinite(float(run["ndcg@10"]))
    # The none model has no ED projector (module repr in run.log); the dllm2rec model has one.
    none_log = open(os.path.join(out_dir, "SASRec-none-seed2020", "run.log")).read()
    dllm2rec_log = open(os.path.join(out_dir, "SASRec-dllm2rec-seed2020", "run.log")).read()
    assert "(ed_projector)" not in none_log and "(ed_projector)" in dllm2rec_log
    assert json.load(open(first["json"]))["meta"]["runs_run"] == first["runs_run"]

    # Once the pipeline has a report.json, the profile comes from it; the second call reuses both runs.
    with open(os.path.join(pipe_dir, "report.json"), "w") as f:
        json.dump({"meta": {"profile": "tiny", "profile_file": pipeline.profile_path, "dataset": "ml-100k",
                            "overrides": {}, "commit": "test"}}, f)
    second = bench.main(argv[:2] + argv[4:])
    assert second["runs_run"] == []
    assert sorted(second["runs_reused"]) == ["SASRec-dllm2rec-noneg-seed2020", "SASRec-dllm2rec-seed2020",
                                             "SASRec-none-seed2020"]
    assert second["table"] == first["table"]


def test_the_runs_get_the_pipelines_config_files(tmp_path):
    """A pipeline run with ``--config_files`` (e.g. a dataset copy's load_col) is reproduced with them: report.json's
    ``config_files`` reach every KD run's config, above the profile (the pipeline's own precedence)."""
    bench = _load_bench()
    pipe_dir = tmp_path / "pipe"
    os.makedirs(pipe_dir / "teacher")
    (pipe_dir / "teacher" / "results.json").write_text(json.dumps({"test_result": {"ndcg@10": 0.1}}))
    (pipe_dir / "teacher" / "teacher_artifacts.safetensors").write_bytes(b"")
    extra = tmp_path / "extra.yaml"
    extra.write_text("MAX_ITEM_LIST_LENGTH: 7\nload_col: {inter: [user_id, item_id, timestamp]}\n")
    meta = {"profile": "tiny", "dataset": "ml-100k", "overrides": {}, "commit": "test"}
    for config_files, history in (([], 10), ([str(extra)], 7)):  # 10: the tiny profile's common section
        (pipe_dir / "report.json").write_text(json.dumps({"meta": {**meta, "config_files": config_files}}))
        pipeline = bench.load_pipeline_run(str(pipe_dir))
        config = bench.run_config(pipeline, "SASRec", "dllm2rec", 2020, str(tmp_path / "run"), False)
        assert config["MAX_ITEM_LIST_LENGTH"] == history
        assert (config.get("load_col") is not None) == bool(config_files)


@pytest.mark.parametrize("spec, message", [
    (["noneg"], "begin with NAME=BASE"),
    (["no neg=dllm2rec", "rd_neg_term=none"], "begin with NAME=BASE"),
    (["rd=dllm2rec", "rd_neg_term=none"], "already a row"),
    (["noneg=dllm2rc", "rd_neg_term=none"], "BASE must be one of"),
    (["noneg=logit", "rd_neg_term=none"], "add logit to --methods"),
    (["noneg=dllm2rec"], "at least one KEY=VALUE"),
    (["noneg=dllm2rec", "rd_neg_term"], "is not KEY=VALUE"),
    (["noneg=dllm2rec", "seed=3"], "sets 'seed' per run"),
    (["noneg=dllm2rec", "kd_method=rd"], "choose the BASE row"),
    (["noneg=dllm2rec", "rd_neg_term=none", "rd_neg_term=code_shifted"], "given twice"),
])
def test_variant_specs_that_are_refused(spec, message):
    bench = _load_bench()
    with pytest.raises(bench.BenchmarkError, match=message):
        bench.parse_variants([spec], ["none", "rd", "dllm2rec"])
    with pytest.raises(bench.BenchmarkError, match="already a row"):  # the same NAME twice
        bench.parse_variants([["a=rd", "rd_weight=1"], ["a=dllm2rec", "rd_weight=2"]], ["rd", "dllm2rec"])


def test_variant_keys_and_values_are_checked_before_training(tmp_path):
    """A mistyped key or a value the model refuses fails at once, naming the variant; good values come back typed."""
    bench = _load_bench()
    pipe_dir = tmp_path / "pipe"
    os.makedirs(pipe_dir / "teacher")
    (pipe_dir / "teacher" / "results.json").write_text(json.dumps({"test_result": {"ndcg@10": 0.1}}))
    (pipe_dir / "teacher" / "teacher_artifacts.safetensors").write_bytes(b"")
    (pipe_dir / "report.json").write_text(json.dumps({"meta": {"profile": "tiny", "dataset": "ml-100k",
                                                               "overrides": {}, "commit": "test"}}))
    pipeline = bench.load_pipeline_run(str(pipe_dir))
    typed = bench.variant_changes(pipeline, ["SASRec"], {"v": ("dllm2rec", {"rd_weight": "0.5", "rd_neg_term": "none"})})
    assert typed == {("SASRec", "v"): {"rd_weight": 0.5, "rd_neg_term": "none"}}
    config = bench.run_config(pipeline, "SASRec", "dllm2rec", 2020, str(tmp_path / "r"), False, typed[("SASRec", "v")])
    assert config["rd_weight"] == 0.5 and config["kd_method"] == "dllm2rec" and config["seed"] == 2020
    with pytest.raises(bench.BenchmarkError, match=r"--variant v \(KDSASRec\).*rd_neg_trm \(did you mean --rd_neg_term"):
        bench.variant_changes(pipeline, ["SASRec"], {"v": ("dllm2rec", {"rd_neg_trm": "none"})})
    with pytest.raises(bench.BenchmarkError, match="rd_neg_term='bogus' is not supported"):
        bench.variant_changes(pipeline, ["SASRec"], {"v": ("dllm2rec", {"rd_neg_term": "bogus"})})
