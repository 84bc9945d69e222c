"""Ray Tune sweeps (issue 6): space validation, an end-to-end sweep with crashing trials, resume after an
interruption (a Ctrl-C at a fixed point, and a saved state that calls finished trials unfinished: a resume never
retrains a finished trial), and a sweep against a separate Ray head process on loopback.

The sweeps train SASRec (tiny config) on ``tinyml``: the first 120 users of ml-100k written as atomic files,
so a trial takes seconds. One embedded Ray per module (``ray_local``); the interrupted and the cluster sweep
run the CLI in subprocesses.
"""
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ray.tune import Callback

from tests.conftest import REPO_ROOT, TINY_SEQ_CONFIG
from recbole_llmkd import cli
from recbole_llmkd.tune import SpaceError, SweepError, load_space, run_sweep
from recbole_llmkd.tune import sweep as sweep_module
from recbole_llmkd.tune.space import check_keys

RAY_BIN = os.path.join(os.path.dirname(sys.executable), "ray")
SWEEPS_DIR = os.path.join(REPO_ROOT, "properties", "sweeps")
HEADS_ERROR = "multiple of the number of attention heads"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """``tinyml`` atomic files (120 ml-100k users) and a tiny SASRec config file, shared by the module."""
    import recbole

    root = tmp_path_factory.mktemp("tune_data")
    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    inter = pd.read_csv(source, sep="\t")
    users = sorted(inter["user_id:token"].unique())[:120]
    inter = inter[inter["user_id:token"].isin(users)][["user_id:token", "item_id:token", "timestamp:float"]]
    os.makedirs(root / "data" / "tinyml")
    inter.to_csv(root / "data" / "tinyml" / "tinyml.inter", sep="\t", index=False)
    config = {
        **TINY_SEQ_CONFIG,
        "epochs": 2,
        "train_batch_size": 256,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    }
    config_file = root / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return {"data_path": str(root / "data"), "config_file": str(config_file)}


