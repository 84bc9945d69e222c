"""One run of a RecBole or plugin model: its run directory, and its data, model and trainer built in one place.

- ``prepare(config) -> Run``: the dataset, the train/valid/test splits, the model on the training split and its
  trainer, from a ``recbole_llmkd.config.Config``. Seeding is RecBole's quick start's:
  ``init_seed(seed, reproducibility)`` before ``create_dataset``, ``init_seed(seed + local_rank, reproducibility)``
  before the model, so the same seeds give the same run. Its parts, for runs that need less:
  ``prepare_data(config)`` is the data half alone (no model, no trainer); ``prepare(config, data=prepared)`` builds
  the model (and trainer) on data prepared before for the same data settings (several models on one dataset: the
  model is seeded as in a fresh run, so it is the same model); ``prepare(config, with_trainer=False)`` builds no
  trainer (no optimizer, TensorBoard writer or checkpoint directory).
- ``load(checkpoint, dataset=None, device=None) -> Run``: the same from a saved checkpoint (a RecBole model's, a KD
  student's, an LLMRec's or a BIGRec's), the model trained and in eval mode, without a trainer: for the export and
  for evaluation.
- ``build_model(config, dataset)``: the model, handed what it needs from disk (``model_inputs``): a KD student its
  teacher's artifacts (and the titles' sentence embeddings for ``item_init: text_encoder``), an LLM recommender its
  backbone, item vectors and titles (``LLMParts``), SLMRec also its teacher. Models never open a file themselves.
- The run directory (``--run_dir``, default ``runs/<Model>-<dataset>-<time>``): ``run.log`` (``RUN_LOG``), the
  TensorBoard events, the best checkpoint (RecBole's ``<Model>-<time>.pth``: ``checkpoint_dir`` is routed into the
  run directory) and ``results.json`` (``RESULTS_FILE``: the metrics and the checkpoint's path).
  ``resolve_checkpoint`` finds the checkpoint of a run directory.

``quick_start.run_recbole_llmkd``, the sweeps' trials and their test evaluation, the teacher export and the
benchmarks all build their runs here.
"""
import glob
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Tuple

import colorlog
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed
from recbole.utils.logger import RemoveColorFilter, log_colors_config

from recbole_llmkd import compat
from recbole_llmkd.data.folds import hold_out_fold
from recbole_llmkd.errors import (FIRST_FEW, CheckpointMismatchError, ConfigValueError, Interrupted,
                                  RecboleLLMKDError)
from recbole_llmkd.registry import get_trainer
from recbole_llmkd.trainer.selection import check_valid_smoothing

# File names inside a run directory.
RESULTS_FILE = "results.json"  # what run_recbole_llmkd returns: metrics, the checkpoint's path, counts, timings
RUN_LOG = "run.log"  # the run's log (also on the console)
CHECKPOINT_PATTERN = "*.pth"  # RecBole's checkpoint files, <Model>-<time>.pth


class DatasetNotFoundError(RecboleLLMKDError, FileNotFoundError):
    """The dataset's atomic files are not where the config points (nothing is ever downloaded)."""


@dataclass
class Run:
    """The parts of one run. ``train_data``, ``valid_data`` and ``test_data`` are RecBole's data loaders (None when
    ``load`` was given a dataset); ``model`` is None for ``prepare_data``'s data alone; ``trainer`` is None for a
    loaded run, for ``prepare_data`` and for ``prepare(..., with_trainer=False)``."""

    config: Any
    dataset: Any  # what create_dataset returned (or the dataset load() was given)
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Optional[torch.nn.Module] = None
    trainer: Any = None


# ----- the run directory ---------------------------------------------------------------------------------------
def check_dataset_files(config) -> None:
    """Fail fast, naming the paths, when the atomic files are missing (``compat.missing_dataset_files``), or when a
    sequential run would not load the time field it is ordered by."""
    missing = compat.missing_dataset_files(config)
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' not found: no atomic file at {', '.join(missing)}. "
            f"recbole_llmkd never downloads datasets; put the RecBole atomic files in "
            f"{os.path.abspath(config['data_path'])} or point --data_path at the folder that holds '{config['dataset']}/'."
        )
    check_time_field_loaded(config)


