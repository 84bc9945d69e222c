"""Run any RecBole or plugin model end to end: config -> data -> model -> trainer -> validation-selected test.

Everything a run writes (log, TensorBoard events, checkpoint, ``results.json``) goes under one run
directory: ``--run_dir=PATH``, default ``runs/<Model>-<dataset>-<timestamp>`` under the working directory. The run's
parts and its directory are built by ``recbole_llmkd.run`` (``start_run_dir``, ``prepare``).
"""
import os
import sys
from logging import getLogger
from typing import Dict, Iterable, Optional, Tuple, Union

import torch
from recbole.utils import set_color

from recbole_llmkd.config import Config
from recbole_llmkd.errors import ctrl_c_as
from recbole_llmkd.measure import count_parameters, full_ranking_throughput
from recbole_llmkd.run import (  # noqa: F401  (the run-directory helpers, importable from here as before)
    DatasetNotFoundError,
    RunDirError,
    RunInterrupted,
    check_dataset_files,
    check_new_run_dir,
    has_results,
    init_run_logger,
    interrupted,
    new_run_dir,
    prepare,
    prepare_run_dir,
    read_results,
    resume_point,
    start_run_dir,
    write_results,
)
from recbole_llmkd.trainer.selection import valid_smoothing


def _to_float_dict(result) -> Dict[str, float]:
    return {k: float(v) for k, v in (result or {}).items()}


def run_recbole_llmkd(
    model=None,
    dataset: Optional[str] = None,
    config_file_list: Optional[Iterable[str]] = None,
    config_dict: Optional[dict] = None,
    cmd_args: Optional[Dict[str, str]] = None,
    saved: bool = True,
    check_cmd_keys: bool = True,
    resume: Union[bool, str] = False,
) -> dict:
    """Train ``model`` on ``dataset``, pick the best epoch on validation, evaluate test once.

    Returns (and writes to ``<run_dir>/results.json``) the validation and test metrics, the run
    directory, the checkpoint path, parameter counts and timings. A command-line key that nothing defines is an
    ``UnknownConfigKeyError`` before anything runs (``check_cmd_keys=False``: the pipeline, which checks its
    overrides against all of its steps at once).

    ``resume``: continue the interrupted run in ``run_dir`` (the same model and dataset; give the config that started
    it) from its checkpoint, i.e. from its best epoch so far, as RecBole's ``trainer.resume_checkpoint``: True for
    the run directory's checkpoint, or a checkpoint's path. A new run (``resume`` False) into a ``run_dir`` that
    holds a run is a ``RunDirError``; a run stopped by Ctrl-C is a ``RunInterrupted`` whose message says how to
    resume it.
    """
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    if check_cmd_keys:
        config.check_cmd_keys()
    if resume:
        checkpoint, changed_keys = resume_point(config, resume)  # checked before anything is created
    else:
        check_new_run_dir(config)
    run_dir = start_run_dir(config)
    print(f"recbole_llmkd run directory: {run_dir}", file=sys.stderr, flush=True)
    logger = getLogger()
    logger.info(config)

    before_training = (f"run interrupted before training; the same command with --run_dir={run_dir} --resume "
                       "starts it again" if resume else
                       "run interrupted before training; no checkpoint was saved yet: start it again")
    with ctrl_c_as(RunInterrupted, before_training):
        run = prepare(config)  # the dataset, its splits, the model
    params = count_parameters(run.model)
    trainer = run.trainer
    if resume:
        if changed_keys:
            logger.warning(f"resuming {checkpoint} with config keys changed since: {'; '.join(changed_keys)}")
        try:
            trainer.resume_checkpoint(checkpoint)  # from the checkpoint's epoch (the best so far) + 1
        except RuntimeError as error:  # load_state_dict: the model built from this config has other shapes
            changed = f" (changed since: {'; '.join(changed_keys)})" if changed_keys else ""
            first_mismatch = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
            raise RunDirError(f"{checkpoint} does not fit the model this config builds{changed}: "
                              f"{first_mismatch or str(error).splitlines()[0]}") from error
    # select_on: test (KD students only) reproduces the official DLLM2Rec code's test-set selection; labelled.
    selection = {"test_data": run.test_data} if config["select_on"] == "test" else {}
    try:
        best_valid_score, best_valid_result = trainer.fit(
            run.train_data, run.valid_data, saved=saved, show_progress=config["show_progress"], **selection
        )
        train_time = trainer.train_time_s()  # a resumed run: with the time up to its checkpoint
        test_result = trainer.evaluate(run.test_data, load_best_model=saved, show_progress=config["show_progress"])
        throughput = {}
        if config["measure_throughput"]:
            throughput = full_ranking_throughput(
                trainer.model, run.test_data, config["device"],
                warmup_batches=config["throughput_warmup_batches"], max_batches=config["throughput_max_batches"],
            )
    except KeyboardInterrupt:
        if saved and os.path.isfile(trainer.saved_model_file):
            how = f"the same command with --run_dir={run_dir} --resume continues it from its best epoch so far"
        else:
            how = "no checkpoint was saved yet: start it again"
        raise RunInterrupted(f"run interrupted; {how}") from None

    smoothing = valid_smoothing(config)
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "run_dir": run_dir,
        "checkpoint": trainer.saved_model_file if saved else None,
        "valid_metric": config["valid_metric"],
        "selected_on": "test (reproduction only)" if selection else "valid",
        "best_valid_score": float(best_valid_score),  # the mean of the last valid_smoothing evaluations when > 1
        "best_valid_result": _to_float_dict(best_valid_result),
        "test_result": _to_float_dict(test_result),
        **params,
        **({"valid_smoothing": smoothing} if smoothing > 1 else {}),
        "train_time_s": train_time,  # a resumed run: up to its checkpoint before, plus since the resume
        **({"resumed_at_epoch": trainer.start_epoch} if resume else {}),
        **throughput,
        "seed": config["seed"],
        "device": str(config["device"]),
        "torch": torch.__version__,
    }
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    write_results(run_dir, result)
    return result


def run_or_reuse(model, dataset: Optional[str], run_dir: str, config_dict: Optional[dict] = None,
                 **kwargs) -> Tuple[dict, bool]:
    """``(results, reused)`` of the run in ``run_dir``: the ``results.json`` a finished run left there (reused: True),
    else ``run_recbole_llmkd`` into ``run_dir``, going on from its checkpoint when a run of ``model`` was interrupted
    there. What the pipeline and the benchmarks do for each of their runs, so that running them again finishes
    what is missing. ``kwargs``: ``run_recbole_llmkd``'s (``config_file_list``, ``cmd_args``, ...)."""
    if has_results(run_dir):
        return read_results(run_dir), True
    model_name = model if isinstance(model, str) else model.__name__
    result = run_recbole_llmkd(model, dataset, config_dict={**(config_dict or {}), "run_dir": run_dir},
                               resume=interrupted(run_dir, model_name), **kwargs)
    return result, False
