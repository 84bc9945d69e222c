"""The main job: the README's command on the tiny profile (table, CSV and PNG with the expected rows, no NaN, reuse on
rerun), the up-front validation of every shipped profile, and the automatic profile choice."""
import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from recbole_llmkd.pipeline import Pipeline, PipelineError, Ref, checkpoint_placeholder, load_profile, resolve_profile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINT = os.path.join(REPO_ROOT, "run_recbole_llmkd.py")
EXPECTED_MODELS = [
    "LLMRec (teacher)", "SASRec", "KDSASRec", "GRU4Rec", "KDGRU4Rec", "BERT4Rec", "KDBERT4Rec",
    "LLMRec-2L (no KD)", "SLMRec",
]
ALL_STEPS = ["SASRec", "teacher", "export", "KDSASRec", "GRU4Rec", "KDGRU4Rec", "BERT4Rec", "KDBERT4Rec",
             "slm_twin", "SLMRec"]
SHIPPED_PROFILES = ["tiny", "cpu", "full"]


@pytest.mark.slow
def test_readme_main_command_on_tiny_profile_then_rerun_reuses_everything(tmp_path):
    # The README's main command (`make demo PROFILE=tiny`), through the real entry point in a fresh process.
    run_dir = tmp_path / "pipe"
    completed = subprocess.run(
        [sys.executable, ENTRY_POINT, "--pipeline=tiny", f"--run_dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert f"recbole_llmkd pipeline directory: {run_dir}" in completed.stderr
    assert f"report: {run_dir / 'report.md'}" in completed.stdout
    assert f"csv: {run_dir / 'report.csv'}" in completed.stdout
    assert "| KDSASRec |" in completed.stdout  # the table itself is printed too

    with open(run_dir / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["model"] for row in rows] == EXPECTED_MODELS
    for row in rows:
        for key in ("throughput_users_per_s", "params_total", "hit@20", "ndcg@20"):
            value = float(row[key])
            assert not math.isnan(value) and value > 0, (row["model"], key, row[key])
        for key in ("hit@10", "ndcg@10", "mrr@20"):  # 1 epoch of a tiny model: 0 hits in the top 10 can happen
            value = float(row[key])
            assert 0 <= value <= 1, (row["model"], key, row[key])
    kd = next(row for row in rows if row["model"] == "KDSASRec")
    assert kd["ndcg@10_gain_vs_twin_%"] != ""  # the KD students are compared with their plain twins
    assert os.path.getsize(run_dir / "quality_vs_throughput.png") > 10_000
    assert os.path.getsize(run_dir / "curves.png") > 10_000
    markdown = (run_dir / "report.md").read_text()
    assert "| KDSASRec |" in markdown and "device:" in markdown and "commit:" in markdown
    assert "- teacher lists (training split, K=20): " in markdown  # the export's diagnostics reach the report
    assert "of the listed items are in the plain SASRec's own top-20 already" in markdown
    assert "## Does distillation help?" in markdown and "- KDSASRec vs SASRec: NDCG@10 " in markdown
    assert "- SLMRec vs LLMRec-" in markdown  # SLMRec against its no-KD twin too
    meta = json.loads((run_dir / "report.json").read_text())["meta"]
    assert meta["steps_run"] == ALL_STEPS and meta["steps_reused"] == []

    # item_table: SASRec -> the plain SASRec ran first and the teacher (and its twin, SLMRec) read its checkpoint.
    sasrec_checkpoint = json.loads((run_dir / "SASRec" / "results.json").read_text())["checkpoint"]
    for step in ("teacher", "slm_twin", "SLMRec"):
        assert f"item_table = {sasrec_checkpoint}" in (run_dir / step / "run.log").read_text(), step

    # A rerun reuses every finished step and rebuilds the same table.
    again = Pipeline(resolve_profile("tiny"), run_dir=str(run_dir))
    report_again = again.run()
    assert again.steps_run == []
    assert again.steps_reused == ALL_STEPS
    assert [entry["ndcg@10"] for entry in report_again["table"]] == [float(row["ndcg@10"]) for row in rows]


# ----- the plan and its validation (cheap: Configs only, nothing trains) -----------------------------------------
@pytest.mark.parametrize("name", SHIPPED_PROFILES)
def test_shipped_profile_validates(name, tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pipeline = Pipeline(resolve_profile(name), run_dir=str(tmp_path / name))
    steps = pipeline.validate()
    assert [step for step, _, _ in steps] == ALL_STEPS  # every shipped teacher reads the plain SASRec's table
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # validate() leaves no trace of RecBole's device set-up
    configs = {step: config for step, _, config in steps}
    assert configs["teacher"]["item_table"] == checkpoint_placeholder("SASRec")
    assert configs["KDSASRec"]["teacher"] == os.path.join(pipeline.run_dir, "teacher", "teacher_artifacts.safetensors")
    assert configs["SLMRec"]["teacher"] == os.path.join(pipeline.run_dir, "teacher")
    assert configs["slm_twin"]["llm_n_layers"] == configs["SLMRec"]["llm_n_layers"]
    assert all(config["run_dir"] == os.path.join(pipeline.run_dir, step)
               for step, model, config in steps if model != "export")
    # One history length for every model step (the report compares like with like).
    assert len({config["MAX_ITEM_LIST_LENGTH"] for _, model, config in steps if model != "export"}) == 1


def test_steps_declare_what_they_read_write_and_report(tmp_path):
    pipeline = Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path))
    steps = {step.name: step for step in pipeline.plan()}
    sasrec, teacher_dir = Ref("SASRec", "checkpoint"), Ref("teacher", "run_dir")
    assert steps["SASRec"].inputs == {}
    assert steps["teacher"].inputs == steps["slm_twin"].inputs == {"item_table": sasrec}
    assert steps["export"].inputs == {"checkpoint_or_run_dir": teacher_dir, "compare_with": sasrec}
    assert all(steps[f"KD{name}"].inputs == {"teacher": Ref("export", "artifact")}
               for name in ("SASRec", "GRU4Rec", "BERT4Rec"))
    assert steps["SLMRec"].inputs == {"item_table": sasrec, "teacher": teacher_dir}
    artifact = os.path.join(pipeline.run_dir, "teacher", "teacher_artifacts.safetensors")
    assert steps["export"].outputs == {"artifact": artifact} == {"artifact": steps["export"].config["output"]}
    assert steps["SASRec"].outputs == {"run_dir": os.path.join(pipeline.run_dir, "SASRec"),
                                       "results": os.path.join(pipeline.run_dir, "SASRec", "results.json"),
                                       "checkpoint": checkpoint_placeholder("SASRec")}
    rows = sorted((step.row for step in steps.values() if step.row), key=lambda row: row.position)
    assert [row.name for row in rows] == EXPECTED_MODELS and steps["export"].row is None
    assert [(row.role, row.plain_twin) for row in rows[:3] + rows[-2:]] == [
        ("teacher", None), ("student", None), ("kd-student", "SASRec"), ("slm-twin", None), ("slm-student", "slm_twin")]


def test_validate_rejects_an_input_that_no_earlier_step_writes(tmp_path, monkeypatch):
    pipeline = Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path))
    steps = pipeline.plan()
    monkeypatch.setattr(pipeline, "plan", lambda: [steps[1], steps[0], *steps[2:]])  # the teacher before SASRec
    with pytest.raises(PipelineError, match=r"step 'teacher': item_table reads the checkpoint of step 'SASRec', "
                                            r"which no earlier step writes \(earlier steps: none\)"):
        pipeline.validate()


