"""Bad input through the command line: one ``run_recbole_llmkd.py: error: <message>`` line and a non-zero exit.

Every front end goes through ``recbole_llmkd.errors.run_reporting_errors``: a plugin error or a file error is one line
on stderr (exit 2 for bad input, 1 for a run stopped by a KD term), the traceback goes to the failed run's
``run.log`` (when the error comes after the run directory is made; a missing dataset or teacher file is found
before) and, with ``--debug``, to stderr. Most cases run ``cli.main`` in-process (the same function the script
calls); one runs the real script in a subprocess.
"""
import glob
import os
import subprocess
import sys

import pytest
import torch
import yaml

from recbole_llmkd import cli
from tests.conftest import REPO_ROOT
from tests.test_kd_students import KD_TEST_CONFIG, build_split, write_synthetic_artifact

PROG = "run_recbole_llmkd.py"


@pytest.fixture(scope="module")
def kd_inputs(tmp_path_factory):
    """A config file for the tiny ml-100k slice, a teacher artifact for it, and artifacts that do not fit."""
    workdir = tmp_path_factory.mktemp("cli_errors")
    config_file = workdir / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({k: v for k, v in KD_TEST_CONFIG.items() if v is not None}))
    _, train_data, _, _ = build_split("KDSASRec", workdir)
    artifact = write_synthetic_artifact(train_data._dataset, workdir / "teacher.safetensors", K=20)
    # the same dataset, another slice: other users and rows, so the fingerprint differs
    _, other_train, _, _ = build_split("KDSASRec", workdir, user_inter_num_interval="[25,30]")
    other_slice = write_synthetic_artifact(other_train._dataset, workdir / "other_slice.safetensors")
    other_dataset = write_synthetic_artifact(train_data._dataset, workdir / "other_dataset.safetensors",
                                             dataset_name="lastfm")
    truncated = workdir / "truncated.safetensors"
    truncated.write_bytes(open(artifact, "rb").read()[:5000])
    not_safetensors = workdir / "notes.safetensors"
    not_safetensors.write_text("these are my notes, not a teacher\n")
    return {"config": str(config_file), "artifact": str(artifact), "other_slice": str(other_slice),
            "other_dataset": str(other_dataset), "truncated": str(truncated), "not_safetensors": str(not_safetensors)}


def run_cli(capsys, *argv):
    """(exit status, stderr lines) of ``run_recbole_llmkd.py argv``."""
    status = cli.main(list(argv))
    return status, capsys.readouterr().err.strip().splitlines()


def assert_one_error_line(lines, pattern):
    """Exactly one ``error:`` line, the last one, matching ``pattern``; no traceback anywhere."""
    import re

    errors = [line for line in lines if line.startswith(f"{PROG}: error: ")]
    assert len(errors) == 1, "\n".join(lines[-20:])
    assert lines[-1] == errors[0]
    assert re.search(pattern, errors[0]), errors[0]
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def kd_args(kd_inputs, *extra):
    return ["--model=KDSASRec", "--dataset=ml-100k", f"--config_files={kd_inputs['config']}",
            "--kd_method=dllm2rec", *extra]


@pytest.mark.parametrize(
    "teacher, pattern",
    [
        ("other_slice", r"ArtifactMismatch|does not (belong|match)|differ"),
        ("other_dataset", r"lastfm.*ml-100k|ml-100k.*lastfm"),
        ("truncated", r"truncated\.safetensors"),
        ("not_safetensors", r"notes\.safetensors"),
    ],
)
def test_wrong_teacher_artifact_is_one_line_exit_2(kd_inputs, capsys, teacher, pattern):
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs[teacher]}"))
    assert status == 2
    assert_one_error_line(lines, pattern)


