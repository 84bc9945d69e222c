"""Ray Tune sweeps over the distillation weights (or any config key of any model).

- ``space.py``: the search-space yaml (``load_space`` -> ``SweepSpec``), validated before Ray starts.
- ``sweep.py``: ``run_sweep`` (driver: Ray embedded or ``ray_address``, trials, tables, plot, best trial's
  test metrics read once, resume) and ``sweep_trainable`` (one trial, validation reported every epoch).
- ``budget.py``: the sweep's time budget (Ray's ``TimeoutStopper``, telling the driver that it stopped the sweep).
"""
from recbole_llmkd.tune.space import SpaceError, SweepSpec, load_space  # noqa: F401
from recbole_llmkd.tune.sweep import SweepError, run_sweep, sweep_trainable  # noqa: F401