def test_full_profile_is_the_gpu_setting(tmp_path):
    steps = {step: config for step, _, config in Pipeline(resolve_profile("full"), run_dir=str(tmp_path)).plan()}
    teacher = steps["teacher"]
    assert teacher["gpu_id"] == "0" and teacher["llm_bf16"] is True and teacher["llm_n_layers"] is None
    assert teacher["llm_train_examples"] == "all_prefixes" and teacher["epochs"] == 3
    assert "slm_eval_sampled" not in teacher  # full ml-100k has users with < 999 unseen items (see full.yaml)
    assert (steps["SLMRec"]["llm_n_layers"], steps["SLMRec"]["slm_blocks"]) == (8, 2)
    assert "user_inter_num_interval" not in steps["SASRec"]  # the whole ml-100k


def _write_profile(tmp_path, **changes) -> str:
    """The tiny profile with some sections replaced."""
    import yaml

    with open(resolve_profile("tiny")) as f:
        profile = yaml.safe_load(f)
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(profile.get(section), dict) and section != "students":
            profile[section] = {**profile[section], **value}
        else:
            profile[section] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("changes, message", [
    ({"slmrec": {"llm_n_layers": 3, "slm_blocks": 2}}, r"step 'SLMRec': slm_blocks=2 must divide .* N=3"),
    ({"slmrec": {"llm_n_layers": 2, "slm_blocks": 2}, "teacher": {"llm_n_layers": 3}},
     r"step 'SLMRec': slm_blocks=2 .* M=3"),
    ({"students": {"SASRec": {}, "NoSuchRec": {}}}, r"students: unknown student model 'NoSuchRec'"),
    ({"students": {"SASRec": {}, "Caser": {}}}, r"students: 'Caser' has no distilled twin KDCaser"),
    ({"kd": {"rd_topkk": 5}}, r"step 'KDSASRec' \(KDSASRec\): config key\(s\) \['rd_topkk'\]"),
    ({"students": {"SASRec": {"n_layer": 1}}}, r"step 'SASRec' \(SASRec\): config key\(s\) \['n_layer'\]"),
    ({"teacher": {"item_table": "GRU4Rek"}}, r"step 'teacher': item_table='GRU4Rek' is neither"),
    ({"teacher": {"MAX_ITEM_LIST_LENGTH": 20}}, r"MAX_ITEM_LIST_LENGTH=10 differs from the teacher's 20"),
    ({"export": {"topk": 20, "key_histroy": 5}}, r"step 'export': unknown export option\(s\) \['key_histroy'\]"),
    ({"slmrec": {"llm_n_layers": 1, "slm_blocks": 1}},  # the models' own check_options run in validate() too
     r"step 'SLMRec' \(SLMRec\): slm_blocks=1 leaves no intermediate tap for multi-supervision"),
    ({"kd": {"kd_method": "dllm2rec", "gamma_p": 0, "gamma_c": 0, "gamma_o": 0}},
     r"step 'KDSASRec' \(KDSASRec\): gamma_p, gamma_c and gamma_o are all 0"),
    # valid_smoothing: a plain student's RecBole Trainer would ignore it; a KD student must select as its twin does
    ({"common": {"valid_smoothing": 3}},
     r"step 'SASRec' \(SASRec\): valid_smoothing=3 needs one of the plugin's trainers"),
    ({"kd": {"valid_smoothing": 3}}, r"step 'KDSASRec': valid_smoothing=3 but its plain twin 'SASRec' selects with 1"),
    # a per-student kd subsection is checked as that KD student's keys
    ({"kd": {"GRU4Rec": {"rd_neg_trm": "none"}}}, r"step 'KDGRU4Rec' \(KDGRU4Rec\): config key\(s\) \['rd_neg_trm'\]"),
    ({"kd": {"NARM": {"rd_neg_term": "none"}}}, r"step 'KDSASRec' \(KDSASRec\): config key\(s\) \['NARM'\]"),
])
def test_impossible_profile_fails_before_anything_runs(tmp_path, changes, message):
    pipeline = Pipeline(_write_profile(tmp_path, **changes), run_dir=str(tmp_path / "pipe"))
    with pytest.raises(PipelineError, match=message):
        pipeline.run()
    assert pipeline.steps_run == [] and not os.path.exists(pipeline.run_dir)  # nothing trained, nothing written


