"""A sweep's time budget (``search.time_budget``, ``--time-budget``): Ray's own ``TimeoutStopper``, which also tells
the driver that it stopped the sweep.

Ray stops every trial when the budget runs out (running ones are stopped, pending ones never start) and
``tuner.fit()`` returns as it does after a Ctrl-C. The flag is how the driver tells the two apart: after the budget it
chooses the best among the finished trials, after a Ctrl-C it says how to resume. Ray runs stoppers in the driver
(this process), and saves the stopper with the experiment's state: a resumed sweep runs for about what is left of
the budget (as of Ray's last save of that state; the time between a Ctrl-C and the resume does not count).
"""
from ray.tune.stopper import TimeoutStopper

_stopped = {"by_budget": False}  # set by SweepTimeBudget, read and reset by the driver around tuner.fit()


class SweepTimeBudget(TimeoutStopper):
    """``TimeoutStopper(seconds)`` that records, for the driver, that it stopped the sweep."""

    def stop_all(self) -> bool:
        stop = super().stop_all()
        if stop:
            _stopped["by_budget"] = True
        return stop


def reset_budget_flag() -> None:
    """Before ``tuner.fit()``: the flag says whether this run of the sweep ran out of its budget."""
    _stopped["by_budget"] = False


def budget_reached() -> bool:
    """After ``tuner.fit()``: whether the sweep's time budget stopped it."""
    return _stopped["by_budget"]
