"""Ray Tune sweeps over any RecBole or plugin model: validation-only trials, test read once for the best.

``run_sweep(model, dataset, space_file, ...)`` (and ``run_recbole_llmkd.py --tune=SPACE.yaml``):

1. validates the space file and the swept keys against the model's config, before Ray starts;
2. starts Ray embedded in the process (``ray.init`` on this machine), or joins a cluster with
   ``ray_address`` (``HOST:PORT`` or ``auto``; a dead address is refused before anything is written); a Ray
   already initialised in the process is reused;
3. runs one trial per sampled configuration: ``sweep_trainable`` builds ``recbole_llmkd.config.Config``
   with the driver's command-line keys plus the trial's values (never ``sys.argv``), trains with the
   plugin's trainer and reports the validation metrics after **every** evaluation (``Trainer.fit``'s
   ``callback_fn`` -> ``tune.report``), so ASHA can stop bad trials early; trials never see test data;
4. picks the best trial on validation, rebuilds its data and model in the driver, loads its best
   checkpoint and evaluates the test split **once**;
5. writes, under the sweep directory (``--run_dir`` or ``runs/sweep-<model>-<dataset>-<time>``):
   ``trials.csv`` and ``trials.md`` (every trial: values, best validation metric, epochs run, status and
   error), ``metric_vs_params.png``, ``best.json``, ``sweep.json`` (what resume needs), ``run.log``, and
   Ray's experiment folder ``trials/`` (one folder per trial holding its RecBole run under ``run/``).

Seeds per trial (``search.seeds`` / ``--trial-seeds``): a trial trains its values once per seed, each run in
``trials/<trial>/run/seed-<seed>/``, and reports after each seed the mean, over the seeds done, of each seed's best
validation result (ASHA's rungs then count seeds). Trials are compared on that mean over all their seeds (one
seed's validation score is too noisy to choose on, RESULTS.md); the best trial's test split is read once per seed,
and ``best.json`` gives the mean, the std and each seed's result. A seed's run writes ``seed_summary.json`` as its
last act, so a resumed trial trains only the seeds it had not finished.

Paths: every relative path the run's config names (``data_path``, config files, and any string value
naming an existing file or folder, e.g. a teacher artifact file) is made absolute in the driver, so
trials find them from Ray's per-trial working directories; the files are shared, never copied.

Fault tolerance: a trial that raises is recorded (status ERROR and its error) and the sweep goes on
(``FailureConfig(max_failures=0, fail_fast=False)``). An interrupted sweep (Ctrl-C, a killed driver) is
resumed with ``resume=True`` / ``--resume`` and the same ``--run_dir``: ``Tuner.restore`` reruns the trials
Ray's saved state calls unfinished, finished and errored ones keep their results. A resumed sweep never
retrains a trial that finished, even when Ray's state lags behind it (Ctrl-C between the trial's last report
and Ray processing its end leaves it RUNNING in the state file, read back as PENDING): a trial's last act is
to write ``trial_summary.json`` atomically (temporary file, then ``os.replace``) into its folder, and a trial
that starts (Ray keeps its folder name on restore) and finds a complete summary for its own values there
(``finished_trial_summary``: it parses, its ``params`` equal the trial's, its checkpoint file exists)
reports that finished result once (best validation result, last epoch, checkpoint) and returns: its summary,
checkpoint and ``run/run.log`` stay as they were (Ray's ``progress.csv`` gets that one report; after a resume in
a new process it holds only that one, the per-epoch history stays in ``run/run.log``). It looks in Ray's
staging folder (``get_trial_dir()``, which a resume in the same Ray session reuses) and in the sweep
directory's copy (``trials/<trial folder>``, the only one a resume in a new process sees: Ray stages under
its session's temporary folder). A summary that is missing, half-written, unreadable or for other values
means "not finished": the trial trains from the start.
Resuming is explicit: starting a sweep in a directory that already holds one is an error, so two sweeps
never mix.

Time budget (``search.time_budget`` / ``time_budget``, ``budget.py``): Ray's ``TimeoutStopper`` stops every trial
when it runs out; the sweep then ends as a finished one, choosing among the trials that can be chosen (``_choosable``)
and reading the best one's test split once; ``best.json`` says the budget was reached. A trial the budget stopped
is not chosen (its checkpoint can be newer than its last report). When no trial finished, the sweep stops with an
error and leaves ``time_budget_spent.json``, which makes a resume an error too (Ray's saved state has every trial
stopped: a resume would run nothing). Ray saves the stopper, with what is left of the budget, in the experiment's
state: a sweep stopped by Ctrl-C and resumed runs for about the rest.
"""
import json
import logging
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from logging import getLogger
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from recbole_llmkd.errors import Interrupted, RecboleLLMKDError
from recbole_llmkd.trainer.selection import valid_smoothing
from recbole_llmkd.tune.space import SpaceError, SweepSpec, check_keys, load_space

EXPERIMENT_NAME = "trials"
BUDGET_SPENT = "time_budget_spent.json"  # the time budget ran out before any trial finished: nothing to resume
TRIAL_RUN_SUBDIR = "run"
TRIAL_SUMMARY = "trial_summary.json"
SEED_SUMMARY = "seed_summary.json"  # a seed's run of a trial (search.seeds) finished: in run/seed-<seed>/
# keys each trial sets itself; the driver's values for them are not passed on.
_TRIAL_OWNED_KEYS = ("run_dir", "checkpoint_dir", "gpu_id", "data_path")


class SweepError(RecboleLLMKDError, RuntimeError):
    """A sweep that cannot start, resume or produce a result (every trial failed, ...)."""


class SweepInterrupted(SweepError, Interrupted):
    """The sweep stopped before every trial finished (Ctrl-C); ``resume=True`` continues it."""


