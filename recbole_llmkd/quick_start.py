"""Run any RecBole or plugin model end to end: config -> data -> model -> trainer -> validation-selected test.

Everything a run writes (log, TensorBoard events, checkpoint, ``results.json``) goes under one run
directory: ``--run_dir=PATH``, default ``runs/<Model>-<dataset>-<timestamp>`` under the working directory.
"""
import json
import logging
import os
import sys
import time
from datetime import datetime
from logging import getLogger
from typing import Dict, Iterable, Optional

import colorlog
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed, set_color
from recbole.utils.logger import RemoveColorFilter, log_colors_config

from recbole_llmkd import compat
from recbole_llmkd.config import Config
from recbole_llmkd.data.folds import hold_out_fold
from recbole_llmkd.errors import RecboleLLMKDError
from recbole_llmkd.measure import count_parameters, full_ranking_throughput
from recbole_llmkd.registry import get_trainer


class DatasetNotFoundError(RecboleLLMKDError, FileNotFoundError):
    """The dataset's atomic files are not where the config points (nothing is ever downloaded)."""


def check_dataset_files(config) -> None:
    """Fail fast, naming the paths, when the atomic files are missing (``compat.missing_dataset_files``)."""
    missing = compat.missing_dataset_files(config)
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' not found: no atomic file at {', '.join(missing)}. "
            f"recbole_llmkd never downloads datasets; put the RecBole atomic files in "
            f"{os.path.abspath(config['data_path'])} or point --data_path at the folder that holds '{config['dataset']}/'."
        )


def new_run_dir(name: str) -> str:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ... appended while that path exists (not created)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join("runs", f"{name}-{stamp}")
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join("runs", f"{name}-{stamp}-{suffix}")
    return path


def prepare_run_dir(config) -> str:
    """Create the run directory, route checkpoints into it, and return its absolute path."""
    run_dir = os.path.abspath(config["run_dir"] or new_run_dir(f"{config['model']}-{config['dataset']}"))
    os.makedirs(run_dir, exist_ok=True)
    config["run_dir"] = run_dir
    if "checkpoint_dir" not in config.external_config_dict:
        config["checkpoint_dir"] = run_dir
    return run_dir


def init_run_logger(config, run_dir: str) -> str:
    """RecBole's log format, written to ``<run_dir>/run.log`` and the console; replaces earlier handlers."""
    level = getattr(logging, str(config["state"] or "INFO").upper(), logging.INFO)
    log_file = os.path.join(run_dir, "run.log")
    file_handler = logging.FileHandler(log_file)
    file_handler.setLevel(level)
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    file_handler.addFilter(RemoveColorFilter())
    stream_handler = logging.StreamHandler()
    stream_handler.setLevel(level)
    stream_handler.setFormatter(
        colorlog.ColoredFormatter(
            "%(log_color)s%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M", log_colors=log_colors_config
        )
    )
    logging.basicConfig(level=level, handlers=[stream_handler, file_handler], force=True)
    return log_file


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
) -> dict:
    """Train ``model`` on ``dataset``, pick the best epoch on validation, evaluate test once.

    Returns (and writes to ``<run_dir>/results.json``) the validation and test metrics, the run
    directory, the checkpoint path, parameter counts and timings. A command-line key that nothing defines is an
    ``UnknownConfigKeyError`` before anything runs (``check_cmd_keys=False``: the pipeline, which checks its
    overrides against all of its steps at once).
    """
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    if check_cmd_keys:
        config.check_cmd_keys()
    check_dataset_files(config)
    run_dir = prepare_run_dir(config)
    print(f"recbole_llmkd run directory: {run_dir}", file=sys.stderr, flush=True)
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config, run_dir)
    logger = getLogger()
    logger.info(config)

    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    train_data = hold_out_fold(config, train_data)  # a cross-fitted teacher: one fold of users out of training

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)
    params = count_parameters(model)

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.perf_counter()
    # select_on: test (KD students only) reproduces the official DLLM2Rec code's test-set selection; labelled.
    selection = {"test_data": test_data} if config["select_on"] == "test" else {}
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], **selection
    )
    train_time = time.perf_counter() - start
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    throughput = {}
    if config["measure_throughput"]:
        throughput = full_ranking_throughput(
            trainer.model, test_data, config["device"],
            warmup_batches=config["throughput_warmup_batches"], max_batches=config["throughput_max_batches"],
        )

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "run_dir": run_dir,
        "checkpoint": trainer.saved_model_file if saved else None,
        "valid_metric": config["valid_metric"],
        "selected_on": "test (reproduction only)" if selection else "valid",
        "best_valid_score": float(best_valid_score),
        "best_valid_result": _to_float_dict(best_valid_result),
        "test_result": _to_float_dict(test_result),
        **params,
        "train_time_s": train_time,
        **throughput,
        "seed": config["seed"],
        "device": str(config["device"]),
        "torch": torch.__version__,
    }
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    with open(os.path.join(run_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