def check_time_field_loaded(config) -> None:
    """A sequential model's histories are ordered by ``TIME_FIELD`` (and ``eval_args`` order ``TO`` splits by it),
    unless the dataset is pre-split (``benchmark_filename``: the histories are in the files). RecBole's default
    ``load_col`` for a dataset without its own yaml (``inter: [user_id, item_id]``) leaves it out, and RecBole then
    stops deep in the data preparation."""
    from recbole.utils import ModelType

    ordered = config["MODEL_TYPE"] == ModelType.SEQUENTIAL or (config["eval_args"] or {}).get("order") == "TO"
    pre_split = bool(config["benchmark_filename"])  # histories already built in the files (item_id_list)
    if not ordered or pre_split:
        return
    time_field = config["TIME_FIELD"]
    if not time_field:
        raise ConfigValueError(f"dataset '{config['dataset']}': TIME_FIELD is not set, and a sequential model's "
                               "histories are ordered by it: set TIME_FIELD (e.g. timestamp) and load that column")
    load_col = config["load_col"]
    inter_columns = load_col.get("inter") if isinstance(load_col, dict) else None
    if inter_columns is not None and time_field not in inter_columns:
        raise ConfigValueError(
            f"dataset '{config['dataset']}': load_col loads {list(inter_columns)} from the .inter file, not the time "
            f"field '{time_field}' that orders the histories; load it, e.g. in a yaml file of --config_files: "
            f"load_col: {{inter: [{', '.join([*inter_columns, time_field])}]}}"
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
    log_file = os.path.join(run_dir, RUN_LOG)
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


def detach_earlier_run_logs() -> None:
    """Stop writing to the ``run.log`` of an earlier run of this process (the pipeline, a sweep's worker, the
    benchmarks run several), so that an error found before this run's log exists is not written into another's."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)
                    and os.path.basename(h.baseFilename) == RUN_LOG]:
        root.removeHandler(handler)
        handler.close()


def start_run_dir(config) -> str:
    """The run directory of ``config``, ready: its dataset files and the model's inputs checked (before anything is
    created; ``check_model_inputs``), the directory created with checkpoints routed into it, and the log going to
    its ``run.log``. Returns its path."""
    detach_earlier_run_logs()
    check_dataset_files(config)
    check_model_inputs(config)
    run_dir = prepare_run_dir(config)
    init_run_logger(config, run_dir)
    return run_dir


def write_results(run_dir: str, result: dict) -> None:
    """Write a run's result to ``<run_dir>/results.json``."""
    with open(os.path.join(run_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


def read_results(run_dir: str) -> dict:
    """A run's ``results.json``."""
    with open(os.path.join(run_dir, RESULTS_FILE), encoding="utf-8") as f:
        return json.load(f)


def has_results(run_dir: str) -> bool:
    """Whether the run in ``run_dir`` finished (its ``results.json`` exists)."""
    return os.path.isfile(os.path.join(run_dir, RESULTS_FILE))


def resolve_checkpoint(checkpoint_or_run_dir) -> Path:
    """A checkpoint file, or the checkpoint of a run directory (``results.json``'s, else its only ``*.pth``)."""
    path = Path(checkpoint_or_run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"teacher checkpoint or run directory not found: {path}")
    if has_results(str(path)):
        checkpoint = read_results(str(path)).get("checkpoint")
        if checkpoint and Path(checkpoint).is_file():
            return Path(checkpoint)
    candidates = checkpoints_in(path)
    if not candidates:
        raise FileNotFoundError(f"{path}: no checkpoint (*.pth) in the run directory (a run saves its first at its "
                                "first validation; one that stopped before holds none): train it first")
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{path}: expected exactly one checkpoint (*.pth) in the teacher run directory, found "
            f"{len(candidates)}{': ' + ', '.join(os.path.basename(c) for c in candidates) if candidates else ''}; "
            "pass the checkpoint file itself"
        )
    return Path(candidates[0])


class RunDirError(RecboleLLMKDError, ValueError):
    """A run directory that does not fit the run: a new run into one that already holds a run (their files would
    mix), or ``resume`` with nothing to resume there, or a checkpoint of another model or dataset."""


class RunInterrupted(Interrupted):
    """A run stopped (Ctrl-C) before its results; its best checkpoint so far stays, and ``resume`` continues it."""


# What a resumed run must share with its checkpoint: the model and data it trains, and the score its checkpoint
# was selected on (best_valid_score is compared with the new epochs' scores).
RESUME_FIXED_KEYS = ("model", "dataset", "valid_metric", "valid_metric_bigger")
# Config keys that say where a run runs, not what it trains: a resumed run may change them without a word.
PLACE_KEYS = frozenset({"run_dir", "checkpoint_dir", "device", "gpu_id", "use_gpu", "local_rank", "single_spec",
                        "nproc", "world_size", "offset", "ip", "port", "show_progress", "state"})


def checkpoints_in(directory, model: Optional[str] = None) -> list:
    """The RecBole checkpoints (``*.pth``; with ``model``, that model's ``<model>-*.pth``) directly in ``directory``,
    sorted."""
    pattern = f"{model}-{CHECKPOINT_PATTERN}" if model else CHECKPOINT_PATTERN
    return sorted(glob.glob(os.path.join(str(directory), pattern)))


def interrupted(run_dir, model: Optional[str] = None) -> bool:
    """Whether ``run_dir`` holds a run (with ``model``, a run of that model) that stopped before its results (a
    checkpoint, no ``results.json``): a run that ``resume`` continues."""
    return (bool(run_dir) and os.path.isdir(run_dir) and not has_results(run_dir)
            and bool(checkpoints_in(run_dir, model)))


def check_new_run_dir(config) -> None:
    """A new run's ``run_dir`` must not hold another run: its checkpoint would sit beside the old one and its
    ``results.json`` replace the old one's."""
    run_dir = config["run_dir"]
    if not run_dir or not os.path.isdir(run_dir):
        return
    if has_results(run_dir):
        raise RunDirError(f"{run_dir} already holds a finished run ({RESULTS_FILE}): choose another --run_dir")
    checkpoints = checkpoints_in(run_dir)
    if checkpoints:
        names = ", ".join(os.path.basename(c) for c in checkpoints[:FIRST_FEW])
        raise RunDirError(f"{run_dir} already holds an interrupted run (a checkpoint, {names}, and no {RESULTS_FILE}):"
                          " pass --resume to continue it with the command that started it, or choose another "
                          "--run_dir")


def resume_point(config, resume) -> Tuple[Path, list]:
    """``(checkpoint, changed keys)``: where a resumed run goes on from, checked before anything is created.

    ``resume``: True (the checkpoint in ``run_dir``, or with ``checkpoint_dir`` set elsewhere the only
    ``<model>-*.pth`` there) or a checkpoint's path. The run in ``run_dir`` must not have finished, and the checkpoint
    must be this model's on this dataset. ``changed keys``: ``"key: saved -> now"`` for every other config key whose
    value differs from the checkpoint's (e.g. more ``epochs``), to be logged.
    """
    run_dir, model = config["run_dir"], config["model"]
    if not run_dir:
        raise RunDirError("resume: give the run directory of the interrupted run (--run_dir=PATH)")
    if has_results(run_dir):
        raise RunDirError(f"the run in {run_dir} has finished ({RESULTS_FILE}): nothing to resume")
    if resume is True:
        directory = config["checkpoint_dir"] if "checkpoint_dir" in config.external_config_dict else run_dir
        candidates = checkpoints_in(directory, model)
        if not candidates:
            raise RunDirError(f"no checkpoint of {model} in {directory}: nothing to resume (a run saves its first "
                              "checkpoint at its first validation); start it again without --resume")
        if len(candidates) > 1:
            names = ", ".join(os.path.basename(c) for c in candidates[:FIRST_FEW])
            raise RunDirError(f"{len(candidates)} checkpoints of {model} in {directory} ({names}): pass the one to "
                              "go on from, --resume=PATH, or delete the others")
        checkpoint = Path(candidates[0])
    else:
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise RunDirError(f"resume: no checkpoint file {checkpoint}")
    checkpoint = Path(os.path.abspath(checkpoint))  # results.json names it, as a new run's
    try:
        saved_config = read_checkpoint(checkpoint)["config"]
    except CheckpointMismatchError as error:  # e.g. cut short by the interruption
        raise RunDirError(f"{error}: delete it and start the run again without --resume") from error
    saved_run_dir = saved_config["run_dir"]  # None in a checkpoint written by RecBole itself
    in_run_dir = checkpoint.parent == Path(os.path.abspath(run_dir))  # also a run directory moved since
    if saved_run_dir and not in_run_dir and os.path.abspath(saved_run_dir) != os.path.abspath(run_dir):
        raise RunDirError(f"{checkpoint} is the checkpoint of the run in {saved_run_dir}; resuming it here would "
                          f"overwrite it: resume that run with --run_dir={saved_run_dir}")
    for key in RESUME_FIXED_KEYS:
        if str(saved_config[key]).lower() != str(config[key]).lower():
            raise RunDirError(f"{checkpoint} is a checkpoint of {key} {saved_config[key]!r}, this run's {key} is "
                              f"{config[key]!r}: resume the run with the command that started it")
    saved_keys, keys = saved_config.final_config_dict, config.final_config_dict
    changed = []
    for key in sorted(set(saved_keys) & set(keys) - PLACE_KEYS):
        try:
            differs = bool(saved_keys[key] != keys[key])
        except Exception:  # values that do not compare to one truth value (arrays): not reported
            continue
        if differs:
            changed.append(f"{key}: {saved_keys[key]!r} -> {keys[key]!r}")
    return checkpoint, changed


# ----- what a model is handed ---------------------------------------------------------------------------------
def _text_vectors(dataset, config) -> torch.Tensor:
    """The item titles' sentence embeddings ``[n_items, d_text]`` under ``text_encoder``; the encoder's loading
    draws nothing from the global RNG (a run's seeds give the same model with or without the embedding cache)."""
    from recbole_llmkd.config_schema import read_config
    from recbole_llmkd.llm.text_encoder import item_text_embeddings

    with torch.random.fork_rng(devices=[]):
        return item_text_embeddings(dataset, str(read_config(config, "text_encoder")))


def check_item_table_file(path: str) -> None:
    """LLMRec's ``item_table: <checkpoint>`` must name an existing file (checked with the config, and again when read)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"item_table={path!r}: no such file; expected 'trainable', 'text_encoder' or the path of a RecBole SASRec "
            "checkpoint (.pth)"
        )


def pretrained_item_table(path: str, config, dataset) -> Tuple[torch.Tensor, str]:
    """``(item_embedding.weight [n_items, d_item], sha256 of the file)`` of a RecBole SASRec checkpoint trained on
    this dataset (LLMRec's ``item_table: <checkpoint>``, frozen E4SRec-style)."""
    from recbole_llmkd.llm import sha256_file

    check_item_table_file(path)
    checkpoint = compat.load_checkpoint(path, map_location="cpu")
    state_dict = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    if "item_embedding.weight" not in state_dict:
        raise CheckpointMismatchError(
            f"item_table={path!r} holds no 'item_embedding.weight' in its state_dict; expected a RecBole SASRec "
            f"checkpoint (keys found: {sorted(state_dict)[:8]})"
        )
    weight = state_dict["item_embedding.weight"].float()  # [n_items, d_item]
    checkpoint_dataset = checkpoint["config"]["dataset"] if "config" in checkpoint else None
    if checkpoint_dataset is not None and checkpoint_dataset != config["dataset"]:
        raise CheckpointMismatchError(
            f"item_table {path} was trained on dataset {checkpoint_dataset!r}; this run uses {config['dataset']!r}"
        )
    n_items = dataset.item_num
    if weight.dim() != 2 or weight.shape[0] != n_items:
        raise CheckpointMismatchError(
            f"item_table {path} has an item table of shape {list(weight.shape)} ({weight.shape[0]:,} ids incl. "
            f"PAD); this dataset has {n_items:,} item ids incl. PAD: train the SASRec with the same dataset "
            "and filtering config"
        )
    return weight, sha256_file(path)


def llm_parts(config, dataset, causal_lm: bool = False, titles: Optional[bool] = None, item_table: bool = True):
    """An LLM recommender's ``LLMParts``: the backbone (``llm.backbone_from_config``), the item vectors of
    ``item_table`` (the text encoder's, or a pretrained SASRec table; not with ``item_table=False``) and the item
    titles (when ``titles``, default ``use_item_titles``)."""
    from recbole_llmkd.config_schema import read_config
    from recbole_llmkd.data.item_text import item_titles_for_dataset
    from recbole_llmkd.llm import backbone_from_config
    from recbole_llmkd.model.llmrec import ITEM_TABLE_TEXT_ENCODER, ITEM_TABLE_TRAINABLE, LLMParts

    parts = LLMParts(backbone_from_config(config, causal_lm))
    table = read_config(config, "item_table") if item_table else ITEM_TABLE_TRAINABLE
    if table == ITEM_TABLE_TEXT_ENCODER:
        parts.item_vectors = _text_vectors(dataset, config)
    elif table != ITEM_TABLE_TRAINABLE:
        parts.item_vectors, parts.item_table_sha256 = pretrained_item_table(str(table), config, dataset)
    if titles if titles is not None else read_config(config, "use_item_titles"):
        parts.item_titles = item_titles_for_dataset(dataset, config)
    return parts


def slm_teacher(config, dataset):
    """SLMRec's offline teacher (``SLMTeacher``): ``config["teacher"]`` resolved to a checkpoint and read, its header
    checked (an LLMRec's; its depth against ``slm_blocks``; its item tokens against ``dataset``) before what its class
    is built with (``model_inputs``: its backbone, item vectors, titles) is loaded; SLMRec builds the trained teacher
    from them."""
    from recbole_llmkd.model.llmrec import LLMRec
    from recbole_llmkd.model.slmrec import SLMRec, SLMRecSetupError, SLMTeacher

    checkpoint = str(resolve_checkpoint(config["teacher"]))
    saved = read_checkpoint(checkpoint)
    header = saved.get("other_parameter")
    if not header or "backbone_identity" not in header:
        raise SLMRecSetupError(f"teacher {checkpoint} is not an LLMRec checkpoint (no backbone identity in 'other_parameter')")
    teacher_config = saved["config"]
    if not issubclass(teacher_config.model_class, LLMRec):
        raise SLMRecSetupError(f"teacher {checkpoint} was written by model {teacher_config['model']!r}, not LLMRec")
    teacher = SLMTeacher(checkpoint, {**header, "config_max_len": teacher_config["MAX_ITEM_LIST_LENGTH"]}, saved)
    SLMRec.teacher_blocks(config, teacher.header, checkpoint)
    SLMRec.check_teacher_dataset(teacher, dataset)
    teacher.inputs = model_inputs(teacher_config, dataset)
    return teacher


def check_model_inputs(config) -> None:
    """What ``model_inputs`` checks without the data: the model class's keys (``check_options``, every plugin model
    has one); for a ``Distiller`` student that learns from a teacher, that ``config["teacher"]`` is given and
    names an artifact file or a teacher run directory holding one; for an offline ``SLMRec``, that it names a
    checkpoint or a run directory holding one; for an LLM recommender reading a pretrained item table
    (``item_table: <checkpoint>``), that the file exists. ``start_run_dir`` calls it, so that such an error comes
    before the run directory is made and the dataset is loaded, not after RecBole's log of both."""
    from recbole_llmkd.config_schema import read_config
    from recbole_llmkd.model.distiller import Distiller
    from recbole_llmkd.model.llmrec import ITEM_TABLE_TEXT_ENCODER, ITEM_TABLE_TRAINABLE, LLMRec
    from recbole_llmkd.model.slmrec import SLMRec

    model_class = config.model_class
    if hasattr(model_class, "check_options"):
        model_class.check_options(config)
    if issubclass(model_class, LLMRec):  # and SLMRec; BIGRec reads no item table
        table = read_config(config, "item_table")
        if table not in (ITEM_TABLE_TRAINABLE, ITEM_TABLE_TEXT_ENCODER):
            check_item_table_file(str(table))
    if issubclass(model_class, SLMRec) and read_config(config, "kd_mode") == "offline" and config["teacher"]:
        resolve_checkpoint(config["teacher"])  # the trained LLMRec teacher's checkpoint (slm_teacher reads it)
    if issubclass(model_class, Distiller) and Distiller.needs_teacher_artifacts(config):
        from recbole_llmkd.data.artifacts import resolve_teacher_artifacts

        if not config["teacher"]:
            raise Distiller.no_teacher_error(config["kd_method"])
        resolve_teacher_artifacts(config["teacher"])


def model_inputs(config, dataset) -> dict:
    """The keyword arguments ``config.model_class`` is built with: what it needs from disk, read here after the
    class's ``check_options(config)`` (every plugin model has one) has checked its keys.

    - ``Distiller`` students (``KDSASRec``, ...): ``teacher`` (the training split of the ``TeacherArtifacts`` of
      ``config["teacher"]`` when ``kd_method`` is not ``none``) and ``item_text_vectors`` (``item_init:
      text_encoder``);
    - ``SLMRec``: ``parts`` (its own ``LLMParts``) and ``teacher`` (offline, ``slm_teacher``) or ``teacher_parts``
      (online: the backbone of ``slm_teacher_n_layers`` layers); its set-up checks run before anything is loaded;
    - ``LLMRec``: ``parts``; ``BIGRec``: ``parts`` with the causal-LM backbone and the titles;
    - any other (RecBole's own models): nothing.
    """
    from recbole_llmkd.config_schema import read_config, values_set
    from recbole_llmkd.model.bigrec import BIGRec
    from recbole_llmkd.model.distiller import Distiller, TeacherConfigError
    from recbole_llmkd.model.llmrec import LLMRec
    from recbole_llmkd.model.slmrec import SLMRec

    model_class = config.model_class
    check_model_inputs(config)
    if issubclass(model_class, Distiller):
        from recbole_llmkd.data.artifacts import load_artifacts, resolve_teacher_artifacts

        inputs = {}
        if Distiller.needs_teacher_artifacts(config):  # check_model_inputs refused a missing teacher
            inputs["teacher"] = load_artifacts(resolve_teacher_artifacts(config["teacher"])).only("train")
        if read_config(config, "item_init", TeacherConfigError) == "text_encoder":
            inputs["item_text_vectors"] = _text_vectors(dataset, config)
        return inputs
    if issubclass(model_class, SLMRec):
        if read_config(config, "kd_mode") == "offline":
            teacher = slm_teacher(config, dataset)
            return {"parts": llm_parts(config, dataset), "teacher": teacher}
        SLMRec.teacher_blocks(config)
        parts = llm_parts(config, dataset)
        with values_set(config, llm_n_layers=read_config(config, "slm_teacher_n_layers")):
            teacher_parts = llm_parts(config, dataset)
        return {"parts": parts, "teacher_parts": teacher_parts}
    if issubclass(model_class, BIGRec):
        return {"parts": llm_parts(config, dataset, causal_lm=True, titles=True, item_table=False)}
    if issubclass(model_class, LLMRec):
        return {"parts": llm_parts(config, dataset)}
    return {}


def build_model(config, dataset) -> torch.nn.Module:
    """``config.model_class(config, dataset, **model_inputs(config, dataset))``: a model of any registered class on
    ``dataset`` (the training split), with what it needs from disk handed over."""
    import inspect

    inputs = model_inputs(config, dataset)
    parameters = inspect.signature(config.model_class.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        missing = sorted(set(inputs) - set(parameters))
        if missing:
            raise ConfigValueError(
                f"{config.model_class.__name__}.__init__ must accept the keyword argument(s) {missing}: models are "
                "handed what they need from disk (e.g. def __init__(self, config, dataset, teacher=None, "
                "item_text_vectors=None) for a Distiller student, passed on to init_distiller)"
            )
    return config.model_class(config, dataset, **inputs)


# ----- building a run ------------------------------------------------------------------------------------------
def prepare_data(config, hold_out: bool = True) -> Run:
    """``prepare``'s data alone: the dataset and its splits, seeded as RecBole does (``init_seed(seed,
    reproducibility)`` before ``create_dataset``); no model, no trainer. A cross-fitted fold teacher's fold of users
    is held out of its training split unless ``hold_out`` is False (``load``: an export covers every row)."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    logging.getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if hold_out:
        train_data = hold_out_fold(config, train_data)
    return Run(config, dataset, train_data, valid_data, test_data)


def prepare(config, trainer_class: Optional[type] = None, data: Optional[Run] = None,
            with_trainer: bool = True) -> Run:
    """The dataset, its splits, the model (on ``config["device"]``) and its trainer, seeded as RecBole does.

    Args:
        config: a ``recbole_llmkd.config.Config``.
        trainer_class: the trainer to build; default the model's (``registry.get_trainer``).
        data: the data of an earlier ``prepare_data`` or ``prepare`` whose config has the same data settings as
            ``config`` (dataset, filters, splits, batch sizes): the model is built on it instead of new data.
            The model is seeded as in a fresh run either way (``init_seed(seed + local_rank, reproducibility)``).
        with_trainer: False: no trainer (``Run.trainer`` is None), e.g. for a model that is only measured.
    """
    if with_trainer:  # before any data or model is built
        # a trainer given here gets the checkpoint fixes the registry's trainers have (compat)
        trainer_class = compat.checkpoint_safe_trainer(trainer_class or get_trainer(config["MODEL_TYPE"],
                                                                                    config["model"]))
        check_valid_smoothing(config, trainer_class)
    if data is None:
        data = prepare_data(config)
    dataset, train_data, valid_data, test_data = data.dataset, data.train_data, data.valid_data, data.test_data

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = build_model(config, train_data._dataset).to(config["device"])
    logging.getLogger().info(model)
    trainer = trainer_class(config, model) if with_trainer else None
    return Run(config, dataset, train_data, valid_data, test_data, model, trainer)


def read_checkpoint(checkpoint) -> dict:
    """A saved RecBole checkpoint (``config``, ``state_dict``, ...) read on the CPU; a ``CheckpointMismatchError``
    when the file is not one."""
    try:
        saved = compat.load_checkpoint(str(checkpoint), map_location="cpu")
    except Exception as error:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise CheckpointMismatchError(f"{checkpoint} is not a readable RecBole checkpoint ({error})") from error
    if not isinstance(saved, dict) or "config" not in saved or "state_dict" not in saved:
        raise CheckpointMismatchError(f"{checkpoint} is not a RecBole checkpoint (no 'config' / 'state_dict')")
    from recbole_llmkd.config import add_missing_defaults

    added = add_missing_defaults(saved["config"])
    if added:
        logging.getLogger().info(f"{checkpoint}: its config predates the key(s) {added}; their defaults apply")
    return saved


def load_model(saved: dict, dataset, device: Any = None) -> Tuple[torch.nn.Module, Any]:
    """``(model in eval mode, its config)``: the trained model of ``saved = read_checkpoint(checkpoint)``, built on
    ``dataset`` (it must hold the training dataset's item tokens) by ``build_model`` and given its trained state by
    ``model.restore.restore`` (an LLM recommender's backbone, item table and dataset checked against the saved
    identity before any shape; any checkpoint our trainers wrote: its item tokens against ``dataset``'s), on
    ``device`` (default: its training device, the CPU without CUDA)."""
    from recbole_llmkd.data.keys import dataset_mismatch, item_tokens_fingerprint
    from recbole_llmkd.model.restore import restore

    config = saved["config"]
    mismatch = dataset_mismatch(saved.get("dataset_fingerprint") or {}, item_tokens_fingerprint(dataset))
    if mismatch:  # same item count, other items: the scores would be of other items, silently
        raise CheckpointMismatchError(f"the {config['model']} checkpoint was {mismatch}: its item ids would name "
                                      "other items; use the data and filtering it was trained with")
    if device is not None:
        config["device"] = torch.device(device)
    elif config["device"] is None or (torch.device(config["device"]).type == "cuda" and not torch.cuda.is_available()):
        config["device"] = torch.device("cpu")
    return restore(build_model(config, dataset), saved, config["device"]), config


def load(checkpoint, dataset=None, device: Any = None) -> Run:
    """The run behind a saved checkpoint, its model trained and in eval mode (no trainer).

    Without ``dataset``, the data are built from the checkpoint's config as ``prepare`` builds them
    (``prepare_data(config, hold_out=False)``: a fold teacher's held-out fold stays in its training split, so that an
    export covers every row) and the model on the training split; with ``dataset`` (e.g. another run's
    ``train_data._dataset``), the model is built on it and the splits are None.
    """
    saved = read_checkpoint(checkpoint)
    if dataset is None:
        data = prepare_data(saved["config"], hold_out=False)
        model, config = load_model(saved, data.train_data._dataset, device)
        return Run(config, data.dataset, data.train_data, data.valid_data, data.test_data, model)
    model, config = load_model(saved, dataset, device)
    return Run(config, dataset, None, None, None, model)