@dataclass
class SweepSetup:
    """What every trial needs to rebuild the run's config; picklable, saved as ``sweep.json``."""

    model: str
    dataset: str
    config_file_list: List[str]  # absolute paths
    config_dict: Dict[str, Any]  # the user's config dict with relative paths made absolute
    cmd_args: Dict[str, str]  # the driver's --key=value, minus the swept and trial-owned keys
    data_path: str  # absolute folder holding <dataset>/
    metric: str  # lower-case result key, e.g. "ndcg@10"
    mode: str  # "max" | "min"
    swept_keys: List[str]
    seeds: Optional[List[int]] = None  # search.seeds: every trial trains once per seed (None: one run)

    def trial_config(self, params: Dict[str, Any], run_dir: str, gpu_id: str):
        """The trial's Config: the driver's inputs, then the trial's values (they win), then its own paths."""
        from recbole_llmkd.config import Config

        config_dict = {
            **self.config_dict,
            **params,
            "data_path": self.data_path,
            "run_dir": run_dir,
            "checkpoint_dir": run_dir,
            "gpu_id": gpu_id,
        }
        return Config(_resolve_model(self.model), self.dataset, self.config_file_list, config_dict, self.cmd_args)


# ----- trial side ---------------------------------------------------------------------------------
class _ValidResultRecorder:
    """Trainer mixin: keeps the full result of the latest validation (``fit``'s callback only gets the score)."""

    last_valid_result: Optional[dict] = None

    def _valid_epoch(self, *args, **kwargs):
        valid_score, valid_result = super()._valid_epoch(*args, **kwargs)
        self.last_valid_result = valid_result
        return valid_score, valid_result


def recording_trainer(trainer_class: type) -> type:
    return type(trainer_class.__name__, (_ValidResultRecorder, trainer_class), {"__module__": trainer_class.__module__})


def _float_dict(result) -> Dict[str, float]:
    return {str(k): float(v) for k, v in (result or {}).items()}


def _trial_gpu_id() -> str:
    """The GPUs Ray gave this trial, as RecBole's ``gpu_id`` ('' = CPU; Config sets CUDA_VISIBLE_DEVICES)."""
    import ray

    return ",".join(str(g) for g in ray.get_gpu_ids())


def _json_value(value):
    """``json.dump``'s fallback: numpy scalars (Ray's sampled values) -> Python numbers, anything else -> str."""
    return value.item() if hasattr(value, "item") else str(value)


def _as_json(value):
    """``value`` as it reads back from a JSON file (numpy scalars -> numbers, tuples -> lists)."""
    return json.loads(json.dumps(value, default=_json_value))


