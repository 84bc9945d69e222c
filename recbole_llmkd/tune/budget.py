"""A sweep's time budget (``search.time_budget``, ``--time-budget``): Ray's own ``TimeoutStopper``, which also
leaves a record in the sweep directory when it stops the sweep.

Ray stops every trial when the budget runs out (running ones are stopped, pending ones never start) and
``tuner.fit()`` returns as it does after a Ctrl-C. The record is how the driver tells the two apart: after the
budget it chooses the best among the finished trials, after a Ctrl-C it says how to resume.
"""
import json
import os
import time

from ray.tune.stopper import TimeoutStopper

BUDGET_RECORD = "time_budget_reached.json"


class SweepTimeBudget(TimeoutStopper):
    """``TimeoutStopper(seconds)`` that writes ``<sweep_dir>/time_budget_reached.json`` the first time it stops.

    Ray pickles it into the experiment (``tuner.pkl``) as it was given, so a resumed sweep runs for at most the
    same budget again, counted from the resume.
    """

    def __init__(self, seconds: float, sweep_dir: str):
        super().__init__(seconds)
        self.record = os.path.join(sweep_dir, BUDGET_RECORD)

    def stop_all(self) -> bool:
        stop = super().stop_all()
        if stop and not os.path.isfile(self.record):
            with open(self.record, "w", encoding="utf-8") as f:
                json.dump({"time_budget_s": self._timeout_seconds, "reached_at": time.time()}, f)
        return stop


def budget_reached(sweep_dir: str) -> bool:
    """Whether the sweep's time budget stopped it."""
    return os.path.isfile(os.path.join(sweep_dir, BUDGET_RECORD))

