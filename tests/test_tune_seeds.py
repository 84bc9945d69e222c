"""Ray Tune sweeps with several seeds per trial (``search.seeds`` / ``--trial-seeds``): trials compared on the mean
over their seeds, the best trial's test read once per seed, a trial resumed seed by seed, and the CLI option.

In a file of its own so that pytest-xdist (``--dist loadfile``) can run it beside ``test_tune.py``; the tiny data,
the embedded Ray and the helpers are ``test_tune.py``'s.
"""
import json
import os
import re
import shutil

import pandas as pd
import pytest

from recbole_llmkd import cli
from recbole_llmkd.tune import SweepError, run_sweep
from tests.test_tune import (  # noqa: F401 (the fixtures ray_local and tiny_data)
    _mark_unfinished_in_saved_state, _stat, _trials, _write_space, ray_local, tiny_data,
)


def test_trial_seeds_compare_trials_on_the_mean_and_resume_seed_by_seed(tmp_path, tiny_data, ray_local):
    """search.seeds: every trial trains once per seed (run/seed-<s>/), reports the running mean after each seed, is
    compared on the mean over all seeds; the best trial's test split is read once per seed. A trial interrupted
    after its first seed resumes without retraining that seed."""
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [1e-7, 0.01]}},
                         max_concurrent=2, seeds=[1, 2])
    first = run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]],
                      cmd_args={"data_path": tiny_data["data_path"], "run_dir": "sweep", "seed": "7"}, verbose=0)
    experiment = os.path.abspath("sweep/trials")
    trials = _trials("sweep").set_index("learning_rate")
    assert list(trials["status"]) == ["TERMINATED"] * 2 and list(trials["seeds_done"]) == [2, 2]
    assert list(trials["epochs_run"]) == [4, 4]  # 2 epochs x 2 seeds
    per_seed = {}
    for lr, row in trials.iterrows():
        folder = os.path.join(experiment, row["trial_dir"].split("/")[-1])
        seeds = {}
        for seed in (1, 2):
            with open(os.path.join(folder, "run", f"seed-{seed}", "seed_summary.json")) as f:
                seeds[seed] = json.load(f)
            assert seeds[seed]["seeds"] == [seed] and seeds[seed]["checkpoint"].startswith(f"run/seed-{seed}/")
            log = open(os.path.join(folder, "run", f"seed-{seed}", "run.log")).read()
            assert f"seed = {seed}\n" in log and "test result" not in log  # the trial's seed, not --seed=7
        progress = pd.read_csv(os.path.join(folder, "progress.csv"))
        valid = [seeds[s]["best_valid_result"]["ndcg@10"] for s in (1, 2)]
        assert list(progress["seeds_done"]) == [1, 2]  # one report per seed: the mean so far
        assert list(progress["ndcg@10"]) == pytest.approx([valid[0], (valid[0] + valid[1]) / 2])
        assert row["best_ndcg@10"] == pytest.approx((valid[0] + valid[1]) / 2)
        assert row["std_ndcg@10"] == pytest.approx(abs(valid[0] - valid[1]) / 2 ** 0.5)
        per_seed[lr] = (folder, seeds)
    assert valid[0] != valid[1]  # the seeds are different runs

    assert first["best_params"] == {"learning_rate": 0.01} and first["seeds"] == [1, 2]
    assert first["best_valid_score"] == pytest.approx(trials.loc[0.01, "best_ndcg@10"])
    tests = first["test_result_per_seed"]
    assert set(tests) == {"1", "2"} and tests["1"] != tests["2"]
    for metric in ("hit@10", "ndcg@10", "mrr@10"):
        assert first["test_result"][metric] == pytest.approx((tests["1"][metric] + tests["2"][metric]) / 2)
    folder, seeds = per_seed[0.01]
    assert first["checkpoints"] == {str(s): os.path.join(folder, seeds[s]["checkpoint"]) for s in (1, 2)}
    assert open("sweep/run.log").read().count("(read once)") == 2  # one test read per seed

    # The best trial stopped after its first seed, and the resume runs in a new Ray session (its staging folder,
    # which run_dir in the seed's log names, is gone): no trial summary, no seed 2.
    log = open(os.path.join(folder, "run", "seed-1", "run.log")).read()
    staging = os.path.dirname(os.path.dirname(re.search(r"run_dir = (\S+)", log).group(1)))
    assert os.path.basename(staging) == os.path.basename(folder) and not staging.startswith(os.path.abspath("sweep"))
    shutil.rmtree(staging)
    os.remove(os.path.join(folder, "trial_summary.json"))
    shutil.rmtree(os.path.join(folder, "run", "seed-2"))
    seed_one = {name: _stat(os.path.join(folder, "run", "seed-1", name)) for name in ("run.log", "seed_summary.json")}
    _mark_unfinished_in_saved_state(experiment, os.path.basename(folder))
    os.remove("sweep/best.json")
    with pytest.raises(SweepError, match=r"started with search.seeds \[1, 2\]"):
        run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, trial_seeds=[3], resume=True, verbose=0)
    result = run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)

    assert {n: _stat(os.path.join(folder, "run", "seed-1", n)) for n in seed_one} == seed_one  # seed 1 not retrained
    with open(os.path.join(folder, "run", "seed-2", "seed_summary.json")) as f:
        assert json.load(f)["best_valid_result"] == pytest.approx(seeds[2]["best_valid_result"])  # retrained, same run
    assert result["best_params"] == {"learning_rate": 0.01}
    assert result["best_valid_score"] == pytest.approx(first["best_valid_score"])
    assert result["test_result"] == pytest.approx(first["test_result"])


