"""Ray Tune sweeps (issue 6): space validation, an end-to-end sweep with crashing trials, resume after an
interruption, and a sweep against a separate Ray head process on loopback.

The sweeps train SASRec (tiny config) on ``tinyml``: the first 120 users of ml-100k written as atomic files,
so a trial takes seconds. One embedded Ray per module (``ray_local``); the interrupted and the cluster sweep
run the CLI in subprocesses.
"""
import glob
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_SEQ_CONFIG
from recbole_llmkd import cli
from recbole_llmkd.tune import SpaceError, load_space, run_sweep
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
    # the CLI turns it into a one-line error and exit status 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"space": {"learning_rate": {"type": "loguniform", "low": -1, "high": 1}}}))
    rc = cli.main(["--model=SASRec", "--dataset=tinyml", f"--config_files={tiny_data['config_file']}",
                   f"--data_path={tiny_data['data_path']}", f"--tune={bad}", "--run_dir=sw"])
    assert rc == 2
    assert "space.learning_rate: loguniform needs low > 0, got -1" in capsys.readouterr().err
    assert not os.path.exists("sw")


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


def test_trials_get_absolute_paths_and_the_shared_teacher_file(tmp_path, tiny_data):
    """Relative paths (data, config files, a teacher artifact file) reach the trials absolute, not copied."""
    os.makedirs("cfg")
    (tmp_path / "cfg" / "tiny.yaml").write_text(open(tiny_data["config_file"]).read())
    (tmp_path / "teacher.safetensors").write_bytes(b"not read here")
    spec = load_space({"space": {LR: {"type": "choice", "values": [0.01]}}})
    relative_data = os.path.relpath(tiny_data["data_path"], os.getcwd())
    _, setup = sweep_module.prepare_setup(
        "SASRec", "tinyml", spec, ["cfg/tiny.yaml"],
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


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, tiny_data, ray_local):
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [0.01, 0.003, 0.001]}},
                         max_concurrent=1)
    command = [sys.executable, os.path.join(REPO_ROOT, "run_recbole_llmkd.py"), "--model=SASRec", "--dataset=tinyml",
               f"--config_files={tiny_data['config_file']}", f"--data_path={tiny_data['data_path']}",
               f"--tune={space}", "--run_dir=sweep"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any("completed after" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C once the first trial finished: Ray Tune saves its state and stops
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "continue it with --resume --run_dir=" in output
    done = {p: os.path.getmtime(p) for p in glob.glob("sweep/trials/*/trial_summary.json")}
    assert 1 <= len(done) < 3

    result = run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)
    trials = _trials("sweep")
    assert len(trials) == 3 and list(trials["status"]) == ["TERMINATED"] * 3
    assert sorted(trials["learning_rate"]) == [0.001, 0.003, 0.01]
    assert {p: os.path.getmtime(p) for p in done} == done  # finished trials were not rerun
    assert len(glob.glob("sweep/trials/*/trial_summary.json")) == 3
    assert result["num_trials"] == 3 and set(result["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            capture_output=True, text=True, timeout=300, env=env,
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