@pytest.fixture(scope="module")
def ray_local():
    """One embedded Ray for the module's in-process sweeps (run_sweep reuses it and leaves it running)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _write_space(path, space, **search):
    path.write_text(yaml.safe_dump({"space": space, "search": {"scheduler": "fifo", **search}}))
    return str(path)


def _trials(sweep_dir):
    return pd.read_csv(os.path.join(sweep_dir, "trials.csv"))


# ----- validation before Ray starts ---------------------------------------------------------------
LR = "learning_rate"
ONE_CHOICE = {"hidden_size": {"type": "choice", "values": [8]}}


@pytest.mark.parametrize(
    "content, message",
    [
        ({"space": {"rd_weight": {"type": "loguniform", "low": 0, "high": 1}}},
         "space.rd_weight: loguniform needs low > 0, got 0"),
        ({"space": {LR: {"type": "uniform", "low": 0.1, "high": 0.1}}}, "space.learning_rate: uniform needs low < "),
        ({"space": {LR: {"type": "uniform", "low": 0.1}}}, "space.learning_rate: uniform needs 'high'"),
        ({"space": {LR: {"type": "normal", "low": 0, "high": 1}}}, "space.learning_rate: unknown type 'normal'"),
        ({"space": {"hidden_size": {"type": "choice", "values": []}}}, "space.hidden_size: choice needs at least one"),
        ({"space": ONE_CHOICE, "serach": {}}, "unknown top-level key(s) serach"),
        ({"space": ONE_CHOICE, "search": {"alg": "bayes"}}, "search.alg: unknown 'bayes'"),
        ({"space": ONE_CHOICE, "search": {"alg": "optuna"}}, "pip install optuna"),
        ({"space": {LR: {"type": "uniform", "low": 0, "high": 1}}, "search": {"alg": "grid"}},
         "space.learning_rate: search.alg grid needs a finite set of values"),
        ({"space": {}}, "'space:' must map at least one config key"),
        ({"space": ONE_CHOICE, "search": {"seeds": []}}, "search.seeds: needs a non-empty list of integer seeds"),
        ({"space": ONE_CHOICE, "search": {"seeds": [1, 2.5]}}, "search.seeds: needs a non-empty list of integer"),
        ({"space": ONE_CHOICE, "search": {"seeds": [1, 2, 1]}}, "search.seeds: a seed is listed twice"),
        ({"space": ONE_CHOICE, "search": {"seeds": "1,x"}}, "search.seeds: needs integers separated by commas"),
        ({"space": {"seed": {"type": "choice", "values": [1, 2]}}, "search": {"seeds": [1, 2]}},
         "space.seed: the seed is swept and search.seeds is set"),
    ],
)
def test_bad_space_file_is_rejected_naming_the_entry(tmp_path, content, message):
    if "optuna" in message and importlib.util.find_spec("optuna") is not None:
        pytest.skip("optuna is installed")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_bad_space_is_rejected_before_ray_starts(tmp_path, tiny_data, monkeypatch, capsys):
    def ray_must_not_start(*args, **kwargs):
        raise AssertionError("Ray was started for an invalid sweep")

    monkeypatch.setattr(sweep_module, "_start_ray", ray_must_not_start)
    typo = _write_space(tmp_path / "typo.yaml", {"learning_rat": {"type": "choice", "values": [0.1]}})
    with pytest.raises(SpaceError, match=r"space\.learning_rat: no property file defines 'learning_rat' for model "
                                         r"SASRec \(did you mean learning_rate\?\)"):
        run_sweep("SASRec", "tinyml", typo, [tiny_data["config_file"]], cmd_args={"data_path": tiny_data["data_path"]})
    bad_metric = _write_space(tmp_path / "metric.yaml", {"learning_rate": {"type": "choice", "values": [0.1]}},
                              metric="recall@20")
    with pytest.raises(SpaceError, match=r"search.metric 'recall@20' is not computed by this run"):
        run_sweep("SASRec", "tinyml", bad_metric, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"]})
    # a KD student with valid_smoothing > 1 (fixed or swept): trials are compared on one evaluation's metric
    lr_space = _write_space(tmp_path / "lr.yaml", {"learning_rate": {"type": "choice", "values": [0.1]}})
    with pytest.raises(SpaceError, match=r"valid_smoothing > 1 is not supported in sweeps"):
        run_sweep("KDSASRec", "tinyml", lr_space, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"], "valid_smoothing": "3"})
    smoothing_space = _write_space(tmp_path / "vs.yaml", {"valid_smoothing": {"type": "choice", "values": [1, 3]}})
    with pytest.raises(SpaceError, match=r"valid_smoothing > 1 is not supported in sweeps"):
        run_sweep("KDSASRec", "tinyml", smoothing_space, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"]})
    # the CLI turns it into a one-line error and exit status 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"space": {"learning_rate": {"type": "loguniform", "low": -1, "high": 1}}}))
    rc = cli.main(["--model=SASRec", "--dataset=tinyml", f"--config_files={tiny_data['config_file']}",
                   f"--data_path={tiny_data['data_path']}", f"--tune={bad}", "--run_dir=sw"])
    assert rc == 2
    assert "space.learning_rate: loguniform needs low > 0, got -1" in capsys.readouterr().err
    assert not os.path.exists("sw")
    # GPUs asked of a machine with none: refused before the sweep directory is written
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpaceError, match=r"resources.gpu: 0.5 GPU\(s\) per trial asked, but this machine has no"):
        run_sweep("SASRec", "tinyml", lr_space, [tiny_data["config_file"]], gpus_per_trial=0.5,
                  cmd_args={"data_path": tiny_data["data_path"], "run_dir": "gpu"})
    assert not os.path.exists("gpu")
    # a directory with a sweep.json and no Ray state (a sweep stopped before Ray saved anything): nothing to resume,
    # and a new sweep may start there
    os.makedirs("early")
    open("early/sweep.json", "w").write("{}")
    with pytest.raises(SweepError, match=r"nothing to resume in .*early: no Ray experiment .*without --resume"):
        run_sweep(None, None, None, cmd_args={"run_dir": "early"}, resume=True)
    os.makedirs("started/trials")  # Ray made its experiment directory and stopped before saving any state
    with pytest.raises(SweepError, match=r"started.trials holds no saved Ray state .*delete it"):
        run_sweep("SASRec", "tinyml", lr_space, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"], "run_dir": "started"})
    os.makedirs("finished")
    open("finished/best.json", "w").write("{}")
    with pytest.raises(SweepError, match=r"the sweep in .*finished has finished \(best.json\): nothing to resume"):
        run_sweep(None, None, None, cmd_args={"run_dir": "finished"}, resume=True)  # test read once
    with pytest.raises(AssertionError, match="Ray was started"):  # past every check: the sweep would run
        run_sweep("SASRec", "tinyml", lr_space, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"], "run_dir": "early"})


def test_shipped_space_files_name_the_distillation_keys():
    dllm2rec = load_space(os.path.join(SWEEPS_DIR, "dllm2rec.yaml"))
    assert set(dllm2rec.params) == {"rd_weight", "ed_weight", "gamma_p", "gamma_c", "gamma_o", "rd_topk", "rd_beta"}
    slmrec = load_space(os.path.join(SWEEPS_DIR, "slmrec.yaml"))
    assert set(slmrec.params) == {"slm_lambda1", "slm_lambda2", "slm_lambda3", "slm_blocks"}
    assert dllm2rec.scheduler == "asha" and dllm2rec.param_space()["rd_weight"].lower == 0.05
    example = load_space("sasrec_example", overrides={"num_samples": 2, "cpu": 2})  # shipped spaces by name
    assert (example.num_samples, example.cpu, example.max_concurrent) == (2, 2.0, 2)  # command line wins

    from recbole_llmkd.config import Config

    config = Config("SASRec", "ml-100k", config_dict={"gpu_id": ""})
    check_keys(example, config.known_keys(), "SASRec")  # every key of the example is a SASRec key
    for model, spec in (("KDSASRec", dllm2rec), ("SLMRec", slmrec)):
        try:
            config = Config(model, "ml-100k", config_dict={"gpu_id": ""})
        except ModuleNotFoundError:
            continue  # the model is not written yet
        check_keys(spec, config.known_keys(), model)


def test_benchmark_sweeps_are_valid_kd_student_sweeps():
    """The sweeps RESULTS.md reports (benchmarks/sweeps/: spaces and the students' base configs) load, and every
    swept key is one a KD student's config defines: a misspelt key would make every trial the same run."""
    from recbole_llmkd.config import Config

    bench_sweeps = os.path.join(REPO_ROOT, "benchmarks", "sweeps")
    contents = {}
    for path in sorted(glob.glob(os.path.join(bench_sweeps, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            contents[path] = yaml.safe_load(f)
    spaces = [path for path, content in contents.items() if "space" in content]
    bases = [path for path, content in contents.items() if "space" not in content]
    assert {os.path.basename(p) for p in spaces} >= {"kd_weights_grid.yaml", "logit_weight_grid.yaml"}
    logit = load_space(os.path.join(bench_sweeps, "logit_weight_grid.yaml"))
    assert logit.params["logit_weight"].values == [0.0, 0.2, 0.4, 0.8] and logit.scheduler == "fifo"
    config = Config("KDSASRec", "ml-100k", config_dict={"gpu_id": "", "kd_method": "dllm2rec"})
    for path in spaces:
        check_keys(load_space(path), config.known_keys(), "KDSASRec")
    for path in bases:  # the base configs name only keys a KD student reads
        unknown = set(contents[path]) - set(config.known_keys())
        assert not unknown, f"{path}: {unknown}"


def test_trials_get_absolute_paths_and_the_shared_teacher_file(tmp_path, tiny_data):
    """Relative paths (data, config files, a teacher artifact file) reach the trials absolute, not copied."""
    os.makedirs("cfg")
    (tmp_path / "cfg" / "tiny.yaml").write_text(open(tiny_data["config_file"]).read())
    (tmp_path / "teacher.safetensors").write_bytes(b"not read here")
    spec = load_space({"space": {LR: {"type": "choice", "values": [0.01]}}})
    relative_data = os.path.relpath(tiny_data["data_path"], os.getcwd())
    _, setup = sweep_module.prepare_setup(  # a KD student's sweep: `teacher` is one of its keys
        "KDSASRec", "tinyml", spec, ["cfg/tiny.yaml"],
        config_dict={"checkpoint_dir": "elsewhere"},
        cmd_args={"data_path": relative_data, "teacher": "teacher.safetensors", LR: "0.5", "epochs": "3"},
    )
    assert setup.config_file_list == [str(tmp_path / "cfg" / "tiny.yaml")]
    assert setup.data_path == tiny_data["data_path"]
    assert setup.cmd_args == {"teacher": str(tmp_path / "teacher.safetensors"), "epochs": "3"}  # swept key dropped
    assert "checkpoint_dir" not in setup.config_dict  # every trial checkpoints into its own folder
    config = setup.trial_config({LR: 0.01}, str(tmp_path / "trial"), "")
    assert (config["learning_rate"], config["epochs"], config["teacher"]) == (0.01, 3, setup.cmd_args["teacher"])
    assert config["checkpoint_dir"] == str(tmp_path / "trial") and config["gpu_id"] == ""


# ----- sweeps -------------------------------------------------------------------------------------
def test_tiny_sweep_end_to_end_with_crashing_trials(tmp_path, tiny_data, ray_local):
    """4 trials (lr x n_heads grid): n_heads=3 crashes (hidden 16), the sweep goes on; lr 0.01 wins on validation."""
    space = _write_space(
        tmp_path / "space.yaml",
        {"learning_rate": {"type": "grid", "values": [1e-7, 0.01]}, "n_heads": {"type": "grid", "values": [1, 3]}},
        max_concurrent=2,
    )
    relative_data = os.path.relpath(tiny_data["data_path"], os.getcwd())  # trials run elsewhere: made absolute
    result = run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]],
                       cmd_args={"data_path": relative_data, "run_dir": "sweep"}, verbose=0)

    sweep_dir = os.path.abspath("sweep")
    assert result["sweep_dir"] == sweep_dir
    trials = _trials(sweep_dir)
    assert len(trials) == 4
    crashed = trials[trials["n_heads"] == 3]
    assert list(crashed["status"]) == ["ERROR", "ERROR"]
    assert all(HEADS_ERROR in e for e in crashed["error"])
    finished = trials[trials["n_heads"] == 1].set_index("learning_rate")
    assert list(finished["status"]) == ["TERMINATED", "TERMINATED"]
    assert list(finished["epochs_run"]) == [2, 2]
    assert finished.loc[0.01, "best_ndcg@10"] > finished.loc[1e-7, "best_ndcg@10"]

    assert result["best_params"] == {"learning_rate": 0.01, "n_heads": 1}
    assert result["best_valid_score"] == pytest.approx(finished.loc[0.01, "best_ndcg@10"])
    assert set(result["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}
    assert result["status_counts"] == {"ERROR": 2, "TERMINATED": 2}
    with open(os.path.join(sweep_dir, "best.json")) as f:
        assert json.load(f)["test_result"] == result["test_result"]
    table = open(os.path.join(sweep_dir, "trials.md")).read()
    assert table.count("ERROR") == 2 and HEADS_ERROR in table and "best_ndcg@10" in table
    assert os.path.getsize(os.path.join(sweep_dir, "metric_vs_params.png")) > 1000

    summaries = glob.glob(os.path.join(sweep_dir, "trials", "*", "trial_summary.json"))
    finished_dirs = [os.path.dirname(p) for p in summaries]
    assert len(finished_dirs) == 2
    for trial_dir in finished_dirs:
        progress = pd.read_csv(os.path.join(trial_dir, "progress.csv"))
        assert list(progress["epoch"]) == [0, 1]  # validation reported after every epoch
        assert not [c for c in progress.columns if "test" in c]  # trials never see the test split
        assert "test result" not in open(os.path.join(trial_dir, "run", "run.log")).read()
    assert os.path.isfile(result["checkpoint"]) and result["checkpoint"].startswith(sweep_dir)
    assert open(os.path.join(sweep_dir, "run.log")).read().count("test result of the best trial (read once)") == 1


class _HoldAfterFirstTrial(Callback):
    """Driver-side Ray Tune callback (added by ``_cli_held_after_first_trial``): when the first trial ends it holds
    the driver's loop until SIGINT has reached Ray's handler, so the test's Ctrl-C always lands at the same point.

    While the loop is held the driver processes nothing: no result (a trial's ``tune.report`` blocks until the
    driver takes it), no trial start or end. So at the Ctrl-C exactly one trial has finished (its function wrote
    its ``trial_summary.json`` before returning, and Ray calls ``on_trial_complete`` after that) and the others
    have not. Ray keeps the callback in ``tuner.pkl``; the resumed sweep brings it back, and it does nothing then.
    """

    def __init__(self, held_file: str):
        self.held_file = held_file

    def on_trial_complete(self, iteration, trials, trial, **info):
        if os.path.exists(self.held_file):
            return  # once (this is the resumed sweep, or a later trial)
        received = threading.Event()
        ray_handler = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):  # Ray's handler sets its "interrupted" flag, then puts the original one back
            received.set()
            ray_handler(signum, frame)

        signal.signal(signal.SIGINT, handler)  # callbacks run in the driver's main thread
        with open(self.held_file + ".tmp", "w") as f:
            f.write(trial.trial_id)
        os.replace(self.held_file + ".tmp", self.held_file)  # tells the test: send Ctrl-C now
        deadline = time.time() + 900
        while not received.is_set() and time.time() < deadline:
            time.sleep(0.05)  # signal handlers run between these sleeps
        if not received.is_set():
            signal.signal(signal.SIGINT, ray_handler)


def _cli_held_after_first_trial(held_file: str, argv) -> int:
    """``run_recbole_llmkd.py argv`` with ``_HoldAfterFirstTrial`` added to the sweep's Ray Tune callbacks."""
    from ray import tune

    class HeldTuner(tune.Tuner):
        def __init__(self, *args, run_config=None, **kwargs):
            run_config.callbacks = [*(run_config.callbacks or []), _HoldAfterFirstTrial(held_file)]
            super().__init__(*args, run_config=run_config, **kwargs)

    tune.Tuner = HeldTuner  # run_sweep imports Tuner from ray.tune when it runs
    return cli.main(argv)


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, tiny_data, ray_local):
    """A real Ctrl-C (SIGINT) to the CLI process, at a point fixed by ``_HoldAfterFirstTrial`` instead of by timing.

    Kept as a real signal to a real CLI process (exit status, message, Ray's own SIGINT handling and state save)
    rather than replaced by an in-process stand-in; only the moment is made deterministic. Before, the test sent
    SIGINT when the first trial's end was printed: which trials had finished by the time Ray saw the signal,
    and what Ray's saved state said about them, was timing luck. Now the Ctrl-C lands while the driver is held
    right after the first trial ended: that trial has written its summary, and the other cannot have
    finished (trials run one at a time, ``max_concurrent: 1``, and a held driver starts none). What Ray's saved
    state calls the first trial (TERMINATED, or still RUNNING, i.e. PENDING on restore) is Ray's business and
    nothing below depends on it: either Ray skips the trial, or the trial finds its summary and does not train
    (``test_resume_never_retrains_a_trial_the_saved_state_calls_unfinished`` forces that second case).
    """
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [0.01, 0.001]}},
                         max_concurrent=1)
    held = str(tmp_path / "held_after_first_trial")
    run_held_cli = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "from tests.test_tune import _cli_held_after_first_trial; "
                    "sys.exit(_cli_held_after_first_trial(sys.argv[1], sys.argv[2:]))")
    command = [sys.executable, "-c", run_held_cli, REPO_ROOT, held, "--model=SASRec", "--dataset=tinyml",
               f"--config_files={tiny_data['config_file']}", f"--data_path={tiny_data['data_path']}",
               f"--tune={space}", "--run_dir=sweep"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 900  # a bound for a broken run (a loaded 2-core machine included), not a timing assumption
        while not os.path.exists(held):
            assert proc.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Ray Tune saves its state and stops, the CLI exits with 130
        proc.wait(timeout=600)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "continue it with --resume --run_dir=" in output
    first_trial = open(held).read()
    summaries = glob.glob("sweep/trials/*/trial_summary.json")
    assert len(summaries) == 1 and f"_{first_trial}_" in summaries[0], (summaries, first_trial)
    done = {p: (os.path.getmtime(p), open(p).read()) for p in summaries}

    # The resume runs in this test's Ray, a new Ray session: only the sweep directory's copies are there.
    result = run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)
    trials = _trials("sweep")
    assert len(trials) == 2 and list(trials["status"]) == ["TERMINATED"] * 2
    assert sorted(trials["learning_rate"]) == [0.001, 0.01]
    assert {p: (os.path.getmtime(p), open(p).read()) for p in done} == done  # the finished trial was not rerun
    assert len(glob.glob("sweep/trials/*/trial_summary.json")) == 2
    assert list(trials["epochs_run"]) == [2, 2]
    assert result["num_trials"] == 2 and set(result["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}


def _mark_unfinished_in_saved_state(experiment_path: str, trial_folder: str) -> None:
    """Edit Ray's saved experiment state as the Ctrl-C race leaves it: this finished trial is unfinished again.

    Ray 2.x (``TuneController.save_to_dir``) writes ``experiment_state-<session>.json`` =
    ``{"trial_data": [[trial_json, run_metadata_json], ...], "runner_data": ..., "stats": ...}``, where
    ``trial_json`` is a JSON string of ``Trial.__getstate__()`` (``status``, ``relative_logdir`` = the trial's
    folder, ...). The race saves a trial whose function had returned while Ray had not yet processed its end:
    status RUNNING, which ``Trial.__setstate__`` reads back as PENDING, so ``Tuner.restore(resume_unfinished=True)``
    requeues it (same trial, same folder). Writing PENDING reaches the same code path.
    """
    states = glob.glob(os.path.join(experiment_path, "experiment_state-*.json"))
    assert states, os.listdir(experiment_path)
    marked = 0
    for path in states:
        with open(path, "r", encoding="utf-8") as f:
            state = json.load(f)
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            if trial["relative_logdir"] == trial_folder:
                assert trial["status"] == "TERMINATED"
                trial["status"] = "PENDING"
                entry[0] = json.dumps(trial, indent=2)
                marked += 1
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f)
    assert marked == 1, (trial_folder, states)


def _stat(path):
    return os.path.getmtime(path), open(path, "rb").read()


def test_resume_never_retrains_a_trial_the_saved_state_calls_unfinished(tmp_path, tiny_data, ray_local):
    """The Ctrl-C race's outcome, made on purpose: finished trials that Ray's saved state calls PENDING.

    A 3-trial sweep runs to the end; then the state file marks two finished trials PENDING again and the sweep is
    resumed. Ray restarts both (same trial, same folder); each finds its complete ``trial_summary.json``, reports
    its finished result and returns without training. The resume runs in this module's Ray session, so Ray reuses
    the trials' staging folders (``get_trial_dir()``): trial "same session" finds its summary there. For trial
    "new session" the staging folder is deleted first, as a resume in a new process sees it (a new Ray session
    starts with empty staging folders): it finds the sweep directory's copy.
    """
    space = _write_space(tmp_path / "space.yaml",
                         {"learning_rate": {"type": "grid", "values": [1e-7, 0.003, 0.01]}}, max_concurrent=2)
    first = run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]],
                      cmd_args={"data_path": tiny_data["data_path"], "run_dir": "sweep"}, verbose=0)
    experiment = os.path.abspath("sweep/trials")
    before = _trials("sweep").set_index("trial_id")
    assert list(before["status"]) == ["TERMINATED"] * 3 and list(before["epochs_run"]) == [2, 2, 2]
    folders = sorted(d for d in os.listdir(experiment) if os.path.isdir(os.path.join(experiment, d)))
    assert sorted(before["trial_dir"]) == [f"trials/{f}" for f in folders]
    folder_of = {trial_id: row["trial_dir"].split("/")[-1] for trial_id, row in before.iterrows()}
    # the best trial's staging folder goes: best.json's test metrics need its checkpoint, found in the sweep dir
    best_id = first["best_trial_id"]
    new_session = folder_of[best_id]
    same_session = folder_of[next(t for t in sorted(before.index) if t != best_id)]
    untouched = next(f for f in folders if f not in (new_session, same_session))

    def staging(folder):  # Ray's staging folder of the trial: the summary's checkpoint is in its run/
        with open(os.path.join(experiment, folder, "trial_summary.json")) as f:
            path = os.path.dirname(os.path.dirname(json.load(f)["checkpoint"]))
        assert os.path.basename(path) == folder and not path.startswith(os.path.abspath("sweep"))
        return path

    stored = {f: _stat(os.path.join(experiment, f, "trial_summary.json")) for f in folders}
    same_staging = {name: _stat(os.path.join(staging(same_session), *name.split("/")))
                    for name in ("trial_summary.json", "run/run.log")}
    new_staging = staging(new_session)
    shutil.rmtree(new_staging)
    rows_before = {f: len(pd.read_csv(os.path.join(experiment, f, "progress.csv"))) for f in folders}
    for folder in (same_session, new_session):
        _mark_unfinished_in_saved_state(experiment, folder)
    os.remove("sweep/best.json")  # as the Ctrl-C left it: stopped before the best trial was read on test
    assert {t: str(s.status) for t, s in sweep_module._saved_trials(experiment).items()} == {
        same_session: "PENDING", new_session: "PENDING", untouched: "TERMINATED"}

    result = run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)

    after = _trials("sweep").set_index("trial_id")
    assert list(after["status"]) == ["TERMINATED"] * 3
    assert sorted(d for d in os.listdir(experiment) if os.path.isdir(os.path.join(experiment, d))) == folders
    pd.testing.assert_frame_equal(after, before)  # same rows: best metric, epochs run, status, folder
    # Ray did restart both trials (one more report each; the new session's progress.csv starts afresh) ...
    rows_after = {f: len(pd.read_csv(os.path.join(experiment, f, "progress.csv"))) for f in folders}
    assert rows_after == {same_session: rows_before[same_session] + 1, new_session: 1, untouched: 2}
    last = pd.read_csv(os.path.join(experiment, new_session, "progress.csv")).iloc[-1]
    assert last["epoch"] == 1 and last["ndcg@10"] == before.loc[best_id, "best_ndcg@10"]
    # ... and neither trained: the summaries and the run log were not written again.
    assert {n: _stat(os.path.join(staging(same_session), *n.split("/"))) for n in same_staging} == same_staging
    assert _stat(os.path.join(experiment, new_session, "trial_summary.json")) == stored[new_session]
    assert os.listdir(new_staging) and not os.path.exists(os.path.join(new_staging, "trial_summary.json"))
    assert not os.path.exists(os.path.join(new_staging, "run"))
    for folder in folders:  # the sweep directory's copies: same content (Ray re-copies its staging folders)
        assert _stat(os.path.join(experiment, folder, "trial_summary.json"))[1] == stored[folder][1]

    assert result["best_trial_id"] == best_id and result["best_params"] == first["best_params"]
    assert result["best_valid_score"] == first["best_valid_score"]
    assert result["status_counts"] == {"TERMINATED": 3}
    assert result["checkpoint"].startswith(os.path.abspath("sweep")) and os.path.isfile(result["checkpoint"])
    with open("sweep/best.json") as f:
        best = json.load(f)
    assert set(best["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}
    assert best["test_result"] == pytest.approx(first["test_result"])  # same checkpoint, same test split


def test_finished_trial_summary_accepts_only_a_complete_summary_of_the_same_values(tmp_path):
    params = {"learning_rate": 0.01, "n_heads": 2}
    staging, stored = tmp_path / "staging" / "trial_1", tmp_path / "sweep" / "trials" / "trial_1"
    for folder in (staging, stored):
        os.makedirs(folder / "run")
    checkpoint = staging / "run" / "SASRec-1.pth"
    checkpoint.write_bytes(b"weights")
    summary = {"params": params, "best_valid_score": 0.25, "best_valid_result": {"hit@10": 0.5, "ndcg@10": 0.25},
               "epochs_run": 3, "last_epoch": 2, "checkpoint": str(checkpoint), "train_time_s": 1.5}
    find = sweep_module.finished_trial_summary
    assert find(params, [str(staging), str(stored)]) is None  # nothing written yet

    sweep_module.write_json_atomic(str(staging / "trial_summary.json"), summary)
    assert sorted(os.listdir(staging)) == ["run", "trial_summary.json"]  # no temporary file left
    assert find(params, [str(staging), str(stored)]) == (summary, str(checkpoint))
    assert find({"learning_rate": np.float64(0.01), "n_heads": np.int64(2)}, [str(staging)]) is not None  # Ray's
    assert find({**params, "learning_rate": 0.003}, [str(staging), str(stored)]) is None  # another trial's values
    assert find({"learning_rate": 0.01}, [str(staging)]) is None

    text = (staging / "trial_summary.json").read_text()
    (staging / "trial_summary.json").write_text(text[: len(text) // 2])  # half-written (a copy cut short)
    assert find(params, [str(staging)]) is None
    for broken in ({**summary, "best_valid_result": None}, {k: v for k, v in summary.items() if k != "epochs_run"},
                   [summary]):
        (staging / "trial_summary.json").write_text(json.dumps(broken))
        assert find(params, [str(staging)]) is None

    # the sweep directory's copy, its checkpoint resolved into its own run/ (the staging one is gone)
    shutil.rmtree(staging)  # a new Ray session: the staging folder is gone
    (stored / "trial_summary.json").write_text(json.dumps(summary))
    assert find(params, [str(staging), str(stored)]) is None  # no checkpoint anywhere: the trial must train
    (stored / "run" / "SASRec-1.pth").write_bytes(b"weights")
    found, found_checkpoint = find(params, [str(staging), str(stored)])
    assert found == summary and found_checkpoint == str(stored / "run" / "SASRec-1.pth")
    old_format = {k: v for k, v in summary.items() if k != "last_epoch"}  # written before "last_epoch" existed
    (stored / "trial_summary.json").write_text(json.dumps(old_format))
    report = sweep_module.finished_trial_report(*find(params, [str(stored)]))
    assert report == {"hit@10": 0.5, "ndcg@10": 0.25, "valid_score": 0.25, "best_valid_score": 0.25, "epoch": 2,
                      "checkpoint": str(stored / "run" / "SASRec-1.pth")}


def test_write_json_atomic_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "trial_summary.json"
    sweep_module.write_json_atomic(str(path), {"a": 1})

    def dies_halfway(content, f, **kwargs):
        f.write('{"a": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module.json, "dump", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        sweep_module.write_json_atomic(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["trial_summary.json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_refuses_a_dead_ray_address_at_once_and_writes_nothing(tmp_path, tiny_data, monkeypatch, capsys):
    from recbole_llmkd.jobs.export_ray import RayAddressError

    def ray_must_not_start(*args, **kwargs):
        raise AssertionError("Ray was started for a dead --ray-address")

    monkeypatch.setattr(sweep_module, "_start_ray", ray_must_not_start)
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [1e-7, 0.01]}})
    sweep_dir = tmp_path / "sw"
    with pytest.raises(RayAddressError, match=r"no Ray cluster at --ray-address=127\.0\.0\.1:1: cannot connect"):
        run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]], ray_address="127.0.0.1:1",
                  cmd_args={"data_path": tiny_data["data_path"], "run_dir": str(sweep_dir)})
    assert not sweep_dir.exists()
    # the CLI: one line, exit status 2, nothing written
    rc = cli.main(["--model=SASRec", "--dataset=tinyml", f"--config_files={tiny_data['config_file']}",
                   f"--data_path={tiny_data['data_path']}", f"--tune={space}", "--ray-address=127.0.0.1:1",
                   f"--run_dir={sweep_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "no Ray cluster at --ray-address=127.0.0.1:1" in err[-1]
    assert not any("Traceback" in line for line in err) and not sweep_dir.exists()


@pytest.mark.slow
def test_sweep_joins_a_separate_ray_head_on_loopback(tmp_path, tiny_data):
    port = _free_port()
    # Ray >= 2.5x: `ray start` clusters use token authentication; the driver must use it too (token in ~/.ray).
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [RAY_BIN, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [1e-7, 0.01]}})
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "run_recbole_llmkd.py"), "--model=SASRec", "--dataset=tinyml",
             f"--config_files={tiny_data['config_file']}", f"--data_path={tiny_data['data_path']}",
             f"--tune={space}", f"--ray-address=127.0.0.1:{port}", "--run_dir=sweep", "--epochs=1"],
            capture_output=True, text=True, timeout=900, env=env,  # a bound for a broken run, not a timing assumption
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "best trial:" in proc.stdout and "test" in proc.stdout
        trials = _trials("sweep")
        assert len(trials) == 2 and list(trials["status"]) == ["TERMINATED", "TERMINATED"]
        with open("sweep/best.json") as f:
            assert set(json.load(f)["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}
    finally:
        _stop_head(head, port)


def _stop_head(head: subprocess.Popen, port: int) -> None:
    """Stop only the head this test started (`ray start --block` first, then its process group), never
    every Ray on the machine (`ray stop` would); forget it as the machine's "current cluster" if it is."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=10)
    try:
        os.killpg(head.pid, signal.SIGKILL)  # raylet/gcs_server left behind in the head's session
    except ProcessLookupError:
        pass
    current = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    if os.path.isfile(current) and open(current).read().strip().endswith(f":{port}"):
        os.remove(current)