def test_cli_trial_seeds_reach_the_sweep_and_its_table_says_mean_over_seeds(monkeypatch, capsys):
    given = {}

    def fake_run_sweep(model, dataset, space, **kwargs):
        given.update(kwargs)
        return {"model": model, "dataset": dataset, "seeds": [3, 4], "best_valid_result": {"ndcg@10": 0.5},
                "test_result": {"ndcg@10": 0.25}, "best_trial_id": "t1", "best_params": {"learning_rate": 0.01},
                "status_counts": {"TERMINATED": 1}, "trials_md": "trials.md", "sweep_dir": "sweep"}

    monkeypatch.setattr("recbole_llmkd.tune.run_sweep", fake_run_sweep)
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--tune=sasrec_example", "--trial-seeds=3,4"]) == 0
    assert given["trial_seeds"] == [3, 4]
    assert "mean over seeds 3, 4" in capsys.readouterr().out

    for bad, message in (("3,x", "needs integers separated by commas"), ("3,3", "a seed is listed twice")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--model=SASRec", "--dataset=ml-100k", "--tune=sasrec_example", f"--trial-seeds={bad}"])
        assert exit_info.value.code == 2
        assert f"argument --trial-seeds: {message}" in capsys.readouterr().err


def test_trials_share_one_item_text_cache_per_sweep(tmp_path, monkeypatch):
    """Trials encode the item texts once per sweep (``<sweep dir>/cache``) unless the user set a cache folder."""
    from recbole_llmkd.llm.text_encoder import CACHE_ENV, text_embedding_cache_file
    from recbole_llmkd.tune.sweep import share_text_cache

    monkeypatch.delenv(CACHE_ENV, raising=False)
    experiment = tmp_path / "sweep" / "trials"
    assert share_text_cache(str(experiment)) == str(tmp_path / "sweep" / "cache") == os.environ[CACHE_ENV]
    assert str(text_embedding_cache_file(["[PAD]", "a title"], "minilm")).startswith(str(tmp_path / "sweep" / "cache"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert share_text_cache(str(experiment)) == str(tmp_path / "mine")  # the user's folder wins