def test_kd_subsection_of_a_student_reaches_only_its_kd_student(tmp_path):
    """``kd: {<student>: {...}}`` holds keys for that KD student alone, read after the shared kd keys; the plain
    students and the other KD students never see them."""
    path = _write_profile(tmp_path, kd={"kd_method": "dllm2rec", "rd_weight": 0.5,
                                        "GRU4Rec": {"rd_neg_term": "none", "rd_weight": 0.3}})
    pipeline = Pipeline(path, run_dir=str(tmp_path / "pipe"))
    configs = {step: config for step, _, config in pipeline.validate()}
    assert configs["KDGRU4Rec"]["rd_neg_term"] == "none" and configs["KDGRU4Rec"]["rd_weight"] == 0.3
    assert configs["KDSASRec"]["rd_weight"] == configs["KDBERT4Rec"]["rd_weight"] == 0.5
    assert not any("rd_neg_term" in configs[step] or "GRU4Rec" in configs[step]
                   for step in ("KDSASRec", "KDBERT4Rec", "GRU4Rec", "SASRec", "teacher"))
    with pytest.raises(PipelineError, match=r"kd.GRU4Rec holds keys for KDGRU4Rec only \(a mapping\), got 3"):
        Pipeline(_write_profile(tmp_path, kd={"GRU4Rec": 3}), run_dir=str(tmp_path / "bad"))
    # The shipped cpu profile: GRU4Rec's KD without the sampled-negative term (chosen on validation, RESULTS.md)
    cpu = {step: config for step, _, config in Pipeline(resolve_profile("cpu"), run_dir=str(tmp_path / "c")).plan()}
    assert cpu["KDGRU4Rec"]["rd_neg_term"] == "none"
    assert "rd_neg_term" not in cpu["KDSASRec"] and "rd_neg_term" not in cpu["KDBERT4Rec"]