def test_the_traceback_is_in_the_run_log_and_with_debug(kd_inputs, capsys):
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['other_dataset']}", "--run_dir=bad"))
    assert status == 2
    with open(os.path.join("bad", "run.log"), encoding="utf-8") as f:
        log = f.read()
    assert "Traceback" in log and "ArtifactMismatchError" in log
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['other_dataset']}", "--debug"))
    assert status == 2 and any("Traceback" in line for line in lines)
    assert lines[-1].startswith(f"{PROG}: error: ")


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--rd_weight=-1"], r"rd_weight.*-1"),
        (["--rd_topk=30"], r"rd_topk.*30.*20|K=20"),
        (["--ed_scale=learned", "--ed_mode=replace"], r"ed_mode: replace has no offset"),
    ],
)
def test_impossible_kd_config_is_one_line_exit_2(kd_inputs, capsys, extra, pattern):
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['artifact']}", *extra))
    assert status == 2
    assert_one_error_line(lines, pattern)


def test_slm_blocks_that_do_not_divide_the_layers(capsys):
    status, lines = run_cli(
        capsys, "--model=SLMRec", "--dataset=ml-100k", "--llm_backbone=tiny", "--kd_mode=online",
        "--slm_teacher_n_layers=4", "--llm_n_layers=2", "--slm_blocks=3", "--gpu_id=", "--epochs=1",
        "--user_inter_num_interval=[20,24]", "--MAX_ITEM_LIST_LENGTH=10",
    )
    assert status == 2
    assert_one_error_line(lines, r"slm_blocks|blocks")


def test_a_nan_kd_term_names_epoch_and_term_and_keeps_the_best_checkpoint(kd_inputs, capsys, monkeypatch):
    """Epoch 0 trains and saves its checkpoint; the RD term turns NaN in epoch 1 and stops the run (exit 1)."""
    import recbole_llmkd.distill.ranking as ranking  # Distiller calls ranking.dllm2rec_rd_loss

    real_loss = ranking.dllm2rec_rd_loss
    calls = {"n": 0}

    def rd_loss_nan_after_first_epoch(*args, **kwargs):
        calls["n"] += 1
        loss, pos, neg = real_loss(*args, **kwargs)
        if calls["n"] > 1:  # one batch per epoch (--train_batch_size above the training rows)
            loss = loss * float("nan")
        return loss, pos, neg

    monkeypatch.setattr(ranking, "dllm2rec_rd_loss", rd_loss_nan_after_first_epoch)
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['artifact']}", "--epochs=3",
                                             "--train_batch_size=100000", "--run_dir=nan_run"))
    assert status == 1
    assert_one_error_line(lines, r"training stopped in epoch 1: KD term 'rd' .*nan.*best checkpoint so far "
                                 r"\(epoch 0\) is kept: ")
    kept = lines[-1].rsplit("is kept: ", 1)[1]
    assert os.path.isfile(kept) and os.path.dirname(kept) == os.path.abspath("nan_run")
    assert torch.load(kept, weights_only=False)["epoch"] == 0


def test_a_mistyped_key_is_an_error_with_did_you_mean(kd_inputs, capsys):
    status, lines = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['artifact']}", "--rd_wieght=1"))
    assert status == 2
    assert_one_error_line(lines, r"--rd_wieght \(did you mean --rd_weight[,?]")
    assert not glob.glob("runs/*")  # rejected before a run directory is made


def test_a_mistyped_key_in_a_sweep_is_an_error(kd_inputs, capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"space": {"learning_rate": {"type": "choice", "values": [0.01, 0.001]}}}))
    status, lines = run_cli(capsys, "--model=SASRec", "--dataset=ml-100k", f"--config_files={kd_inputs['config']}",
                            f"--tune={space}", "--learnig_rate=0.1", "--hiden_size=8")
    assert status == 2
    assert_one_error_line(lines, r"--hiden_size \(did you mean --hidden_size[,?].*--learnig_rate \(did you "
                                 r"mean --learning_rate[,?]")


def test_the_real_script_prints_one_line_without_traceback(kd_inputs):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_llmkd.py"), *kd_args(kd_inputs, "--teacher=nowhere.st")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert_one_error_line(lines, r"nowhere\.st")