def write_json_atomic(path: str, content) -> None:
    """Write ``content`` as JSON so that ``path`` never holds a half-written file: a temporary file in the same
    folder, flushed to disk, then ``os.replace`` (atomic on POSIX and Windows)."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as f:
            json.dump(content, f, indent=2, default=_json_value)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read_summary(trial_dir: str, summary_file: str = TRIAL_SUMMARY) -> Optional[dict]:
    """The trial's ``trial_summary.json`` (or another summary file under it), or None when it is missing or cannot
    be parsed (a torn copy)."""
    try:
        with open(os.path.join(trial_dir, summary_file), "r", encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finished_trial_summary(
    params: Dict[str, Any], trial_dirs: Iterable[Optional[str]], seeds: Optional[List[int]] = None,
    summary_file: str = TRIAL_SUMMARY,
) -> Optional[Tuple[dict, str]]:
    """``(summary, checkpoint)`` when one of ``trial_dirs`` holds the summary of a finished run of this trial, else None.

    Finished means: ``summary_file`` parses, has every field a finished trial writes, its ``params`` equal
    ``params`` (as JSON reads them back), its ``seeds`` equal ``seeds`` (search.seeds; a seed's own summary
    holds its one seed), and its checkpoint resolves to an existing file (``_stored_checkpoint``: a path relative
    to that folder, else the copy in its ``run/``, else the path as written). Anything else (no file, a
    half-written or unreadable one, another trial's values or seeds, a checkpoint that is gone) means the trial
    (or that seed's run) must train.
    """
    expected = _as_json(params)
    for trial_dir in trial_dirs:
        if not trial_dir:
            continue
        summary = _read_summary(trial_dir, summary_file)
        if summary is None or summary.get("params") != expected or summary.get("seeds") != seeds:
            continue
        result = summary.get("best_valid_result")
        if not (
            _is_number(summary.get("best_valid_score"))
            and isinstance(result, dict)
            and all(_is_number(v) for v in result.values())
            and isinstance(summary.get("epochs_run"), int)
            and isinstance(summary.get("last_epoch", 0), int)
            and isinstance(summary.get("checkpoint"), str)
        ):
            continue
        checkpoint = _stored_checkpoint(trial_dir, summary["checkpoint"])
        if checkpoint and os.path.isfile(checkpoint):
            return summary, checkpoint
    return None


def finished_trial_report(summary: dict, checkpoint: str) -> Dict[str, Any]:
    """What a trial that finished reported last, from its summary (the same keys as ``sweep_trainable``'s
    reports): its best validation result, scores, last evaluated epoch and best checkpoint; with search.seeds the
    means over its seeds and how many seeds it trained."""
    best_valid_score = float(summary["best_valid_score"])
    report = {
        **_float_dict(summary["best_valid_result"]),
        "valid_score": best_valid_score,
        "best_valid_score": best_valid_score,
        # summaries written before "last_epoch" existed: RecBole evaluates after the last epoch it trains
        "epoch": int(summary.get("last_epoch", summary["epochs_run"] - 1)),
        "checkpoint": checkpoint,
    }
    if summary.get("seeds") is not None:
        report.update(seeds_done=len(summary["seeds"]), epochs_run=int(summary["epochs_run"]))
    return report


def seed_run_subdir(seed: int) -> str:
    """Where a trial's run with one of search.seeds lives, relative to the trial's folder."""
    return os.path.join(TRIAL_RUN_SUBDIR, f"seed-{seed}")


def _shared_keys(results: List[Dict[str, float]]) -> List[str]:
    return sorted(set.intersection(*(set(r) for r in results))) if results else []


def _mean_result(results: List[Dict[str, float]]) -> Dict[str, float]:
    """Key by key mean of result dicts (the keys every one of them has)."""
    return {k: float(statistics.fmean(r[k] for r in results)) for k in _shared_keys(results)}


def _seed_std(values: List[float]) -> float:
    """Sample standard deviation over seeds (ddof 1; 0 for a single seed)."""
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def _std_result(results: List[Dict[str, float]]) -> Dict[str, float]:
    """Key by key ``_seed_std`` of result dicts (the keys every one of them has)."""
    return {k: _seed_std([r[k] for r in results]) for k in _shared_keys(results)}


def _train_trial_run(setup: "SweepSetup", params: Dict[str, Any], run_dir: str, on_evaluation=None) -> dict:
    """Train one RecBole run of the trial's values into ``run_dir`` (validation only; the test split is never
    touched); ``on_evaluation(epoch, valid_score, trainer)`` after every evaluation. Returns the run's summary
    fields: best validation score and result, epochs run, last evaluated epoch, best checkpoint, training time."""
    from ray import tune

    from recbole_llmkd.registry import get_trainer
    from recbole_llmkd.run import prepare, start_run_dir

    config = setup.trial_config(params, run_dir, _trial_gpu_id())
    start_run_dir(config)
    logger = getLogger()
    logger.info(f"sweep trial {tune.get_context().get_trial_id()}: {params}")
    logger.info(config)

    run = prepare(config, trainer_class=recording_trainer(get_trainer(config["MODEL_TYPE"], config["model"])))
    trainer = run.trainer  # the test split (run.test_data) is never touched here
    evaluated_epochs: List[int] = []

    def callback(epoch_idx: int, valid_score: float) -> None:
        evaluated_epochs.append(int(epoch_idx))
        if on_evaluation is not None:
            on_evaluation(int(epoch_idx), float(valid_score), trainer)

    start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        run.train_data, run.valid_data, saved=True, show_progress=False, callback_fn=callback
    )
    epochs_run = len(trainer.train_loss_dict)
    return {
        "best_valid_score": float(best_valid_score),
        "best_valid_result": _float_dict(best_valid_result),
        "epochs_run": epochs_run,
        "last_epoch": evaluated_epochs[-1] if evaluated_epochs else epochs_run - 1,  # of the last evaluation
        "checkpoint": trainer.saved_model_file,
        "train_time_s": time.perf_counter() - start,
    }


def share_text_cache(experiment_path: Optional[str]) -> Optional[str]:
    """Without ``RECBOLE_LLMKD_CACHE`` set, a trial caches item-text vectors in ``<sweep dir>/cache``, so the
    sentence encoder runs once per sweep instead of once per trial (and seed); returns the cache folder in use."""
    from recbole_llmkd.llm.text_encoder import CACHE_ENV

    if experiment_path and not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = os.path.join(os.path.dirname(os.path.abspath(experiment_path)), "cache")
    return os.environ.get(CACHE_ENV)


def sweep_trainable(params: Dict[str, Any], setup: SweepSetup, experiment_path: Optional[str] = None) -> None:
    """One trial: train on the trial's values, report validation metrics after every evaluation.

    With ``setup.seeds`` (search.seeds) the trial trains its values once per seed (``_train_seeds``) and reports
    after each seed instead. A trial that already finished (a resumed sweep whose saved state still called it
    unfinished) is not trained again: it reports its finished result from its ``trial_summary.json`` and returns,
    touching no file. ``experiment_path`` (the sweep's ``trials/`` folder) is where Ray keeps the trial's files
    between runs; ``get_trial_dir()`` is Ray's staging folder of the current Ray session.
    """
    from ray import tune

    share_text_cache(experiment_path)
    trial_dir = tune.get_context().get_trial_dir()
    stored_dir = os.path.join(experiment_path, os.path.basename(trial_dir.rstrip("/"))) if experiment_path else None
    finished = finished_trial_summary(params, [trial_dir, stored_dir], setup.seeds)
    if finished is not None:
        summary, checkpoint = finished
        getLogger(__name__).info(
            f"sweep trial {tune.get_context().get_trial_id()}: finished in an earlier run ({TRIAL_SUMMARY}), "
            f"reporting its result without training"
        )
        tune.report(finished_trial_report(summary, checkpoint))
        return
    if setup.seeds is not None:
        summary = _train_seeds(params, setup, trial_dir, stored_dir)
    else:

        def report(epoch_idx: int, valid_score: float, trainer) -> None:
            tune.report(
                {
                    **_float_dict(trainer.last_valid_result),
                    "valid_score": valid_score,
                    "best_valid_score": float(trainer.best_valid_score),
                    "epoch": epoch_idx,
                    "checkpoint": trainer.saved_model_file,
                }
            )

        run_dir = os.path.join(trial_dir, TRIAL_RUN_SUBDIR)
        summary = {"params": params, **_train_trial_run(setup, params, run_dir, report)}
    # The trial's last act, atomic: a summary that exists is complete, and means "finished" to a resume.
    write_json_atomic(os.path.join(trial_dir, TRIAL_SUMMARY), summary)


def _train_seeds(params: Dict[str, Any], setup: SweepSetup, trial_dir: str, stored_dir: Optional[str]) -> dict:
    """search.seeds: train the trial's values once per seed, each run in ``run/seed-<seed>/``, in the order given.

    After each seed the trial reports the mean, over the seeds done so far, of each seed's best validation result
    (so ASHA's rungs count seeds: a trial is compared after its ``grace_period``-th seed). A seed's run writes
    ``seed_summary.json`` as its last act; a resumed trial reuses the seeds whose summary is complete (same values,
    same seed, checkpoint present) and trains the others. Returns the trial's summary: the means, the seeds'
    own results under ``per_seed``, checkpoints relative to the trial's folder.
    """
    from ray import tune

    per_seed: List[dict] = []
    for seed in setup.seeds:
        subdir = seed_run_subdir(seed)
        done = finished_trial_summary(params, [trial_dir, stored_dir], [seed], os.path.join(subdir, SEED_SUMMARY))
        if done is not None:
            record = done[0]
            getLogger(__name__).info(f"sweep trial {tune.get_context().get_trial_id()}: seed {seed} finished in an "
                                     "earlier run, reusing it")
        else:
            record = _train_trial_run(setup, {**params, "seed": seed}, os.path.join(trial_dir, subdir))
            record = {
                "params": params,
                "seeds": [seed],
                **record,
                "checkpoint": os.path.join(subdir, os.path.basename(record["checkpoint"])),
            }
            write_json_atomic(os.path.join(trial_dir, subdir, SEED_SUMMARY), record)
        per_seed.append({"seed": seed, **{k: v for k, v in record.items() if k not in ("params", "seeds")}})
        mean_result = _mean_result([r["best_valid_result"] for r in per_seed])
        mean_score = float(sum(r["best_valid_score"] for r in per_seed) / len(per_seed))
        epochs_run = int(sum(r["epochs_run"] for r in per_seed))
        tune.report(
            {
                **mean_result,
                "valid_score": mean_score,
                "best_valid_score": mean_score,
                "epoch": len(per_seed) - 1,
                "seeds_done": len(per_seed),
                "epochs_run": epochs_run,
                "checkpoint": record["checkpoint"],
            }
        )
    return {
        "params": params,
        "seeds": list(setup.seeds),
        "best_valid_score": mean_score,
        "best_valid_result": mean_result,
        "epochs_run": epochs_run,
        "last_epoch": len(per_seed) - 1,  # of the last report: one per seed
        "checkpoint": per_seed[0]["checkpoint"],
        "train_time_s": float(sum(r["train_time_s"] for r in per_seed)),
        "per_seed": per_seed,
    }


# ----- driver side --------------------------------------------------------------------------------
def _absolute_paths(values: Dict[str, Any]) -> Dict[str, Any]:
    """String values naming an existing relative file or folder -> absolute (trials run elsewhere)."""
    fixed = {}
    for key, value in values.items():
        if isinstance(value, str) and value and not os.path.isabs(value) and os.path.exists(value):
            fixed[key] = os.path.abspath(value)
    return fixed


def _model_name(model) -> str:
    return model if isinstance(model, str) else model.__name__


def prepare_setup(
    model, dataset: str, spec: SweepSpec, config_file_list=None, config_dict=None, cmd_args=None
):
    """Build the driver's Config, validate the swept keys, resolve metric/mode and absolute paths."""
    from recbole_llmkd.config import Config
    from recbole_llmkd.run import check_dataset_files

    config_file_list = [os.path.abspath(f) for f in (config_file_list or [])]
    config_dict = dict(config_dict or {})
    cmd_args = dict(cmd_args or {})
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    config.check_cmd_keys()  # a mistyped --key is an error before Ray starts
    check_keys(spec, config.known_keys() | set(config.final_config_dict), _model_name(model))
    check_dataset_files(config)

    metric = spec.metric or str(config["valid_metric"]).lower()
    mode = spec.mode or ("max" if config["valid_metric_bigger"] else "min")
    recorded = {m.lower() for m in config["metrics"]}
    topks = config["topk"] or []
    known_metrics = {f"{m}@{k}" for m in recorded for k in topks} | recorded
    if metric not in known_metrics:
        raise SpaceError(
            f"search.metric '{metric}' is not computed by this run (metrics {config['metrics']}, topk {topks}); "
            f"choose one of {', '.join(sorted(known_metrics))}"
        )
    if "valid_smoothing" in spec.params or valid_smoothing(config) > 1:
        raise SpaceError(
            "valid_smoothing > 1 is not supported in sweeps: trials are compared (and stopped by the scheduler) on "
            f"each evaluation's own {metric}, not on the mean early stopping would use; leave it at 1"
        )
    swept = set(spec.params) | ({"seed"} if spec.seeds is not None else set())
    for key in sorted(swept & set(cmd_args)):
        by = "search.seeds" if key == "seed" and key not in spec.params else "the space file"
        getLogger().warning(f"--{key}={cmd_args[key]} is swept by {by}; the trials' values win")
    trial_cmd_args = {k: v for k, v in cmd_args.items() if k not in swept and k not in _TRIAL_OWNED_KEYS}
    # relative paths anywhere in the user's inputs (files, dict, command line) -> absolute for the trials.
    external = dict(config.external_config_dict)
    absolute = _absolute_paths({k: v for k, v in external.items() if k not in _TRIAL_OWNED_KEYS and k not in swept})
    trial_cmd_args.update({k: v for k, v in absolute.items() if k in trial_cmd_args})
    trial_config_dict = {k: v for k, v in config_dict.items() if k not in _TRIAL_OWNED_KEYS and k not in swept}
    trial_config_dict.update({k: v for k, v in absolute.items() if k not in trial_cmd_args})
    data_path = os.path.dirname(os.path.abspath(config["data_path"]))
    setup = SweepSetup(
        model=model if isinstance(model, str) else f"{model.__module__}:{model.__qualname__}",
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=trial_config_dict,
        cmd_args=trial_cmd_args,
        data_path=data_path,
        metric=metric,
        mode=mode,
        swept_keys=list(spec.params),
        seeds=spec.seeds,
    )
    return config, setup


def _resolve_model(model: str):
    """A model saved as 'module:Class' (a class given to run_sweep) back to the class; names stay names."""
    if ":" in model:
        import importlib

        module_path, attr = model.split(":")
        return getattr(importlib.import_module(module_path), attr)
    return model


def _trial_resources(spec: SweepSpec, embedded: bool) -> Dict[str, float]:
    import torch

    gpu = spec.gpu
    if gpu is None:
        gpu = 1.0 if torch.cuda.is_available() else 0.0
    elif gpu > 0 and embedded and not torch.cuda.is_available():
        raise SpaceError(
            f"resources.gpu: {gpu} GPU(s) per trial asked, but this machine has no CUDA device "
            f"(trials would never be scheduled); use --gpus-per-trial=0 or --ray-address to a GPU cluster"
        )
    return {"cpu": spec.cpu, "gpu": gpu}


def _search_alg(spec: SweepSpec, metric: str, mode: str, seed: Optional[int]):
    if spec.alg in ("random", "grid"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Ray ignores TuneConfig(max_concurrent_trials) for this generator (it only wraps Searchers): it takes its own.
        return BasicVariantGenerator(random_state=seed, max_concurrent=spec.max_concurrent or 0)
    if spec.alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=seed)


def _scheduler(spec: SweepSpec, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max(max_t, spec.grace_period),
        grace_period=spec.grace_period,
        reduction_factor=spec.reduction_factor,
    )


def _evaluations(config) -> int:
    """How many validation reports a trial that trains out makes (one per ``eval_step`` epochs)."""
    eval_step = int(config["eval_step"] or 1)
    return max(1, int(config["epochs"]) // eval_step) if eval_step > 0 else 1


def _num_samples(spec: SweepSpec) -> int:
    """``num_samples`` as given, else 1 for a pure grid (each combination once), else 8."""
    if spec.num_samples:
        return spec.num_samples
    pure_grid = spec.alg == "grid" or all(p.type == "grid" for p in spec.params.values())
    return 1 if pure_grid else 8


def _start_ray(ray_address: Optional[str], embedded_cpus: Optional[int]) -> bool:
    """Start (or join) Ray; returns whether this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        if ray_address:
            getLogger().warning(f"Ray is already initialised in this process; --ray-address={ray_address} is ignored")
        return False
    if ray_address:
        ray.init(address=ray_address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",  # always a new Ray inside this process, never a cluster `ray start` left running
            num_cpus=embedded_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    return True


def _last_line(error: Optional[BaseException]) -> str:
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _saved_trials(experiment_path: str) -> Dict[str, Any]:
    """Ray's Trial objects as saved in the experiment state, by trial folder name.

    Read back from disk on purpose: after an interruption the live trials are all marked TERMINATED by
    Ray's cleanup, while the saved state (what ``Tuner.restore`` resumes from) keeps PENDING/RUNNING.
    """
    from ray.tune import ExperimentAnalysis

    analysis_logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_logger.level
    analysis_logger.setLevel(logging.ERROR)  # it warns about every trial that has not reported yet
    try:
        analysis = ExperimentAnalysis(experiment_path)
    finally:
        analysis_logger.setLevel(level)
    return {os.path.basename(str(t.path).rstrip("/")): t for t in analysis.trials}


def _plain(value):
    """numpy scalars (Ray's sampled values) -> Python numbers, so best.json and the tables stay readable."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _stored_checkpoint(trial_dir: str, checkpoint: Optional[str]) -> Optional[str]:
    """Trials write into Ray's local staging folder, which Ray moves to the sweep directory when they end.

    A relative path (search.seeds' runs record theirs so) is relative to the trial's folder."""
    if not checkpoint:
        return None
    if not os.path.isabs(checkpoint):
        return os.path.join(trial_dir, checkpoint)
    stored = os.path.join(trial_dir, TRIAL_RUN_SUBDIR, os.path.basename(checkpoint))
    return stored if os.path.isfile(stored) else checkpoint


def _trial_rows(results, setup: SweepSetup, experiment_path: str) -> List[dict]:
    """One row per trial: its values, best validation metric, epochs run, status, error.

    status: TERMINATED (trained to its last epoch or RecBole's early stop), STOPPED (stopped early by the
    scheduler or the time budget), ERROR (raised; ``error`` holds the message), NO_RESULT (the time budget ran out
    before its first report; set by ``run_sweep``), or Ray's PENDING/RUNNING/PAUSED when the sweep was interrupted.
    """
    saved_trials = _saved_trials(experiment_path)
    rows = []
    for result in results:
        trial_dir = result.path
        folder = os.path.basename(trial_dir.rstrip("/"))
        trial = saved_trials.get(folder)
        trial_id = trial.trial_id if trial is not None else folder
        config = (trial.config if trial is not None else None) or result.config or {}
        summary = _read_summary(trial_dir)
        frame = result.metrics_dataframe
        reported = frame is not None and len(frame) > 0 and setup.metric in frame
        best_value, epochs_run, checkpoint, best_row = math.nan, 0, None, None
        if reported and setup.seeds is not None:  # one report per seed, each the mean over the seeds so far
            best_row = frame.iloc[-1]
            best_value = float(best_row[setup.metric])
            epochs_run = int(best_row["epochs_run"])
            checkpoint = best_row["checkpoint"]
        elif reported:
            values = frame[setup.metric].astype(float)
            best_index = values.idxmax() if setup.mode == "max" else values.idxmin()
            best_row = frame.loc[best_index]
            best_value = float(values.loc[best_index])
            epochs_run = int(frame["epoch"].max()) + 1
            checkpoint = frame["checkpoint"].iloc[-1]
        if summary is not None:
            epochs_run = summary["epochs_run"]
            checkpoint = summary["checkpoint"]
        seed_columns = {}
        if setup.seeds is not None:
            per_seed = (summary or {}).get("per_seed") or []
            seed_values = [r["best_valid_result"].get(setup.metric, math.nan) for r in per_seed]
            seed_columns = {
                "seeds_done": int(best_row["seeds_done"]) if best_row is not None else 0,
                f"std_{setup.metric}": _seed_std(seed_values) if seed_values else math.nan,
                "_per_seed": per_seed,
            }
        status = str(trial.status) if trial is not None else "TERMINATED"
        if result.error is not None:
            status = "ERROR"
        elif status == "TERMINATED" and summary is None:
            status = "STOPPED"
        valid_result = {}
        if best_row is not None:
            valid_result = {k: float(best_row[k]) for k in best_row.index if "@" in str(k)}
        rows.append(
            {
                "trial_id": trial_id,
                "status": status,
                **{key: _plain(config.get(key)) for key in setup.swept_keys},
                f"best_{setup.metric}": best_value,
                **seed_columns,
                "epochs_run": epochs_run,
                "error": _last_line(result.error),
                "trial_dir": os.path.join(EXPERIMENT_NAME, folder),
                "_valid_result": valid_result,
                "_checkpoint": _stored_checkpoint(trial_dir, checkpoint),
                "_trial_dir": trial_dir,
                "_reported": bool(reported),
                "_summary": summary is not None,
            }
        )
    rows.sort(key=lambda r: r["trial_id"])
    return rows


def _choosable(row: dict, setup: SweepSetup) -> bool:
    """A trial that can be chosen: it reported the metric and has a checkpoint, its best so far if ASHA stopped it
    (with seeds: of every seed, since trials are compared on the mean over all of them)."""
    if math.isnan(row[f"best_{setup.metric}"]) or not row["_checkpoint"]:
        return False
    return setup.seeds is None or len(row["_per_seed"]) == len(setup.seeds)


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def write_trial_tables(rows: List[dict], sweep_dir: str) -> None:
    import pandas as pd
    from tabulate import tabulate

    frame = pd.DataFrame([_public(r) for r in rows])
    frame.to_csv(os.path.join(sweep_dir, "trials.csv"), index=False)
    table = frame.drop(columns=["trial_dir"])
    table["error"] = table["error"].map(lambda e: (e[:200] + "...") if isinstance(e, str) and len(e) > 200 else e)
    with open(os.path.join(sweep_dir, "trials.md"), "w", encoding="utf-8") as f:
        f.write(tabulate(table.values.tolist(), headers=list(table.columns), tablefmt="github", floatfmt=".4g"))
        f.write("\n")


def plot_metric_vs_params(rows: List[dict], spec: SweepSpec, metric: str, path: str) -> Optional[str]:
    """One panel per numeric swept key: the trial's best validation metric against its value."""
    numeric = [key for key, p in spec.params.items() if p.numeric]
    if not numeric:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(numeric), figsize=(4 * len(numeric), 3.4), squeeze=False)
    column = f"best_{metric}"
    for ax, key in zip(axes[0], numeric):
        plotted = [r for r in rows if r[key] is not None and not math.isnan(r[column])]
        for label, color, keep in (("trained out", "tab:blue", True), ("stopped early", "tab:orange", False)):
            group = [r for r in plotted if (r["status"] == "TERMINATED") == keep]
            if group:
                ax.scatter([r[key] for r in group], [r[column] for r in group], color=color, label=label)
        if spec.params[key].log_scale:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"best valid {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    errors = sum(r["status"] == "ERROR" for r in rows)
    fig.suptitle(f"{len(rows)} trials" + (f", {errors} failed (not shown)" if errors else ""), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_best_on_test(setup: SweepSetup, params: Dict[str, Any], checkpoint: str, run_dir: str, gpu_id):
    """Rebuild the best trial's data and model in the driver (its run in ``run_dir``), load its best checkpoint,
    read test once."""
    from recbole_llmkd.run import prepare

    run = prepare(setup.trial_config(params, run_dir, gpu_id))
    test_result = run.trainer.evaluate(run.test_data, load_best_model=True, model_file=checkpoint, show_progress=False)
    return _float_dict(test_result)


def run_sweep(
    model,
    dataset: str,
    space: Union[str, os.PathLike, dict],
    config_file_list: Optional[Iterable[str]] = None,
    config_dict: Optional[dict] = None,
    cmd_args: Optional[Dict[str, str]] = None,
    *,
    ray_address: Optional[str] = None,
    num_samples: Optional[int] = None,
    max_concurrent: Optional[int] = None,
    cpus_per_trial: Optional[float] = None,
    gpus_per_trial: Optional[float] = None,
    search_alg: Optional[str] = None,
    trial_seeds: Optional[List[int]] = None,
    time_budget: Optional[Union[float, str]] = None,
    resume: bool = False,
    verbose: int = 1,
) -> dict:
    """Run (or resume) a sweep; returns ``best.json``'s content (best trial, its test metrics, paths).

    Command-line style overrides (``num_samples`` ... ``time_budget``) win over the space file's settings
    (``search.seeds``, ``search.time_budget``, ...).
    The sweep directory is ``run_dir`` from ``cmd_args``/``config_dict`` or ``runs/sweep-<model>-<dataset>-<time>``.
    """
    import torch
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner

    from recbole_llmkd.jobs.export_ray import check_ray_address
    from recbole_llmkd.run import init_run_logger, new_run_dir
    from recbole_llmkd.tune.budget import SweepTimeBudget, budget_reached, reset_budget_flag

    if ray_address:  # ray.init on a dead address retries for minutes; refuse it before the sweep writes anything
        check_ray_address(ray_address)
    cmd_args = dict(cmd_args or {})
    config_dict = dict(config_dict or {})
    overrides = {
        "num_samples": num_samples,
        "max_concurrent": max_concurrent,
        "cpu": cpus_per_trial,
        "gpu": gpus_per_trial,
        "alg": search_alg,
        "seeds": list(trial_seeds) if trial_seeds is not None else None,
        "time_budget": time_budget,
    }
    run_dir = cmd_args.get("run_dir") or config_dict.get("run_dir")
    sweep_dir = os.path.abspath(run_dir or new_run_dir(f"sweep-{_model_name(model)}-{dataset}"))
    experiment_path = os.path.join(sweep_dir, EXPERIMENT_NAME)
    setup_file = os.path.join(sweep_dir, "sweep.json")

    if resume:
        if os.path.isfile(os.path.join(sweep_dir, "best.json")):  # resuming would read the test split again
            raise SweepError(f"the sweep in {sweep_dir} has finished (best.json): nothing to resume")
        missing = [what for what, there in (("sweep.json", os.path.isfile(setup_file)),
                                            (f"Ray experiment {experiment_path}", Tuner.can_restore(experiment_path)))
                   if not there]
        if missing:
            raise SweepError(f"nothing to resume in {sweep_dir}: no {' and no '.join(missing)} (a sweep that stopped "
                             "before Ray saved its first state has nothing to resume): start it again without --resume")
        with open(setup_file, "r", encoding="utf-8") as f:
            saved = json.load(f)
        setup = SweepSetup(**saved["setup"])
        if trial_seeds is not None and list(trial_seeds) != setup.seeds:
            raise SweepError(f"the sweep in {sweep_dir} was started with search.seeds {setup.seeds}; resume it "
                             f"without --trial-seeds (or with the same seeds), got {list(trial_seeds)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        spec = load_space(saved["space"], overrides={**saved["overrides"], **given})
        spec.source = saved.get("space_source", "<dict>")
        saved_budget = load_space(saved["space"], overrides=saved["overrides"]).time_budget_s
        if spec.time_budget_s != saved_budget:
            started_with = f"a time budget of {saved_budget:g} s" if saved_budget else "no time budget"
            raise SweepError(f"the sweep in {sweep_dir} was started with {started_with}, which Ray keeps with the "
                             "sweep (a resume runs for what is left of it): resume it without --time-budget")
        if os.path.isfile(os.path.join(sweep_dir, BUDGET_SPENT)):  # Ray's state: every trial stopped, no new ones
            raise SweepError(f"the sweep in {sweep_dir} ran out of its time budget before any trial finished "
                             f"({BUDGET_SPENT}); a resume would not restart the stopped trials: start a new sweep "
                             "with a larger --time-budget")
    else:
        # a sweep.json alone is a sweep that stopped before Ray saved anything (e.g. refused below): nothing to keep
        if Tuner.can_restore(experiment_path):
            raise SweepError(
                f"{sweep_dir} already holds a sweep: pass --resume to continue it, or choose another --run_dir"
            )
        if os.path.exists(experiment_path):  # Ray made it and stopped before saving any state: nothing to resume
            raise SweepError(f"{experiment_path} holds no saved Ray state (the sweep stopped while it started): delete "
                             "it and run the sweep again, or choose another --run_dir")
        spec = load_space(space, overrides)
        _trial_resources(spec, embedded=not ray_address)  # checked before the sweep directory is written
        if os.path.isfile(os.path.join(sweep_dir, BUDGET_SPENT)):  # left by an earlier sweep whose trials/ was deleted
            os.remove(os.path.join(sweep_dir, BUDGET_SPENT))
        driver_config, setup = prepare_setup(model, dataset, spec, config_file_list, config_dict, cmd_args)
        os.makedirs(sweep_dir, exist_ok=True)
        with open(setup_file, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "setup": asdict(setup),
                    "space": spec.raw,
                    "space_source": spec.source,
                    "overrides": {k: v for k, v in overrides.items() if v is not None},
                    # default: one past the run's last evaluation, so a trial that trains out ends on its own
                    # (with search.seeds: one report per seed)
                    "max_t": spec.max_t or (len(spec.seeds) if spec.seeds else _evaluations(driver_config)) + 1,
                    "expected_trials": _num_samples(spec) * spec.trials_per_sample(),
                    "seed": spec.seed if spec.seed is not None else int(driver_config["seed"]),
                },
                f,
                indent=2,
                default=str,
            )
        with open(setup_file, "r", encoding="utf-8") as f:
            saved = json.load(f)

    # The sweep's own log (trials log into their own run directories).
    init_run_logger({"state": "INFO"}, sweep_dir)
    logger = getLogger()
    # Ray's TensorBoard callback names each metric ray/tune/<metric>: tensorboardX logs every RecBole name with '@'
    # (hit@10) as "illegal" at INFO, twice per metric per sweep; the renamed tag (hit_10) is all it does about it
    logging.getLogger("tensorboardX.summary").setLevel(logging.WARNING)
    print(f"recbole_llmkd sweep directory: {sweep_dir}", file=sys.stderr, flush=True)
    resources = _trial_resources(spec, embedded=not ray_address)
    owns_ray = _start_ray(ray_address, spec.embedded_cpus)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(sweep_trainable, setup=setup, experiment_path=experiment_path), resources
        )
        if resume:
            logger.info(f"resuming sweep {experiment_path} (finished trials are kept, unfinished ones rerun)")
            tuner = Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=False)
        else:
            num_samples = _num_samples(spec)
            search = _search_alg(spec, setup.metric, setup.mode, saved["seed"])
            tuner = Tuner(
                trainable,
                param_space=spec.param_space(),
                tune_config=TuneConfig(
                    metric=setup.metric,
                    mode=setup.mode,
                    search_alg=search,
                    scheduler=_scheduler(spec, saved["max_t"]),
                    num_samples=num_samples,
                    max_concurrent_trials=None if spec.alg in ("random", "grid") else spec.max_concurrent,
                ),
                run_config=RunConfig(
                    name=EXPERIMENT_NAME,
                    storage_path=sweep_dir,
                    failure_config=FailureConfig(max_failures=0, fail_fast=False),
                    stop=SweepTimeBudget(spec.time_budget_s) if spec.time_budget_s else None,
                    verbose=verbose,
                ),
            )
            budget = f", time budget {spec.time_budget_s:g} s" if spec.time_budget_s else ""
            logger.info(
                f"sweep {setup.model} on {setup.dataset}: {num_samples} sample(s) x {spec.trials_per_sample()} "
                f"({spec.alg}, {spec.scheduler}), metric {setup.metric} ({setup.mode}), resources per trial "
                f"{resources}{budget}"
            )
        reset_budget_flag()
        results = tuner.fit()
    finally:
        if owns_ray:
            import ray

            ray.shutdown()

    rows = _trial_rows(results, setup, experiment_path)
    out_of_time = budget_reached()
    with_results = sum(r["_reported"] for r in rows)
    if out_of_time:  # Ray stopped every trial at the budget (its saved state may still call some running)
        for row in rows:
            if row["status"] != "ERROR" and not row["_reported"]:
                row["status"] = "NO_RESULT"  # never started, or stopped before its first report
            elif row["status"] not in ("TERMINATED", "STOPPED", "ERROR"):
                row["status"] = "STOPPED"
    write_trial_tables(rows, sweep_dir)
    unfinished = [r["trial_id"] for r in rows if r["status"] not in ("TERMINATED", "STOPPED", "ERROR")]
    if (unfinished or len(rows) < saved["expected_trials"]) and not out_of_time:
        raise SweepInterrupted(
            f"sweep interrupted: {len(rows) - len(unfinished)} of {saved['expected_trials']} trial(s) finished "
            f"(see {sweep_dir}/trials.md); continue it with --resume --run_dir={sweep_dir}"
        )
    # A trial the budget stopped is never chosen: Ray stops a running function trial only after its next report,
    # so its best checkpoint on disk can be newer than the best validation result it reported.
    candidates = [r for r in rows if _choosable(r, setup) and (not out_of_time or r["_summary"])]
    if out_of_time:
        logger.warning(
            f"time budget of {spec.time_budget_s:g} s reached: {with_results} of "
            f"{saved['expected_trials']} trial(s) reported a result, {len(candidates)} finished; the best is chosen "
            "among the finished ones"
        )
    plot_path = plot_metric_vs_params(rows, spec, setup.metric, os.path.join(sweep_dir, "metric_vs_params.png"))
    column = f"best_{setup.metric}"
    if not candidates:
        if out_of_time:
            write_json_atomic(os.path.join(sweep_dir, BUDGET_SPENT),
                              {"time_budget_s": spec.time_budget_s, "trials_with_results": with_results})
            raise SweepError(
                f"the time budget of {spec.time_budget_s:g} s ran out before any trial finished "
                f"({with_results} reported a result; see {sweep_dir}/trials.md): start a new "
                "sweep with a larger --time-budget"
            )
        errors = "; ".join(f"{r['trial_id']}: {r['error']}" for r in rows if r["error"])
        every_seed = f" over all of search.seeds {setup.seeds}" if setup.seeds is not None else ""
        raise SweepError(
            f"no trial reported {setup.metric}{every_seed} ({len(rows)} trial(s); see {sweep_dir}/trials.md). "
            f"{errors}"
        )
    best = (max if setup.mode == "max" else min)(candidates, key=lambda r: r[column])
    params = {key: best[key] for key in setup.swept_keys}
    default_gpu = "0" if torch.cuda.is_available() else ""
    gpu_id = str(cmd_args.get("gpu_id", config_dict.get("gpu_id", default_gpu)))
    over_seeds = f" (mean over seeds {setup.seeds})" if setup.seeds is not None else ""
    logger.info(f"best trial {best['trial_id']} on validation: {params}, {setup.metric}={best[column]:.4f}{over_seeds}")
    seed_summary = {}
    if setup.seeds is None:
        test_result = evaluate_best_on_test(
            setup, params, best["_checkpoint"], os.path.join(best["_trial_dir"], TRIAL_RUN_SUBDIR), gpu_id
        )
        logger.info(f"test result of the best trial (read once): {test_result}")
    else:
        test_per_seed = []
        for record in best["_per_seed"]:
            seed = record["seed"]
            test_per_seed.append(
                evaluate_best_on_test(
                    setup,
                    {**params, "seed": seed},
                    _stored_checkpoint(best["_trial_dir"], record["checkpoint"]),
                    os.path.join(best["_trial_dir"], seed_run_subdir(seed)),
                    gpu_id,
                )
            )
            logger.info(f"test result of the best trial, seed {seed} (read once): {test_per_seed[-1]}")
        test_result = _mean_result(test_per_seed)
        logger.info(f"test result of the best trial, mean over seeds {setup.seeds}: {test_result}")
        seed_summary = {
            "seeds": list(setup.seeds),
            "best_valid_std": _std_result([r["best_valid_result"] for r in best["_per_seed"]]),
            "best_valid_per_seed": {str(r["seed"]): r["best_valid_result"] for r in best["_per_seed"]},
            "test_result_std": _std_result(test_per_seed),
            "test_result_per_seed": {str(seed): result for seed, result in zip(setup.seeds, test_per_seed)},
            "checkpoints": {
                str(r["seed"]): _stored_checkpoint(best["_trial_dir"], r["checkpoint"]) for r in best["_per_seed"]
            },
        }

    summary = {
        "model": setup.model,
        "dataset": setup.dataset,
        "sweep_dir": sweep_dir,
        "metric": setup.metric,
        "mode": setup.mode,
        "best_trial_id": best["trial_id"],
        "best_params": params,
        "best_valid_score": float(best[column]),
        "best_valid_result": best["_valid_result"],
        "test_result": test_result,
        **seed_summary,
        "checkpoint": best["_checkpoint"],
        "trial_dir": best["_trial_dir"],
        "num_trials": len(rows),
        "expected_trials": saved["expected_trials"],
        "trials_with_results": with_results,
        "time_budget_s": spec.time_budget_s,
        "time_budget_reached": out_of_time,
        "status_counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "trials_csv": os.path.join(sweep_dir, "trials.csv"),
        "trials_md": os.path.join(sweep_dir, "trials.md"),
        "plot": plot_path,
        "trials": [_public(r) for r in rows],
    }
    with open(os.path.join(sweep_dir, "best.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary

