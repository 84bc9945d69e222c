"""Search-space files for sweeps: parse, validate (before Ray starts), and turn into Ray Tune's param space.

A space file is a yaml mapping with three top-level keys (only ``space`` is required)::

    space:                                   # one entry per config key to sweep
      rd_weight: {type: loguniform, low: 0.01, high: 1.0}
      gamma_p:   {type: uniform, low: 0.0, high: 1.0}
      rd_topk:   {type: choice, values: [5, 10, 20]}
      rd_beta:   {type: grid, values: [0.5, 1.0]}          # every value is run (times num_samples)
      n_layers:  {type: randint, low: 1, high: 4}          # integers low .. high-1 (Ray's convention)
    search:                                  # all optional; command-line options override them
      alg: random                            # random | grid | optuna | hyperopt
      num_samples: 8                         # trials (random/optuna/hyperopt); repeats of the grid (grids)
                                             #   ~ = 1 when every entry is a grid (or alg: grid), else 8
      max_concurrent: 2                      # trials running at once (~ = as many as resources allow)
      metric: ndcg@10                        # validation metric to optimise (~ = the config's valid_metric)
      mode: max                              # max | min (~ = from valid_metric_bigger)
      scheduler: asha                        # asha (stops bad trials early) | fifo (runs every trial out)
      grace_period: 1                        # asha: evaluations every trial gets before it can be stopped
      reduction_factor: 2                    # asha: keep 1/reduction_factor of the trials at each rung
      max_t: ~                               # asha: stop every trial after this many evaluations (~ = never:
                                             #   trials train out their epochs unless ASHA stops them)
      seed: ~                                # sampling seed (~ = the config's seed)
      seeds: ~                               # e.g. [2020, 2021, 2022]: every trial trains its values once per
                                             #   seed and is compared on the mean of their best validation
                                             #   metric; the best trial's test split is read once per seed
                                             #   (~ = one run per trial, with the config's seed)
      time_budget: ~                         # e.g. 2h, 45m, 900 (seconds): when it runs out Ray stops every
                                             #   trial, and the best is chosen among the trials that finished
                                             #   (with seeds: finished every seed) (~ = no limit)
    resources:
      cpu: 1                                 # CPUs per trial
      gpu: ~                                 # GPUs per trial, fractions allowed (~ = 1 if CUDA is available, else 0)
      embedded_cpus: ~                       # CPUs of the embedded local Ray (~ = all); ignored with --ray-address

Every mistake is reported before Ray starts, naming the entry: ``space.rd_weight: loguniform needs low > 0,
got 0``. Swept keys must be defined by some property file (or the user's own config) for the model: a key
nothing reads would make the whole sweep a no-op, so it is an error, not a warning (see ``check_keys``).
"""
import difflib
import importlib.util
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Union

import yaml

from recbole_llmkd.errors import RecboleLLMKDError

SPACE_TYPES = ("choice", "grid", "uniform", "loguniform", "randint")
SEARCH_ALGS = ("random", "grid", "optuna", "hyperopt")
SCHEDULERS = ("asha", "fifo")
TOP_LEVEL_KEYS = ("space", "search", "resources")
SEARCH_KEYS = (
    "alg", "num_samples", "max_concurrent", "metric", "mode", "scheduler", "grace_period", "reduction_factor",
    "max_t", "seed", "seeds", "time_budget",
)
RESOURCE_KEYS = ("cpu", "gpu", "embedded_cpus")
# The pip package each optional search algorithm needs (Ray's integration imports it).
ALG_PACKAGES = {"optuna": "optuna", "hyperopt": "hyperopt"}


class SpaceError(RecboleLLMKDError, ValueError):
    """A search-space file (or a sweep option) that cannot be turned into a sweep; names the bad entry."""


@dataclass
class ParamSpec:
    """One swept config key: its distribution and bounds or values."""

    key: str
    type: str
    values: Optional[List[Any]] = None
    low: Optional[float] = None
    high: Optional[float] = None

    @property
    def numeric(self) -> bool:
        """Whether the values are numbers (and so can be plotted on an axis)."""
        if self.values is None:
            return True
        return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in self.values)

    @property
    def log_scale(self) -> bool:
        if self.type == "loguniform":
            return True
        if self.values and self.numeric and all(v > 0 for v in self.values):
            return max(self.values) / min(self.values) >= 100
        return False

    def to_tune(self, alg: str):
        """The Ray Tune domain for this entry (``choice`` becomes a grid under ``alg: grid``)."""
        from ray import tune

        if self.type == "grid" or (self.type == "choice" and alg == "grid"):
            return tune.grid_search(list(self.values))
        if self.type == "choice":
            return tune.choice(list(self.values))
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(int(self.low), int(self.high))


@dataclass
class SweepSpec:
    """A validated space file plus the search and resource settings (command-line overrides applied)."""

    params: Dict[str, ParamSpec]
    alg: str = "random"
    num_samples: Optional[int] = None
    max_concurrent: Optional[int] = None
    metric: Optional[str] = None
    mode: Optional[str] = None
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2
    max_t: Optional[int] = None
    seed: Optional[int] = None
    seeds: Optional[List[int]] = None  # the run seeds every trial trains with (None: one run, the config's seed)
    time_budget_s: Optional[float] = None  # wall-clock seconds the sweep may run (None: no limit)
    cpu: float = 1.0
    gpu: Optional[float] = None
    embedded_cpus: Optional[int] = None
    source: str = "<dict>"
    raw: Dict[str, Any] = field(default_factory=dict)  # the space file's mapping (saved for resume)

    def param_space(self) -> Dict[str, Any]:
        return {key: spec.to_tune(self.alg) for key, spec in self.params.items()}

    def trials_per_sample(self) -> int:
        """How many trials one sample makes: the product of the grid sizes (1 without grids)."""
        n = 1
        for spec in self.params.values():
            if spec.type == "grid" or (spec.type == "choice" and self.alg == "grid"):
                n *= len(spec.values)
        return n


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _parse_entry(where: str, key: str, entry) -> ParamSpec:
    if not isinstance(entry, dict):
        raise SpaceError(
            f"{where}: must be a mapping like {{type: choice, values: [...]}}, got {type(entry).__name__} {entry!r}"
        )
    kind = entry.get("type")
    if kind is None:
        raise SpaceError(f"{where}: missing 'type' (one of {', '.join(SPACE_TYPES)})")
    if kind not in SPACE_TYPES:
        close = difflib.get_close_matches(str(kind), SPACE_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SpaceError(f"{where}: unknown type '{kind}'{hint}; use one of {', '.join(SPACE_TYPES)}")
    if kind in ("choice", "grid"):
        allowed = {"type", "values"}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise SpaceError(f"{where}: {kind} takes only 'values', got unknown field(s) {', '.join(unknown)}")
        values = entry.get("values")
        if not isinstance(values, list):
            raise SpaceError(f"{where}: {kind} needs 'values: [...]' (a list), got {values!r}")
        if not values:
            raise SpaceError(f"{where}: {kind} needs at least one value, got an empty list")
        return ParamSpec(key, kind, values=list(values))
    unknown = sorted(set(entry) - {"type", "low", "high"})
    if unknown:
        raise SpaceError(f"{where}: {kind} takes 'low' and 'high', got unknown field(s) {', '.join(unknown)}")
    for bound in ("low", "high"):
        if bound not in entry:
            raise SpaceError(f"{where}: {kind} needs '{bound}'")
        if not _is_number(entry[bound]):
            raise SpaceError(f"{where}: {kind} needs a finite number for '{bound}', got {entry[bound]!r}")
    low, high = entry["low"], entry["high"]
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{where}: randint needs integer bounds, got low={low}, high={high}")
    if low >= high:
        raise SpaceError(f"{where}: {kind} needs low < high, got low={low}, high={high}")
    return ParamSpec(key, kind, low=low, high=high)


def _positive_int(where: str, value, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SpaceError(f"{where}: needs a whole number >= 1, got {value!r}")
    return int(value)


def _non_negative(where: str, value, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if not _is_number(value) or value < 0:
        raise SpaceError(f"{where}: needs a number >= 0, got {value!r}")
    return float(value)


def parse_run_seeds(where: str, value) -> Optional[List[int]]:
    """``search.seeds``: None, or a non-empty list of distinct integers (a comma-separated string from the CLI)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise SpaceError(
                f"{where}: needs integers separated by commas, e.g. 2020,2021,2022, got {value!r}"
            ) from None
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in value)
    ):
        raise SpaceError(f"{where}: needs a non-empty list of integer seeds, e.g. [2020, 2021, 2022], got {value!r}")
    if len(set(value)) != len(value):
        raise SpaceError(f"{where}: a seed is listed twice in {value}; each seed is one run of every trial")
    return [int(s) for s in value]


TIME_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_time_budget(where: str, value) -> Optional[float]:
    """``search.time_budget`` / ``--time-budget``: None, seconds (a number > 0), or a string such as ``90s``,
    ``45m``, ``1.5h``; returns seconds."""
    if value is None:
        return None
    seconds = float(value) if _is_number(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        unit = text[-1:] if text[-1:] in TIME_UNITS else ""
        try:
            seconds = float(text[: len(text) - len(unit)]) * TIME_UNITS.get(unit, 1)
        except ValueError:
            pass
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise SpaceError(f"{where}: needs a duration > 0: seconds, or a number with s, m or h (e.g. 45m, 2h), "
                         f"got {value!r}")
    return seconds


def parse_space(content: dict, source: str = "<dict>", overrides: Optional[Dict[str, Any]] = None) -> SweepSpec:
    """Validate a space mapping; ``overrides`` (command-line options, None = not given) win over the file."""
    prefix = f"{source}: " if source != "<dict>" else ""
    if not isinstance(content, dict):
        raise SpaceError(
            f"{prefix}a space file must be a mapping with a 'space:' section, got {type(content).__name__}"
        )
    unknown = sorted(set(content) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SpaceError(f"{prefix}unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    space = content.get("space")
    if not isinstance(space, dict) or not space:
        raise SpaceError(f"{prefix}'space:' must map at least one config key to a distribution, got {space!r}")
    params = {str(key): _parse_entry(f"{prefix}space.{key}", str(key), entry) for key, entry in space.items()}

    search = content.get("search") or {}
    if not isinstance(search, dict):
        raise SpaceError(f"{prefix}'search:' must be a mapping, got {search!r}")
    resources = content.get("resources") or {}
    if not isinstance(resources, dict):
        raise SpaceError(f"{prefix}'resources:' must be a mapping, got {resources!r}")
    for section, given, allowed in (("search", search, SEARCH_KEYS), ("resources", resources, RESOURCE_KEYS)):
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise SpaceError(f"{prefix}{section}: unknown key(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
    merged = {**search, **resources}
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value

    alg = merged.get("alg", "random")
    if alg not in SEARCH_ALGS:
        raise SpaceError(f"{prefix}search.alg: unknown '{alg}'; use one of {', '.join(SEARCH_ALGS)}")
    scheduler = merged.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise SpaceError(f"{prefix}search.scheduler: unknown '{scheduler}'; use one of {', '.join(SCHEDULERS)}")
    mode = merged.get("mode")
    if mode not in (None, "max", "min"):
        raise SpaceError(f"{prefix}search.mode: must be max or min, got {mode!r}")
    metric = merged.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise SpaceError(f"{prefix}search.metric: must be a metric name such as ndcg@10, got {metric!r}")
    reduction = merged.get("reduction_factor", 2)
    if not _is_number(reduction) or reduction <= 1:
        raise SpaceError(f"{prefix}search.reduction_factor: needs a number > 1, got {reduction!r}")
    seed = merged.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise SpaceError(f"{prefix}search.seed: needs an integer, got {seed!r}")
    seeds = parse_run_seeds(f"{prefix}search.seeds", merged.get("seeds"))
    if seeds is not None and "seed" in params:
        raise SpaceError(f"{prefix}space.seed: the seed is swept and search.seeds is set; keep one of them")
    cpu = _non_negative(f"{prefix}resources.cpu", merged.get("cpu", 1), allow_none=False)
    if cpu <= 0:
        raise SpaceError(f"{prefix}resources.cpu: needs a number > 0, got {cpu}")

    spec = SweepSpec(
        params=params,
        alg=alg,
        num_samples=_positive_int(f"{prefix}search.num_samples", merged.get("num_samples")),
        max_concurrent=_positive_int(f"{prefix}search.max_concurrent", merged.get("max_concurrent")),
        metric=metric.lower() if metric else None,
        mode=mode,
        scheduler=scheduler,
        grace_period=_positive_int(f"{prefix}search.grace_period", merged.get("grace_period", 1), allow_none=False),
        reduction_factor=float(reduction),
        max_t=_positive_int(f"{prefix}search.max_t", merged.get("max_t")),
        seed=None if seed is None else int(seed),
        seeds=seeds,
        time_budget_s=parse_time_budget(f"{prefix}search.time_budget", merged.get("time_budget")),
        cpu=cpu,
        gpu=_non_negative(f"{prefix}resources.gpu", merged.get("gpu")),
        embedded_cpus=_positive_int(f"{prefix}resources.embedded_cpus", merged.get("embedded_cpus")),
        source=source,
        raw=content,
    )
    _check_alg(spec, prefix)
    return spec


def _check_alg(spec: SweepSpec, prefix: str) -> None:
    if spec.alg == "grid":
        continuous = [k for k, p in spec.params.items() if p.type not in ("grid", "choice")]
        if continuous:
            raise SpaceError(
                f"{prefix}space.{continuous[0]}: search.alg grid needs a finite set of values "
                f"(type grid or choice), got {spec.params[continuous[0]].type}"
            )
    if spec.alg in ALG_PACKAGES:
        grids = [k for k, p in spec.params.items() if p.type == "grid"]
        if grids:
            raise SpaceError(
                f"{prefix}space.{grids[0]}: type grid is not supported by search.alg {spec.alg}; use choice"
            )
        package = ALG_PACKAGES[spec.alg]
        if importlib.util.find_spec(package) is None:
            raise SpaceError(
                f"{prefix}search.alg {spec.alg} needs the '{package}' package, which is not installed: "
                f"pip install {package} (or use search.alg random or grid)"
            )


def shipped_spaces() -> Dict[str, str]:
    """The space files shipped in ``properties/sweeps/``, by name (``dllm2rec``, ``slmrec``, ...)."""
    from recbole_llmkd.config import properties_dir

    folder = os.path.join(properties_dir(), "sweeps")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []
    return {name[: -len(".yaml")]: os.path.join(folder, name) for name in names}


def resolve_space_path(space: Union[str, os.PathLike]) -> str:
    """A space file path, or the bare name of a shipped space (``--tune=dllm2rec``)."""
    path = os.path.abspath(os.fspath(space))
    if os.path.isfile(path):
        return path
    shipped = shipped_spaces()
    name = os.fspath(space)
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]
    if name in shipped:
        return shipped[name]
    raise SpaceError(
        f"search-space file not found: {path} (shipped spaces, usable by name: {', '.join(shipped) or 'none'})"
    )


def load_space(space: Union[str, os.PathLike, dict], overrides: Optional[Dict[str, Any]] = None) -> SweepSpec:
    """Read and validate a space file (a path) or mapping; raises SpaceError naming the bad entry."""
    if isinstance(space, dict):
        return parse_space(space, "<dict>", overrides)
    from recbole_llmkd.config import ConfigFileError, load_yaml_file

    path = resolve_space_path(space)

    try:
        content = load_yaml_file(path, yaml.FullLoader)
    except ConfigFileError as err:
        raise SpaceError(str(err)) from None
    return parse_space(content, path, overrides)


def check_keys(spec: SweepSpec, known_keys: Iterable[str], model_name: str) -> None:
    """Every swept key must be one the run's config defines (a property file, RecBole, or the user's config).

    An error rather than a warning: a misspelt key is read by nothing, so every trial would be the same run.
    """
    known = set(known_keys)
    prefix = f"{spec.source}: " if spec.source != "<dict>" else ""
    for key in spec.params:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.7)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SpaceError(
                f"{prefix}space.{key}: no property file defines '{key}' for model {model_name}{hint}; "
                f"a key nothing reads would make every trial the same run"
            )
