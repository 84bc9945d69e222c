"""The plugin foundation: CLI, config precedence, model lookup, run directory, checkpoints, bad input."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import yaml

from recbole_llmkd import cli, config as config_module, registry
from recbole_llmkd.config import Config, ConfigFileError, UnknownConfigKeyError
from recbole_llmkd.quick_start import DatasetNotFoundError, run_or_reuse, run_recbole_llmkd
from tests.conftest import REPO_ROOT


SMALL_SLICE = {"user_inter_num_interval": "[0,30]"}  # ml-100k's users with at most 30 interactions: quick epochs


# ----- CLI smoke -----------------------------------------------------------------------------
def test_cli_sasrec_prints_metrics_table(tmp_path):
    tiny = tmp_path / "tiny.yaml"
    from tests.conftest import TINY_SEQ_CONFIG

    tiny.write_text(yaml.safe_dump({**TINY_SEQ_CONFIG, **SMALL_SLICE}))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_llmkd.py"), "--model", "SASRec", "--dataset=ml-100k",
         f"--config_files={tiny}", "--run_dir=cli_run"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SASRec on ml-100k" in proc.stdout
    assert "| ndcg@10" in proc.stdout
    result = json.loads((tmp_path / "cli_run" / "results.json").read_text())
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    # Everything the run wrote is inside its run directory.
    assert sorted(os.listdir(tmp_path)) == ["cli_run", "tiny.yaml"]
    assert {"run.log", "results.json", "tensorboard"} <= set(os.listdir(tmp_path / "cli_run"))


def test_gru4rec_metrics_dict(tiny_seq_config, tmp_path):
    result = run_recbole_llmkd("GRU4Rec", "ml-100k", config_dict={
        **tiny_seq_config, "run_dir": "gru", "measure_throughput": True, "eval_batch_size": 256})
    # 943 test users in batches of 256: the first batch is also run once untimed (warm-up); every user is timed once.
    assert result["throughput_users_timed"] == 943
    assert result["throughput_users_per_s"] > 0
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    assert 0 < result["best_valid_result"]["ndcg@10"] <= 1
    assert result["run_dir"] == str(tmp_path / "gru")
    assert os.path.dirname(result["checkpoint"]) == result["run_dir"]
    assert sorted(os.listdir(tmp_path)) == ["gru"]


def test_checkpoint_round_trip_gives_same_metrics(tiny_seq_config):
    """train -> save -> load best (torch 2.13, weights_only default) -> evaluate reproduces the test metrics."""
    from recbole.data import create_dataset, data_preparation

    result = run_recbole_llmkd("SASRec", "ml-100k", config_dict={**tiny_seq_config, **SMALL_SLICE, "run_dir": "rt"})
    config = Config("SASRec", "ml-100k", config_dict={**tiny_seq_config, **SMALL_SLICE, "run_dir": "rt2"})
    _, _, test_data = data_preparation(config, create_dataset(config))
    fresh_model = config.model_class(config, test_data._dataset)  # random weights
    trainer = registry.get_trainer(config["MODEL_TYPE"], "SASRec")(config, fresh_model)
    reloaded = trainer.evaluate(test_data, load_best_model=True, model_file=result["checkpoint"])
    assert {k: float(v) for k, v in reloaded.items()} == pytest.approx(result["test_result"], abs=1e-12)


def test_prepare_in_parts_builds_the_same_model(tiny_seq_config, tmp_path):
    """run.prepare_data, then run.prepare(config, data=...): the model prepare(config) builds (seeded as a fresh run);
    with_trainer=False builds no trainer, so nothing is written (no checkpoint directory, no TensorBoard events)."""
    from recbole_llmkd.run import prepare, prepare_data

    data = prepare_data(Config("SASRec", "ml-100k", config_dict=tiny_seq_config))
    assert data.model is None and data.trainer is None and data.train_data is not None
    parts = prepare(data.config, data=data, with_trainer=False)
    assert parts.trainer is None and parts.train_data is data.train_data and parts.test_data is data.test_data
    assert os.listdir(tmp_path) == []
    whole = prepare(Config("SASRec", "ml-100k", config_dict=tiny_seq_config))
    assert whole.trainer is not None
    assert len(whole.train_data) == len(parts.train_data)
    expected = whole.model.state_dict()
    assert {name: torch.equal(value, expected[name]) for name, value in parts.model.state_dict().items()} == {
        name: True for name in expected}


def test_valid_smoothing_is_refused_for_recbole_trainers(tiny_seq_config):
    """valid_smoothing > 1 asked of a plain RecBole model (whose Trainer would ignore it) is an error naming the fix;
    1, the default from the plugin's overall.yaml, builds RecBole's own Trainer."""
    from recbole_llmkd.errors import ConfigValueError
    from recbole_llmkd.run import prepare, prepare_data
    from recbole_llmkd.trainer.selection import SmoothedValidation

    data = prepare_data(Config("SASRec", "ml-100k", config_dict=tiny_seq_config))
    assert data.config["valid_smoothing"] == 1
    trainer = prepare(data.config, data=data).trainer
    assert type(trainer).__name__ == "Trainer" and not isinstance(trainer, SmoothedValidation)
    smoothed = Config("SASRec", "ml-100k", config_dict={**tiny_seq_config, "valid_smoothing": 3})
    with pytest.raises(ConfigValueError, match=r"valid_smoothing=3 needs one of the plugin's trainers .*SASRec trains "
                                               r"with RecBole's Trainer.*KDSASRec .* with kd_method: none"):
        prepare(smoothed, data=data)

# ----- interrupted runs ------------------------------------------------------------------------
def test_an_interrupted_run_goes_on_from_its_best_checkpoint_through_the_cli(tiny_seq_config, monkeypatch, capsys):
    """Ctrl-C in epoch 1 of 2 keeps the checkpoint of epoch 0; a new run into the directory is refused; ``--resume``
    trains epoch 1 alone and writes the results into the same run directory; then nothing is left to resume."""
    from recbole.trainer import Trainer

    from recbole_llmkd.run import RunDirError, RunInterrupted, checkpoints_in, interrupted

    config = {**tiny_seq_config, **SMALL_SLICE, "epochs": 2, "run_dir": "run"}
    train_epoch = Trainer._train_epoch

    def stopped_in_epoch_1(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 1:
            raise KeyboardInterrupt
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_epoch", stopped_in_epoch_1)
        with pytest.raises(RunInterrupted, match="--run_dir=.*run --resume"):
            run_recbole_llmkd("SASRec", "ml-100k", config_dict=config)
    assert interrupted("run") and interrupted("run", "SASRec") and not interrupted("run", "GRU4Rec")
    [checkpoint] = checkpoints_in("run")
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["epoch"] == 0
    assert saved["trainer_state"]["train_time_s"] > 0  # every trainer's checkpoint has it, RecBole's too
    saved["trainer_state"]["train_time_s"] = 1000.0  # as if the epochs before the interruption had taken 1000 s
    torch.save(saved, checkpoint)
    with pytest.raises(RunDirError, match="interrupted run .* --resume"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict=config)

    tiny = "tiny.yaml"
    with open(tiny, "w") as f:
        yaml.safe_dump(config, f)
    resumed_at = time.perf_counter()
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", f"--config_files={tiny}", "--run_dir=run",
                     "--resume"]) == 0
    resume_wall_s = time.perf_counter() - resumed_at
    assert "SASRec on ml-100k" in capsys.readouterr().out
    result = json.loads(open("run/results.json").read())
    assert result["resumed_at_epoch"] == 1
    assert 1000.0 < result["train_time_s"] < 1000.0 + resume_wall_s  # the time before the interruption counts
    assert checkpoints_in("run") == [checkpoint] and result["checkpoint"] == os.path.abspath(checkpoint)
    log = open("run/run.log").read()
    resumed_part = log.split("Resume training from epoch 1")[1]
    assert "epoch 1 training" in resumed_part and "epoch 0 training" not in resumed_part
    assert 0 < result["test_result"]["ndcg@10"] <= 1 and 0 < result["best_valid_result"]["ndcg@10"] <= 1
    assert not interrupted("run")
    with pytest.raises(RunDirError, match="has finished"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict=config, resume=True)
    assert run_or_reuse("SASRec", "ml-100k", "run", config_dict=config) == (result, True)  # what the benches call


def test_a_checkpoint_is_written_whole_or_not_at_all(tiny_seq_config, monkeypatch):
    """Ctrl-C while a checkpoint is written keeps the previous checkpoint readable and leaves no partial file."""
    from recbole_llmkd.compat import PARTIAL_SUFFIX, load_checkpoint
    from recbole_llmkd.run import prepare

    trainer = prepare(Config("SASRec", "ml-100k", config_dict={**tiny_seq_config, **SMALL_SLICE})).trainer
    trainer.saved_model_file = os.path.abspath("SASRec-test.pth")
    trainer._save_checkpoint(0)
    save = torch.save

    def cut_short(state, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(1)
    monkeypatch.setattr(torch, "save", save)
    assert load_checkpoint(trainer.saved_model_file)["epoch"] == 0
    assert not os.path.exists(trainer.saved_model_file + PARTIAL_SUFFIX)
    trainer._save_checkpoint(1)
    assert load_checkpoint(trainer.saved_model_file)["epoch"] == 1
    assert not os.path.exists(trainer.saved_model_file + PARTIAL_SUFFIX)


def test_resume_names_what_does_not_fit_and_a_last_epoch_checkpoint_is_only_evaluated(tiny_seq_config, capsys):
    """Nothing to resume, another model's or another run's checkpoint, an unreadable one, a changed valid_metric or
    model shape: each a clear error. A checkpoint of the last epoch: evaluated, not trained on, not re-saved."""
    from recbole_llmkd.run import RunDirError

    with pytest.raises(RunDirError, match="no checkpoint of SASRec in .*run.*without --resume"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict={**tiny_seq_config, "run_dir": "run"}, resume=True)
    assert not os.path.exists("run")  # checked before anything is created
    with pytest.raises(RunDirError, match="--run_dir"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict=tiny_seq_config, resume=True)

    config = {**tiny_seq_config, **SMALL_SLICE, "run_dir": "done"}
    done = run_recbole_llmkd("SASRec", "ml-100k", config_dict=config)  # 1 epoch: its checkpoint is epoch 0's
    os.remove("done/results.json")  # as if stopped during the test evaluation
    with pytest.raises(RunDirError, match=r"already holds an interrupted run \(a checkpoint, SASRec-.*\.pth"):
        run_or_reuse("GRU4Rec", "ml-100k", "done", config_dict=config)  # another model's checkpoint: not resumed
    with pytest.raises(RunDirError, match="no checkpoint of GRU4Rec"):  # a model's own checkpoints only
        run_recbole_llmkd("GRU4Rec", "ml-100k", config_dict=config, resume=True)
    with pytest.raises(RunDirError, match="checkpoint of model 'SASRec', this run's model is 'GRU4Rec'"):
        run_recbole_llmkd("GRU4Rec", "ml-100k", config_dict=config, resume=done["checkpoint"])
    with pytest.raises(RunDirError, match="valid_metric 'NDCG@10', this run's valid_metric is 'Hit@10'"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict={**config, "valid_metric": "Hit@10"}, resume=True)
    with pytest.raises(RunDirError, match="the checkpoint of the run in .*done; resuming it here would overwrite it"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict={**config, "run_dir": "other"}, resume=done["checkpoint"])
    shutil.copy(done["checkpoint"], "done/SASRec-copy.pth")
    with pytest.raises(RunDirError, match="2 checkpoints of SASRec .*--resume=PATH, or delete the others"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict=config, resume=True)
    with open("done/SASRec-copy.pth", "wb") as f:
        f.write(b"cut short")
    with pytest.raises(RunDirError, match="SASRec-copy.pth is not a readable .*delete it"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict=config, resume="done/SASRec-copy.pth")
    os.remove("done/SASRec-copy.pth")
    with pytest.raises(RunDirError, match="does not fit the model .*hidden_size: 16 -> 32.*: size mismatch for"):
        run_recbole_llmkd("SASRec", "ml-100k", config_dict={**config, "hidden_size": 32, "inner_size": 32},
                          resume=True)

    shutil.move("done", "moved")  # a run directory moved since: its checkpoint still resumes there
    moved_checkpoint = os.path.abspath(os.path.join("moved", os.path.basename(done["checkpoint"])))
    resumed = run_recbole_llmkd("SASRec", "ml-100k", config_dict={**config, "run_dir": "moved"}, resume=True)
    assert resumed["resumed_at_epoch"] == 1 and resumed["checkpoint"] == moved_checkpoint
    assert torch.load(moved_checkpoint, weights_only=False)["epoch"] == 0  # not re-saved as epoch -1
    for split in ("best_valid_result", "test_result"):  # the same checkpoint evaluated again
        assert resumed[split] == pytest.approx(done[split], abs=1e-6)

    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--tune=space.yaml", "--run_dir=s",
                     "--resume=x.pth"]) == 2
    assert "a sweep resumes from its directory" in capsys.readouterr().err
    assert cli.main(["--pipeline=tiny", "--resume"]) == 2
    assert "--pipeline resumes by itself" in capsys.readouterr().err
    assert cli.main(["--export-teacher=done", "--resume"]) == 2
    assert "--export-teacher resumes by itself" in capsys.readouterr().err
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--run_dir=moved", "--resume="]) == 2
    assert "--resume= names no checkpoint" in capsys.readouterr().err


# ----- config ---------------------------------------------------------------------------------
def test_config_precedence_every_layer(tmp_path, monkeypatch):
    """RecBole < RecBole parent yaml < overall < model < dataset < files < dict < command line."""
    from recbole.model.sequential_recommender import SASRec

    props = tmp_path / "props"
    shutil.copytree(config_module.properties_dir(), props)
    monkeypatch.setattr(config_module, "properties_dir", lambda: str(props))

    class PrecedenceSASRec(SASRec):
        pass

    PrecedenceSASRec.__module__ = "recbole_llmkd.model.precedence_test"
    (props / "model").mkdir(exist_ok=True)
    (props / "dataset").mkdir(exist_ok=True)
    (props / "overall.yaml").write_text("train_batch_size: 111\nlearning_rate: 0.111\nweight_decay: 0.111\n"
                                        "eval_batch_size: 111\nstopping_step: 111\nn_layers: 5\n")
    (props / "model" / "PrecedenceSASRec.yaml").write_text("learning_rate: 0.222\nweight_decay: 0.222\n"
                                                           "eval_batch_size: 222\nstopping_step: 222\n")
    (props / "dataset" / "ml-100k.yaml").write_text("weight_decay: 0.333\neval_batch_size: 333\nstopping_step: 333\n")
    user_file = tmp_path / "user.yaml"
    user_file.write_text("eval_batch_size: 444\nstopping_step: 444\nepochs: 444\n")
    config = Config(PrecedenceSASRec, "ml-100k", config_file_list=[str(user_file)],
                    config_dict={"stopping_step": 555, "epochs": 555, "gpu_id": ""},
                    cmd_args={"epochs": "666"})
    assert config["inner_size"] == 256          # RecBole's SASRec.yaml reached through the MRO
    assert config["hidden_dropout_prob"] == 0.5
    assert config["n_layers"] == 5              # our overall.yaml beats RecBole's SASRec.yaml (2)
    assert config["train_batch_size"] == 111    # overall
    assert config["learning_rate"] == 0.222     # model yaml beats overall
    assert config["weight_decay"] == 0.333      # dataset yaml beats model yaml
    assert config["eval_batch_size"] == 444     # user file beats dataset yaml
    assert config["stopping_step"] == 555       # dict beats file
    assert config["epochs"] == 666              # command line beats dict, converted to int
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE sequential: sampling off


def test_mro_subclass_without_any_yaml_gets_parent_defaults():
    from recbole.model.sequential_recommender import GRU4Rec

    class BareGRU4Rec(GRU4Rec):
        pass

    config = Config(BareGRU4Rec, "ml-100k", config_dict={"gpu_id": ""})
    # RecBole alone would fail: "Either Model has attr 'input_type', or arg 'loss_type' should exist".
    assert config["loss_type"] == "CE"
    assert config["hidden_size"] == 128 and config["embedding_size"] == 64
    assert config["model"] == "BareGRU4Rec"


def test_config_does_not_read_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ray_worker.py", "--epochs=99", "--node-ip-address=1.2.3.4"])
    config = Config("SASRec", "ml-100k", config_dict={"gpu_id": ""})
    assert config["epochs"] != 99 and config["node-ip-address"] is None


def test_unknown_model_error_suggests_and_names_list_models():
    with pytest.raises(registry.UnknownModelError) as err:
        registry.get_model("SASRecc")
    message = str(err.value)
    assert "lightgbm" not in message.lower()
    assert "Did you mean: SASRec" in message
    assert "--list-models" in message and "KDSASRec" in message and "\n" not in message
    assert len(message) < 300  # not RecBole's ~100 model names on one line


def test_cli_unknown_model_is_a_clean_error(capsys):
    assert cli.main(["--model=NoSuchModel", "--dataset=ml-100k"]) == 2
    assert "Unknown model 'NoSuchModel'" in capsys.readouterr().err


def test_missing_dataset_names_the_path_and_never_downloads(tiny_seq_config, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        run_recbole_llmkd("SASRec", "no-such-data", config_dict={**tiny_seq_config, "data_path": str(tmp_path / "d")})
    assert str(tmp_path / "d" / "no-such-data" / "no-such-data.inter") in str(err.value)
    assert not (tmp_path / "runs").exists()  # failed before anything was written


def test_own_dataset_whose_time_field_is_not_loaded_is_one_line(tiny_seq_config, tmp_path, capsys):
    """A dataset without its own yaml gets RecBole's load_col (user_id, item_id): a sequential run says to load the
    timestamp instead of stopping in RecBole's data preparation."""
    import recbole

    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    os.makedirs(tmp_path / "d" / "mine")
    shutil.copy(source, tmp_path / "d" / "mine" / "mine.inter")
    assert cli.main(["--model=SASRec", "--dataset=mine", f"--data_path={tmp_path / 'd'}", "--epochs=1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "load it, e.g. in a yaml file of --config_files: load_col: {inter: [user_id, item_id, timestamp]}")
    assert not (tmp_path / "runs").exists()  # failed before anything was written


def test_missing_benchmark_file_is_named(tiny_seq_config, tmp_path):
    folder = tmp_path / "d" / "bench"
    folder.mkdir(parents=True)
    (folder / "bench.train.inter").write_text("user_id:token\titem_id:token\n")
    with pytest.raises(DatasetNotFoundError, match=r"bench\.valid\.inter"):
        run_recbole_llmkd("SASRec", "bench", config_dict={
            **tiny_seq_config, "data_path": str(tmp_path / "d"), "benchmark_filename": ["train", "valid", "test"]})


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rate: 0.01\ntopk: [10, 20\n")
    with pytest.raises(ConfigFileError, match=r"bad\.yaml, line 4"):
        Config("SASRec", "ml-100k", config_file_list=[str(bad)])
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigFileError, match="mapping"):
        Config("SASRec", "ml-100k", config_file_list=[str(not_a_mapping)])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Config("SASRec", "ml-100k", config_file_list=[str(tmp_path / "nope.yaml")])


def test_unknown_command_line_key_is_an_error_with_did_you_mean(tmp_path):
    config = Config("SASRec", "ml-100k", config_dict={"gpu_id": ""},
                    cmd_args={"learnin_rate": "0.1", "epochs": "3"})
    assert config.unknown_cmd_keys() == ["learnin_rate"]
    with pytest.raises(UnknownConfigKeyError, match=r"--learnin_rate \(did you mean --learning_rate\?\)") as raised:
        config.check_cmd_keys()
    assert "--epochs" not in str(raised.value)
    # RecBole's own keys, dataset keys, keys of the user's config files and config dict are all known
    own = tmp_path / "own.yaml"
    own.write_text("my_custom_key: 1\n")
    config = Config("SASRec", "ml-100k", config_file_list=[str(own)], config_dict={"gpu_id": "", "other_key": 2},
                    cmd_args={"my_custom_key": "2", "other_key": "3", "seed": "7", "user_inter_num_interval": "[5,inf)",
                              "MAX_ITEM_LIST_LENGTH": "10", "benchmark_filename": "~"})
    config.check_cmd_keys()


# ----- CLI parsing ----------------------------------------------------------------------------
def test_cli_accepts_space_and_equals_forms():
    args, overrides = cli.parse_args(["--model", "SASRec", "--dataset=ml-100k", "--epochs=3",
                                      "--learning_rate", "0.01", "--config_files=a.yaml,b.yaml"])
    assert (args.model, args.dataset) == ("SASRec", "ml-100k")
    assert overrides == {"epochs": "3", "learning_rate": "0.01"}
    assert cli.split_config_files(args.config_files) == ["a.yaml", "b.yaml"]
    assert cli.split_config_files("a.yaml b.yaml") == ["a.yaml", "b.yaml"]


def test_cli_rejects_dangling_option_and_conflicts():
    with pytest.raises(cli.CLIError, match="--epochs=VALUE"):
        cli.parse_config_overrides(["--epochs"])
    with pytest.raises(cli.CLIError, match="twice"):
        cli.parse_config_overrides(["--epochs=1", "--epochs=2"])
    with pytest.raises(cli.CLIError, match="unexpected argument"):
        cli.parse_config_overrides(["stray"])


def test_help_lists_models(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "available models" in out and "SASRec" in out and "GRU4Rec" in out and "BERT4Rec" in out
    assert "--run_dir=DIR" in out  # a config key, not an argparse option: the epilog names it


def test_dataset_keys_stay_in_their_own_config():
    """RecBole's Config `+=`s dataset yaml keys into its module-level argument list; compat gives each Config a copy."""
    from recbole.utils import argument_list

    from recbole_llmkd.config import Config

    global_before = list(argument_list.dataset_arguments)
    config = Config("SASRec", "ml-100k", config_dict={"gpu_id": ""})
    plugin_keys = set(load_yaml_file_keys("dataset/ml-100k.yaml"))
    assert plugin_keys and plugin_keys <= set(config.parameters["Dataset"])
    assert argument_list.dataset_arguments == global_before  # nothing leaks into the next Config
    other = Config("SASRec", "lastfm", config_dict={"gpu_id": "", "data_path": "/nonexistent"})
    assert "eval_batch_size" not in other.parameters["Dataset"]
    assert config.parameters["Dataset"] is not other.parameters["Dataset"]


def load_yaml_file_keys(relative_path):
    import os

    import yaml

    from recbole_llmkd.config import load_yaml_file, properties_dir

    return list(load_yaml_file(os.path.join(properties_dir(), relative_path), yaml.FullLoader) or {})


def test_device_description_and_commit_for_reports():
    """One description of the device (pipeline report and benchmarks): the device asked for, not just CUDA presence."""
    import torch

    from recbole_llmkd.measure import device_description, git_commit

    cpu = device_description(torch.device("cpu"))
    assert cpu.startswith("CPU: ") and cpu.endswith(" cores")
    assert device_description("cpu", torch_threads=True) == f"{cpu}, torch threads {torch.get_num_threads()}"
    if not torch.cuda.is_available():
        assert device_description() == cpu
    commit = git_commit()
    assert commit == "unknown" or (4 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit))