def test_unknown_override_and_missing_dataset_are_rejected(tmp_path):
    with pytest.raises(PipelineError, match=r"--epochz \(did you mean --epochs\?\): a key of no step's model"):
        Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "a"), overrides={"epochz": "2"}).validate()
    with pytest.raises(PipelineError, match=r"dataset 'no-such-data' not found"):
        Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "b"), dataset="no-such-data").validate()


def test_cli_reports_an_impossible_pipeline_before_training(tmp_path, capsys):
    from recbole_llmkd.cli import main

    assert main(["--pipeline=tiny", f"--run_dir={tmp_path / 'pipe'}", "--epochz=2"]) == 2
    assert "error: command line: --epochz (did you mean --epochs?): a key of no step's model" in capsys.readouterr().err
    assert not (tmp_path / "pipe").exists()


def test_run_follows_the_plan_fills_the_checkpoint_and_passes_overrides(tmp_path, monkeypatch):
    # run() with the training replaced by a recorder: the cpu profile's steps, in plan order, nothing trained.
    import recbole_llmkd.jobs.export as export_module
    import recbole_llmkd.quick_start as quick_start

    calls, exports, resumed = [], [], []

    def fake_run(model, dataset, config_dict=None, cmd_args=None, check_cmd_keys=True, resume=False):
        assert not check_cmd_keys  # validate() checked the overrides against all steps at once
        calls.append((model, dataset, config_dict, cmd_args))
        resumed.append(resume)
        return {"checkpoint": f"/ckpt/{model}.pth", "run_dir": config_dict["run_dir"], "seed": 2020}

    monkeypatch.setattr(quick_start, "run_recbole_llmkd", fake_run)
    monkeypatch.setattr(export_module, "export_teacher", lambda **kwargs: exports.append(kwargs))
    monkeypatch.setattr(Pipeline, "write_report", lambda self, rows, meta: {"rows": rows, "meta": meta})
    pipeline = Pipeline(resolve_profile("cpu"), run_dir=str(tmp_path / "pipe"), overrides={"seed": "7"})
    # the teacher's step was interrupted before (a checkpoint, no results.json): it goes on from its checkpoint
    teacher_dir = pipeline.plan()[1].outputs["run_dir"]
    os.makedirs(teacher_dir)
    open(os.path.join(teacher_dir, "LLMRec-Dec-05-2026_10-00-00.pth"), "wb").close()
    report = pipeline.run()

    plan = pipeline.plan()
    model_steps = [(model, config) for _, model, config in plan if model != "export"]
    assert [call[0] for call in calls] == [model for model, _ in model_steps]
    assert all(call[1] == "ml-100k" and call[3] == {"seed": "7"} for call in calls)  # overrides: every step's cmd_args
    for (model, planned), call in zip(model_steps, calls):
        expected = {key: "/ckpt/SASRec.pth" if value == checkpoint_placeholder("SASRec") else value
                    for key, value in planned.items()}
        assert call[2] == expected, model  # plan() is what run() executes, the placeholder filled in
    assert calls[1][0] == "LLMRec" and calls[1][2]["item_table"] == "/ckpt/SASRec.pth"
    assert resumed == [False, True] + [False] * (len(calls) - 2)  # only the interrupted step resumes
    assert plan[2][2]["compare_with"] == checkpoint_placeholder("SASRec")  # the diagnostics compare with plain SASRec
    assert exports == [{**plan[2][2], "compare_with": "/ckpt/SASRec.pth"}]  # ... its checkpoint filled in
    twin = f"LLMRec-{pipeline.profile['slmrec']['llm_n_layers']}L (no KD)"  # the cpu profile's SLMRec depth
    assert [row.name for row in report["rows"]] == [twin if "(no KD)" in name else name for name in EXPECTED_MODELS]
    assert pipeline.steps_run == ALL_STEPS