@pytest.mark.parametrize(
    "teacher_args, pattern",
    [(["--teacher=nowhere.st"], r"teacher artifact not found: .*nowhere\.st"),
     ([], r"kd_method='dllm2rec' needs a teacher: pass --teacher=")],
)
def test_a_missing_teacher_is_refused_before_the_run_dir_and_the_dataset(kd_inputs, capsys, tmp_path, teacher_args,
                                                                          pattern):
    """The teacher is checked with the config (``run.check_model_inputs``): the error is not preceded by RecBole's log
    of the dataset, and no run directory is left behind."""
    run_dir = tmp_path / "never_made"
    status, lines = run_cli(capsys, *kd_args(kd_inputs, *teacher_args, f"--run_dir={run_dir}"))
    assert status == 2
    assert_one_error_line(lines, pattern)
    assert not run_dir.exists()
    assert not any("The number of users" in line for line in lines), "\n".join(lines)


def test_a_missing_slmrec_teacher_checkpoint_is_refused_before_the_run_dir(capsys, tmp_path):
    run_dir = tmp_path / "never_made"
    status, lines = run_cli(
        capsys, "--model=SLMRec", "--dataset=ml-100k", "--llm_backbone=tiny", "--kd_mode=offline",
        "--teacher=no_teacher_run", "--llm_n_layers=1", "--gpu_id=", "--epochs=1", "--user_inter_num_interval=[20,24]",
        "--MAX_ITEM_LIST_LENGTH=10", f"--run_dir={run_dir}",
    )
    assert status == 2
    assert_one_error_line(lines, r"teacher checkpoint or run directory not found: no_teacher_run")
    assert not run_dir.exists()


def test_a_missing_llmrec_item_table_is_refused_before_the_run_dir(capsys, tmp_path):
    run_dir = tmp_path / "never_made"
    status, lines = run_cli(
        capsys, "--model=LLMRec", "--dataset=ml-100k", "--llm_backbone=tiny", "--item_table=no_such_sasrec.pth",
        "--llm_n_layers=1", "--gpu_id=", "--epochs=1", "--user_inter_num_interval=[20,24]",
        "--MAX_ITEM_LIST_LENGTH=10", f"--run_dir={run_dir}",
    )
    assert status == 2
    assert_one_error_line(lines, r"item_table='no_such_sasrec\.pth': no such file")
    assert not run_dir.exists()
    assert not any("The number of users" in line for line in lines), "\n".join(lines)


def test_an_early_error_is_not_written_into_the_log_of_the_previous_run(kd_inputs, capsys, tmp_path):
    """A process that runs several runs (the pipeline, a sweep worker): an error found before the run's own log
    exists (here a missing teacher) must not land in the run.log the previous run left open."""
    first = tmp_path / "first"
    status, _ = run_cli(capsys, *kd_args(kd_inputs, f"--teacher={kd_inputs['other_dataset']}", f"--run_dir={first}"))
    assert status == 2 and (first / "run.log").is_file()
    status, lines = run_cli(capsys, *kd_args(kd_inputs, "--teacher=nowhere.st", f"--run_dir={tmp_path / 'second'}"))
    assert status == 2
    assert_one_error_line(lines, r"nowhere\.st")
    assert "nowhere.st" not in (first / "run.log").read_text(encoding="utf-8")


def test_ctrl_c_is_one_line_and_exit_130_wherever_it_lands(monkeypatch, capsys, tmp_path):
    """Ctrl-C while the dataset loads (before any checkpoint) says to start again; a Ctrl-C no job turned into its
    own message (e.g. in a data job) is still one line and exit 130, never a traceback."""
    import recbole_llmkd.quick_start as quick_start
    from recbole_llmkd.errors import run_reporting_errors
    from recbole_llmkd.run import resolve_checkpoint

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quick_start, "prepare", ctrl_c)
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--epochs=1"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "run interrupted before training; no checkpoint was saved yet: start it again")
    assert run_reporting_errors(ctrl_c, [], "prog") == 130
    assert capsys.readouterr().err == "prog: interrupted (Ctrl-C)\n"
    # a run directory without a checkpoint: what to do, not "pass the checkpoint file itself"
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint .* train it first"):
        resolve_checkpoint(tmp_path / "empty-run")
