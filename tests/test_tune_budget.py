"""A sweep's time budget (``search.time_budget`` / ``--time-budget``): parsing, the CLI option, the best trial chosen
among the finished ones when the budget runs out, and a budget that runs out before any trial finished.

The budget is Ray's ``TimeoutStopper`` (``recbole_llmkd.tune.budget.SweepTimeBudget``), which reads the clock in the
driver. The sweeps below give a budget no run reaches (an hour) and move that clock forward an hour from a driver
callback at a fixed point (the first trial's end, or its first report): when the budget runs out is then a fact of
the test, not of the machine's speed. The tiny data, the embedded Ray and the helpers are ``test_tune.py``'s.
"""
import glob
import json
import os
import time
import types

import pytest
from ray import tune
from ray.tune import Callback
from ray.tune.stopper import timeout as ray_timeout

from recbole_llmkd import cli
from recbole_llmkd.tune import SpaceError, SweepError, load_space, run_sweep
from recbole_llmkd.tune.space import parse_time_budget
from tests.test_tune import _trials, _write_space, ray_local, tiny_data  # noqa: F401 (fixtures)

HOUR = 3600.0
CLOCK = types.SimpleNamespace(offset=0.0)  # added to the time Ray's TimeoutStopper reads; module-level, since Ray
# may copy the callbacks it is given
ONE_CHOICE = {"hidden_size": {"type": "choice", "values": [8]}}