def test_an_interrupted_step_says_to_run_the_pipeline_again(tmp_path, monkeypatch):
    # a step's Ctrl-C message names a single run's command; the pipeline's says to run the same command again
    import recbole_llmkd.quick_start as quick_start
    from recbole_llmkd.run import RunInterrupted

    def interrupted_run(model, dataset, **kwargs):
        raise RunInterrupted(f"run interrupted; the same command with --run_dir={kwargs['config_dict']['run_dir']} "
                             "--resume continues it")

    monkeypatch.setattr(quick_start, "run_recbole_llmkd", interrupted_run)
    pipeline = Pipeline(resolve_profile("cpu"), run_dir=str(tmp_path / "pipe"))
    with pytest.raises(RunInterrupted, match="pipeline interrupted in step .*the same command again") as stop:
        pipeline.run()
    assert "--resume" not in str(stop.value) and stop.value.exit_status == 130

    # the same for the export step (its own message names the export's command)
    import recbole_llmkd.jobs.export as export_module

    def interrupted_export(**kwargs):
        raise export_module.ExportInterrupted("export interrupted; the same command again resumes it")

    monkeypatch.setattr(quick_start, "run_recbole_llmkd",
                        lambda model, dataset, **kwargs: {"checkpoint": f"/ckpt/{model}.pth", "seed": 2020})
    monkeypatch.setattr(export_module, "export_teacher", interrupted_export)
    export_step = next(step for step in pipeline.plan() if step.kind == "export")
    with pytest.raises(RunInterrupted, match=f"pipeline interrupted in step {export_step.name}; the same command"):
        Pipeline(resolve_profile("cpu"), run_dir=str(tmp_path / "pipe2")).run()


# ----- profile choice --------------------------------------------------------------------------------------------
def test_auto_profile_is_cpu_without_cuda_and_full_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert os.path.basename(resolve_profile("auto")) == "cpu.yaml"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert os.path.basename(resolve_profile("auto")) == "full.yaml"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(PipelineError, match="unknown pipeline profile 'nope'"):
        resolve_profile("nope")


def test_profile_with_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {}\nstudents: {SASRec: {}}\nslmrec: {llm_n_layers: 1}\nstudentz: 1\n")
    with pytest.raises(PipelineError, match="studentz"):
        Pipeline(str(bad), run_dir=str(tmp_path / "p"))


# ----- converted (benchmark-file) data through the main job ------------------------------------------------------
@pytest.mark.slow
def test_tiny_profile_end_to_end_on_converted_data_through_the_cli(tmp_path, capsys):
    """The documented path (docs/PIPELINE.md) for published DLLM2Rec/LLaRA splits: convert, then --pipeline with --config_files."""
    from pathlib import Path

    from recbole_llmkd import cli
    from recbole_llmkd.jobs.convert import main as convert_main
    from tests.test_convert import write_fixture

    write_fixture(Path("published"), user_column="uid")
    assert convert_main(["--input", "published", "--output", "converted", "--name", "toy"]) == 0
    protocol = os.path.join(REPO_ROOT, "properties", "dllm2rec_protocol.yaml")
    capsys.readouterr()
    status = cli.main(["--pipeline=tiny", "--dataset=toy", "--data_path=converted", f"--config_files={protocol}",
                       "--run_dir=pipe"])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-4000:]
    # the profile's filter cannot apply to pre-split files: reported once on stderr and in the report, not applied
    notice = [line for line in captured.err.splitlines() if "not applied to any step" in line]
    assert notice == ["recbole_llmkd pipeline: dataset 'toy' is read from benchmark files (benchmark_filename): "
                      "already split and filtered, so these settings are not applied to any step: "
                      "user_inter_num_interval=[0,30]"]
    markdown = Path("pipe/report.md").read_text()
    assert "- not applied: dataset 'toy' is read from benchmark files" in markdown
    assert f"- config files (every step): {protocol}" in markdown
    meta = json.loads(Path("pipe/report.json").read_text())["meta"]
    assert meta["steps_run"] == ALL_STEPS and meta["dataset"] == "toy"
    for step in ALL_STEPS:
        if step == "export":
            continue
        log = Path("pipe", step, "run.log").read_text()
        assert "benchmark_filename = ['train', 'valid', 'test']" in log, step  # the config file reached every step
        assert "valid_metric = NDCG@20" in log, step  # ... above the profile's NDCG@10
    # the converted test split has 12 rows: every model was evaluated on exactly those
    n_test = len(Path("converted/toy/toy.test.inter").read_text().strip().splitlines()) - 1
    assert n_test == 12
    with open("pipe/report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["model"] for row in rows] == EXPECTED_MODELS
    # hit@20 is a count over 12 users (the csv rounds to 4 decimals)
    assert all(float(row["hit@20"]) * n_test == pytest.approx(round(float(row["hit@20"]) * n_test), abs=0.01) for row in rows)


def test_config_files_apply_to_every_step_above_the_profile(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("learning_rate: 0.0042\nuser_inter_num_interval: '[0,20]'\n")
    pipeline = Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "p"), config_files=[str(extra)],
                        overrides={"seed": "7"})
    for step, model, config in pipeline.plan():
        if model != "export":
            assert config["learning_rate"] == 0.0042, step  # beats the teacher section's 0.003
            assert config["user_inter_num_interval"] == "[0,20]", step  # ordinary atomic data: filters apply
    assert pipeline.report_ignored_keys() is None
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "q"), config_files=[str(tmp_path / "nope.yaml")])


def test_config_files_may_hold_other_models_keys_but_not_keys_nothing_defines(tmp_path):
    """A dataset's property file given with --config_files (e.g. for a renamed copy of Last.fm) holds BIGRec's prompt
    keys, which the cpu profile's steps do not read: accepted. A key that no property file defines is a typo."""
    shared = tmp_path / "lastfm_copy.yaml"
    shared.write_text(open(os.path.join(REPO_ROOT, "properties", "dataset", "lastfm.yaml")).read())
    assert "bigrec_instruction" in shared.read_text()
    Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "a"), config_files=[str(shared)]).validate()
    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rat: 0.01\n")
    with pytest.raises(PipelineError, match=r"\['learning_rat'\] are not defined by any property file"):
        Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "b"), config_files=[str(typo)]).validate()


def test_report_states_the_gain_or_its_absence_per_distilled_model():
    from recbole_llmkd.report import ReportRow, distillation_verdicts, render_report_markdown, report_table

    def result(ndcg):
        return {"test_result": {"ndcg@10": ndcg}, "run_dir": "/nowhere"}

    rows = [ReportRow("LLMRec (teacher)", "teacher", result(0.08)),
            ReportRow("SASRec", "student", result(0.06)),
            ReportRow("KDSASRec", "kd-student", result(0.066), plain_twin="SASRec"),
            ReportRow("GRU4Rec", "student", result(0.05)),
            ReportRow("KDGRU4Rec", "kd-student", result(0.04), plain_twin="GRU4Rec")]
    table = report_table(rows, teacher_name="LLMRec (teacher)")
    verdicts = distillation_verdicts(rows, table)
    assert verdicts == [  # 0.066 / 0.06 = +10 %, 0.066 / 0.08 = 82.5 %; 0.04 / 0.05 = -20 %, 0.04 / 0.08 = 50 %
        "- KDSASRec vs SASRec: NDCG@10 0.0660 against 0.0600, +10.0 %: **gain**; 82.5 % of the teacher's NDCG@10",
        "- KDGRU4Rec vs GRU4Rec: NDCG@10 0.0400 against 0.0500, -20.0 %: **no gain**; 50.0 % of the teacher's NDCG@10",
    ]
    meta = {"dataset": "d", "profile": "p", "device": "cpu", "date": "today", "commit": "c", "seeds": [2020],
            "profile_description": "", "steps_run": [], "steps_reused": []}
    markdown = render_report_markdown(table, meta, verdicts)
    assert "## Does distillation help?" in markdown and verdicts[1] in markdown and "seeds [2020]" in markdown
    assert "Does distillation help" not in render_report_markdown(table, meta)  # no distilled model, no section
    assert "written for" not in markdown
    for profile_dataset, noted in (("d", False), ("ml-100k", True)):  # --dataset=d replaced the profile's ml-100k
        header = render_report_markdown(table, {**meta, "profile_dataset": profile_dataset}).split("## ")[0]
        assert ("**the description is written for ml-100k**; this run's data is d" in header) == noted