@pytest.mark.parametrize(
    "given, seconds", [(900, 900.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("45m", 2700.0), ("1.5h", 5400.0),
                       (" 2H ", 7200.0), (None, None)],
)
def test_time_budget_reads_seconds_or_a_unit(given, seconds):
    assert parse_time_budget("--time-budget", given) == seconds
    assert load_space({"space": ONE_CHOICE, "search": {"time_budget": given}}).time_budget_s == seconds


@pytest.mark.parametrize("bad", [0, -5, "0m", "-1h", "soon", "2d", "h", "", True, [60], float("inf"), "infh"])
def test_a_time_budget_that_is_not_a_duration_is_refused_naming_the_entry(bad):
    with pytest.raises(SpaceError, match=r"search\.time_budget: needs a duration > 0"):
        load_space({"space": ONE_CHOICE, "search": {"time_budget": bad}})


def test_cli_time_budget_reaches_the_sweep_and_needs_tune(monkeypatch, capsys):
    given = {}

    def fake_run_sweep(model, dataset, space, **kwargs):
        given.update(kwargs)
        return {"model": model, "dataset": dataset, "best_valid_result": {"ndcg@10": 0.5},
                "test_result": {"ndcg@10": 0.25}, "best_trial_id": "t1", "best_params": {"learning_rate": 0.01},
                "status_counts": {"TERMINATED": 1, "STOPPED": 1}, "trials_md": "trials.md", "sweep_dir": "sweep",
                "num_trials": 8, "trials_with_results": 2, "expected_trials": 8, "time_budget_s": 5400.0,
                "time_budget_reached": True}

    monkeypatch.setattr("recbole_llmkd.tune.run_sweep", fake_run_sweep)
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--tune=sasrec_example", "--time-budget=90m"]) == 0
    assert given["time_budget"] == 5400.0
    assert "time budget of 5400 s reached: 2 of 8 trial(s) reported a result" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model=SASRec", "--dataset=ml-100k", "--tune=sasrec_example", "--time-budget=soon"])
    assert exit_info.value.code == 2
    assert "argument --time-budget: needs a duration > 0" in capsys.readouterr().err

    # a sweep option without --tune would be ignored: refused before anything runs (a pipeline or export included)
    for argv in (["--model=SASRec", "--dataset=ml-100k", "--time-budget=1h", "--num-samples=4"],
                 ["--pipeline=tiny", "--num-samples=4", "--time-budget=1h"]):
        assert cli.main(argv) == 2
        assert "--num-samples, --time-budget: sweep option(s), given without --tune=SPACE" in capsys.readouterr().err


class _AdvanceClock(Callback):
    """Driver-side callback: at the first trial's end (``on="complete"``) or first report (``on="result"``) it moves
    the clock of Ray's ``TimeoutStopper`` forward by an hour, so the next check finds the budget spent. Ray runs
    callbacks in the driver's loop, which starts or finishes nothing meanwhile."""

    def __init__(self, on: str):
        self.on = on

    def _advance(self):
        CLOCK.offset = HOUR + 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.on == "complete":
            self._advance()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.on == "result":
            self._advance()


@pytest.fixture
def budget_clock(monkeypatch):
    """The clock Ray's TimeoutStopper reads (``time.time`` in its module) plus ``CLOCK.offset``; and a Tuner that
    adds ``_AdvanceClock(when.on)`` to the sweep's callbacks (``when.on`` is "complete" unless the test sets it)."""
    CLOCK.offset = 0.0
    when = types.SimpleNamespace(on="complete")
    monkeypatch.setattr(ray_timeout, "time", types.SimpleNamespace(time=lambda: time.time() + CLOCK.offset))

    class AdvancingTuner(tune.Tuner):
        def __init__(self, *args, run_config=None, **kwargs):
            run_config.callbacks = [*(run_config.callbacks or []), _AdvanceClock(when.on)]
            super().__init__(*args, run_config=run_config, **kwargs)

    monkeypatch.setattr(tune, "Tuner", AdvancingTuner)  # run_sweep imports Tuner from ray.tune when it runs
    yield when
    CLOCK.offset = 0.0


def test_at_the_time_budget_the_best_finished_trial_is_chosen_and_tested_once(tmp_path, tiny_data, ray_local,
                                                                              budget_clock):
    """Three trials one at a time; the budget runs out when the first has finished: the sweep ends there (no
    'interrupted'), the first trial is the best, its test split is read once, best.json says the budget was reached."""
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [0.01, 0.001, 1e-4]}},
                         max_concurrent=1, time_budget="1h")
    result = run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]],
                       cmd_args={"data_path": tiny_data["data_path"], "run_dir": "sweep"}, verbose=0)

    trials = _trials("sweep")
    finished = trials[trials["status"] == "TERMINATED"]
    assert len(finished) == 1 and list(finished["epochs_run"]) == [2]
    assert set(trials["status"]) <= {"TERMINATED", "NO_RESULT"}  # the others: never started, or stopped unreported
    assert len(glob.glob("sweep/trials/*/trial_summary.json")) == 1
    assert result["time_budget_reached"] is True and result["time_budget_s"] == HOUR
    assert result["expected_trials"] == 3 and result["num_trials"] == len(trials)
    assert result["trials_with_results"] == 1
    assert result["best_params"] == {"learning_rate": float(finished["learning_rate"].iloc[0])}
    assert result["best_valid_score"] == pytest.approx(float(finished["best_ndcg@10"].iloc[0]))
    assert set(result["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}
    with open("sweep/best.json") as f:
        assert json.load(f)["time_budget_reached"] is True
    log = open("sweep/run.log").read()
    assert "time budget 3600 s" in log and "time budget of 3600 s reached" in log
    assert log.count("test result of the best trial (read once)") == 1
    assert "is illegal" not in log  # tensorboardX's note on every metric name with '@', kept out of the sweep's log
    with pytest.raises(SweepError, match="has finished"):  # a finished sweep is not resumed: test stays read once
        run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)


def test_a_budget_spent_before_any_trial_trained_every_seed_is_an_error_and_not_resumed(tmp_path, tiny_data,
                                                                                       ray_local, budget_clock):
    """With seeds per trial, a trial stopped after its first seed cannot be chosen: no trial finished, a clear error
    (not 'interrupted'), and a resume is refused (Ray's saved state has every trial stopped and no new ones)."""
    budget_clock.on = "result"  # the first report: after the first seed of the first trial
    space = _write_space(tmp_path / "space.yaml", {"learning_rate": {"type": "grid", "values": [0.01, 0.001]}},
                         max_concurrent=1, seeds=[1, 2], time_budget=HOUR)
    with pytest.raises(SweepError, match="the time budget of 3600 s ran out before any trial finished"):
        run_sweep("SASRec", "tinyml", space, [tiny_data["config_file"]],
                  cmd_args={"data_path": tiny_data["data_path"], "run_dir": "sweep"}, verbose=0)
    trials = _trials("sweep")
    first, *rest = trials.itertuples()
    assert first.status == "STOPPED" and first.seeds_done == 1  # reported its first seed's mean, then stopped
    assert all(row.status == "NO_RESULT" for row in rest)
    assert not os.path.exists("sweep/best.json")
    with pytest.raises(SweepError, match="started with a time budget of 3600 s, which Ray keeps"):
        run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, time_budget="2h", verbose=0)
    assert json.load(open("sweep/time_budget_spent.json")) == {"time_budget_s": HOUR, "trials_with_results": 1}
    with pytest.raises(SweepError, match="ran out of its time budget before any trial finished .* start a new sweep"):
        run_sweep(None, None, None, cmd_args={"run_dir": "sweep"}, resume=True, verbose=0)