def test_report_calls_a_change_within_the_profiles_seed_noise_neither_gain_nor_loss(tmp_path):
    from recbole_llmkd.report import ReportRow, distillation_verdicts, render_report_markdown, report_table

    def result(ndcg):
        return {"test_result": {"ndcg@10": ndcg}, "run_dir": "/nowhere"}

    rows = [ReportRow("LLMRec (teacher)", "teacher", result(0.08)),
            ReportRow("SASRec", "student", result(0.06)), ReportRow("GRU4Rec", "student", result(0.05)),
            ReportRow("BERT4Rec", "student", result(0.05)),
            ReportRow("KDSASRec", "kd-student", result(0.0624), plain_twin="SASRec"),  # +4 %
            ReportRow("KDGRU4Rec", "kd-student", result(0.0470), plain_twin="GRU4Rec"),  # -6 %
            ReportRow("KDBERT4Rec", "kd-student", result(0.0530), plain_twin="BERT4Rec")]  # +6 %
    table = report_table(rows, teacher_name="LLMRec (teacher)")
    verdicts = [line.split(", ", 1)[1].split(";")[0] for line in distillation_verdicts(rows, table, 5)]
    assert verdicts == ["+4.0 %: **within seed noise** (±5 %)", "-6.0 %: **no gain**", "+6.0 %: **gain**"]
    meta = {"dataset": "d", "profile": "p", "device": "cpu", "date": "today", "commit": "c", "seeds": [2020],
            "profile_description": "", "steps_run": [], "steps_reused": [], "seed_noise_pct": 5}
    assert "within ±5 % (the profile's `seed_noise_pct`" in render_report_markdown(table, meta, verdicts)
    for bad in ("-1", "'five'", "true", ".nan", ".inf"):
        profile = tmp_path / "p.yaml"
        profile.write_text(open(resolve_profile("tiny")).read() + f"seed_noise_pct: {bad}\n")
        with pytest.raises(PipelineError, match="seed_noise_pct must be a number"):
            load_profile(str(profile))
    assert load_profile(resolve_profile("cpu"))["seed_noise_pct"] == 10


def test_report_reads_tensorboard_scalars_without_logging_tensorboards_chatter(tmp_path, caplog, monkeypatch):
    """The curves plot reads each run's TensorBoard events; under RecBole's INFO root logger TensorBoard's reader
    logged "No path found after <event file>" once per run at the pipeline's end."""
    import logging

    from torch.utils.tensorboard import SummaryWriter

    from recbole_llmkd.report import read_scalars

    tensorboard_logger = logging.getLogger("tensorboard")
    monkeypatch.setattr(tensorboard_logger, "level", tensorboard_logger.level)  # restored after the test
    tensorboard_logger.setLevel(logging.NOTSET)  # as in a fresh process, whatever an earlier test read
    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard"))
    for epoch, value in enumerate([0.5, 0.25]):
        writer.add_scalar("Loss/Train", value, epoch)
    writer.close()
    with caplog.at_level(logging.INFO):
        series = read_scalars(str(tmp_path / "run"))
    assert series == {"Loss/Train": [(0, 0.5), (1, 0.25)]}
    assert not [record for record in caplog.records if record.name.startswith("tensorboard")]
