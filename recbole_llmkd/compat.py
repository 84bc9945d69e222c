"""Every workaround for RecBole 1.2.1 on today's stack (numpy 2, pandas 2, torch >= 2.6, modern Ray).

Nothing else in the package works around RecBole: each shim or helper here carries one line on why it exists, and
the modules that need one call it from here. ``recbole_llmkd/__init__.py`` calls ``install()`` before anything else,
so every process that imports the plugin (Ray workers included) has the shims before RecBole runs: the numpy
aliases and warning filters at once, the patches of RecBole's trainer and Config modules as soon as those are
imported (an import hook, so ``--help`` and the pure-tensor modules do not pay for importing RecBole).

Not shimmed, handled by packaging instead:
- pandas 3 (copy-on-write turns RecBole's ``fillna(inplace=True)`` into a no-op and breaks ``token_seq``
  remapping): ``setup.py`` pins ``pandas>=2,<3``.
- RecBole's ``objective_function``/``run_hyper`` (broken on modern Ray): never called; sweeps live in
  ``recbole_llmkd.tune``.
"""
import contextlib
import csv
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
import warnings
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np


# ----- yaml ----------------------------------------------------------------------------------------
def recbole_yaml_loader():
    """RecBole's yaml loader (it reads ``1e-4`` as a float) outside a Config: RecBole only builds it in an instance
    method, ``Config._build_yaml_loader``, which uses no instance state."""
    from recbole.config import Config as RecBoleConfig

    return RecBoleConfig._build_yaml_loader(None)


# ----- checkpoints (torch >= 2.6) -----------------------------------------------------------------
def load_checkpoint(path: str, map_location=None) -> dict:
    """Load one of our own RecBole checkpoints (they pickle the Config; torch >= 2.6 defaults to weights_only)."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)


PARTIAL_SUFFIX = ".partial"  # a checkpoint being written (not a *.pth until it is whole)


class _TrainClock:
    """A trainer's training time: ``train_time_s()`` = the time before the checkpoint a resumed run went on from
    (``train_time_before_s``) plus the time since ``fit`` began (the outermost ``fit`` in the MRO starts it)."""

    train_time_before_s = 0.0
    _fit_started = None

    def fit(self, *args, **kwargs):
        if self._fit_started is None:
            self._fit_started = time.perf_counter()
        return super().fit(*args, **kwargs)

    def train_time_s(self) -> float:
        """Seconds of training so far: before the resumed checkpoint plus this ``fit``'s."""
        started = self._fit_started
        return self.train_time_before_s + (time.perf_counter() - started if started is not None else 0.0)


class TrainerStateCheckpoint(_TrainClock):
    """Trainer mixin, before RecBole's ``Trainer`` in the bases (every trainer whose checkpoints RecBole's
    ``Trainer._save_checkpoint`` writes has it through ``checkpoint_safe_trainer``): its checkpoints also hold the
    trainer's own state, ``trainer_state()`` under ``"trainer_state"``, which ``resume_checkpoint`` hands to
    ``load_trainer_state``, and the training data's item tokens (``keys.item_tokens_fingerprint``) under
    ``"dataset_fingerprint"``, and are written whole or not at all. Mixins above it add their parts and call ``super()``
    in both methods. Its own part: the training time up to the checkpoint, so that a resumed run's ``train_time_s``
    counts the time before the interruption."""

    dataset_fingerprint = None  # the training data's item_tokens_fingerprint, set by fit

    def fit(self, train_data, *args, **kwargs):
        from recbole_llmkd.data.keys import item_tokens_fingerprint

        dataset = getattr(train_data, "_dataset", None)  # a RecBole loader's dataset
        self.dataset_fingerprint = item_tokens_fingerprint(dataset) if dataset is not None else None
        return super().fit(train_data, *args, **kwargs)

    def trainer_state(self) -> dict:
        return {"train_time_s": self.train_time_s()}

    def load_trainer_state(self, state: dict) -> None:
        """``state``: what ``trainer_state()`` returned when the checkpoint was saved (empty for older checkpoints)."""
        self.train_time_before_s = float(state.get("train_time_s", 0.0))

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # RecBole's Trainer._save_checkpoint builds its dict inline with no room for a trainer's state (the same
        # dict, plus "trainer_state"), and torch.save straight into the checkpoint: a run killed while it writes
        # would lose its only checkpoint. Written beside it, then moved over it.
        import torch
        from recbole.utils import set_color

        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "trainer_state": self.trainer_state(),
        }
        if self.dataset_fingerprint is not None:  # what the model's item ids mean: run.load_model checks it
            state["dataset_fingerprint"] = self.dataset_fingerprint
        partial_file = saved_model_file + PARTIAL_SUFFIX
        try:
            torch.save(state, partial_file, pickle_protocol=4)
            os.replace(partial_file, saved_model_file)
        except BaseException:  # Ctrl-C or a full disk while writing: the previous checkpoint stays as it was
            with contextlib.suppress(OSError):
                os.remove(partial_file)
            raise
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


class _CheckpointLoading(_TrainClock):
    """Mixin over a RecBole trainer, first in its MRO: its checkpoint loads go through ``load_checkpoint``, and its
    training clock starts when its ``fit`` is called."""

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        # RecBole's evaluate calls torch.load(weights_only=True) on its pickled checkpoint and fails.
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, model_file=None, show_progress=show_progress)

    def fit(self, train_data, valid_data=None, *args, **kwargs):
        self._fit_started = time.perf_counter()  # before the plugin trainers' own set-up in their fit
        resumed = self.start_epoch > 0  # after resume_checkpoint
        if resumed and self.start_epoch >= self.epochs:
            # RecBole's fit would train nothing and re-save the checkpoint as epoch -1 (a later resume: epoch 0).
            best_valid_score, best_valid_result = self.best_valid_score, None
        else:
            best_valid_score, best_valid_result = super().fit(train_data, valid_data, *args, **kwargs)
        test_data = kwargs.get("test_data")  # given only for the KD trainers' select_on: test
        selection_data = valid_data if test_data is None else test_data
        if resumed and best_valid_result is None and selection_data is not None:
            # RecBole's resume_checkpoint restores best_valid_score, not best_valid_result: a resumed run that never
            # improves on its checkpoint would return None; the checkpoint's result on the split, evaluated again.
            best_valid_result = self.evaluate(selection_data, load_best_model=True)
            self.best_valid_result = best_valid_result
        return best_valid_score, best_valid_result

    def resume_checkpoint(self, resume_file):
        # Same torch.load(weights_only=True) failure as evaluate; otherwise RecBole's own logic, plus the trainer's
        # own state (not in RecBole's checkpoints).
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint {resume_file} was written by model {checkpoint['config']['model']}, "
                f"this run is {self.config['model']}; loading its state_dict may fail"
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if isinstance(self, TrainerStateCheckpoint):  # not a trainer that writes its checkpoints its own way
            self.load_trainer_state(checkpoint.get("trainer_state") or {})
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


class _CheckpointSafeTrainer(_CheckpointLoading, TrainerStateCheckpoint):
    """``_CheckpointLoading`` with ``TrainerStateCheckpoint``'s checkpoints (the trainer's state, written whole)."""


@functools.lru_cache(maxsize=None)
def checkpoint_safe_trainer(trainer_class: type) -> type:
    """``trainer_class`` with the torch >= 2.6 checkpoint fix and ``TrainerStateCheckpoint``'s checkpoints (cached:
    one subclass per trainer class); a trainer that writes its checkpoints its own way (its own ``_save_checkpoint``)
    keeps it and gets the loading fix alone."""
    from recbole.trainer import Trainer

    if issubclass(trainer_class, _CheckpointLoading):
        return trainer_class
    recbole_saving = issubclass(trainer_class, TrainerStateCheckpoint) or (
        getattr(trainer_class, "_save_checkpoint", None) is getattr(Trainer, "_save_checkpoint"))
    mixin = _CheckpointSafeTrainer if recbole_saving else _CheckpointLoading
    return type(trainer_class.__name__, (mixin, trainer_class), {"__module__": trainer_class.__module__})


def as_plain_recbole_config(config):
    """``config`` turned into RecBole's own Config class, in place, and returned."""
    from recbole.config import Config as RecBoleConfig

    # RecBole pickles the Config into its checkpoints: as RecBole's class, they then load without this plugin.
    config.__class__ = RecBoleConfig
    return config


# ----- model lookup -------------------------------------------------------------------------------
# RecBole's model families, in the order RecBole searches them; exlib_recommender is left out.
RECBOLE_MODEL_FAMILIES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def recbole_model_module(name: str) -> Optional[str]:
    """The RecBole module that defines model ``name``, or None; found without importing anything."""
    # RecBole's get_model probes exlib_recommender for unknown names, which imports lightgbm/xgboost and fails.
    try:
        recbole_spec = importlib.util.find_spec("recbole")
    except ValueError:
        recbole_spec = None
    if recbole_spec is None:
        return None
    for family in RECBOLE_MODEL_FAMILIES:
        module_path = f"recbole.model.{family}.{name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            return module_path
    return None


# ----- configuration ------------------------------------------------------------------------------
def quick_start_supplement(model_type) -> Optional[str]:
    """The plugin's property file (relative to ``properties/``) to load after RecBole's quick-start yaml."""
    from recbole.utils import ModelType

    # RecBole raises for a sequential CE model unless train_neg_sample_args: ~, which its sequential.yaml omits.
    return os.path.join("quick_start_config", "sequential.yaml") if model_type == ModelType.SEQUENTIAL else None


@contextlib.contextmanager
def cuda_visible_devices_kept() -> Iterator[None]:
    """Restore ``CUDA_VISIBLE_DEVICES`` on exit, however the block ends."""
    # RecBole's Config sets CUDA_VISIBLE_DEVICES from gpu_id, for the whole process, whenever one is built.
    visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        yield
    finally:
        if visible_devices is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices


# ----- data ---------------------------------------------------------------------------------------
def missing_dataset_files(config) -> List[str]:
    """Absolute paths of the atomic interaction files RecBole would read for ``config`` that do not exist."""
    # RecBole asks on stdin, then downloads, when a dataset's files are missing: we look first and never download.
    if config["dataset_save_path"]:
        return []
    name, data_path = config["dataset"], config["data_path"]
    parts = config["benchmark_filename"] or []
    paths = [os.path.join(data_path, f"{name}.{part}.inter") for part in parts]
    paths = paths or [os.path.join(data_path, f"{name}.inter")]
    return [os.path.abspath(path) for path in paths if not os.path.isfile(path)]


def atomic_file_reader(handle):
    """A ``csv.reader`` over an open RecBole atomic file: rows, header first, each field one string as RecBole's
    pandas splits the columns (tab, ``"`` quoting); ``line_num`` counts the lines read."""
    # RecBole loads a token_seq text field (a title) as a list of word ids, and pandas 3 breaks it: read it as text.
    return csv.reader(handle, delimiter="\t")


# ----- module patches, installed when RecBole's modules are imported ------------------------------
def _tensorboard_beside_log(logger):
    """RecBole hard-codes ./log_tensorboard in the cwd; write the events beside the run's log file instead."""
    from torch.utils.tensorboard import SummaryWriter

    log_files = [h.baseFilename for h in logging.getLogger().handlers + logger.handlers if hasattr(h, "baseFilename")]
    if not log_files:
        return _recbole_get_tensorboard(logger)
    return SummaryWriter(os.path.join(os.path.dirname(log_files[0]), "tensorboard"))


_recbole_get_tensorboard = None


def _patch_trainer_module(module) -> None:
    """Route RecBole's trainers' TensorBoard events through ``_tensorboard_beside_log`` (idempotent)."""
    global _recbole_get_tensorboard
    if _recbole_get_tensorboard is None:
        _recbole_get_tensorboard = module.get_tensorboard
        module.get_tensorboard = _tensorboard_beside_log


def _patch_configurator_module(module) -> None:
    """Give each RecBole Config its own copies of the parameter-category lists (idempotent)."""
    original = module.Config._init_parameters_category
    if getattr(original, "_recbole_llmkd_copy", False):
        return

    @functools.wraps(original)
    def _init_parameters_category(self):
        # RecBole stores the module-level argument lists and then `+=` a dataset yaml's keys into the "Dataset"
        # one, so every Config built later in the process inherits them; a copy per Config keeps them apart.
        original(self)
        self.parameters = {category: list(keys) for category, keys in self.parameters.items()}

    _init_parameters_category._recbole_llmkd_copy = True
    module.Config._init_parameters_category = _init_parameters_category


def _patch_sine_module(module) -> None:
    """Switch autograd's anomaly detection off again, once per import of the module (a user's own later
    ``set_detect_anomaly(True)`` is left alone)."""
    import torch

    if getattr(module, "_recbole_llmkd_anomaly_off", False):
        return
    # RecBole's sine.py calls torch.autograd.set_detect_anomaly(True) at import, and every RecBole model lookup
    # imports it: the whole process then records a Python stack per tensor op, training 1.5-4x slower.
    torch.autograd.set_detect_anomaly(False)
    module._recbole_llmkd_anomaly_off = True


# RecBole module -> the patch applied right after it is executed.
_MODULE_PATCHES: Dict[str, Callable] = {
    "recbole.trainer.trainer": _patch_trainer_module,
    "recbole.config.configurator": _patch_configurator_module,
    "recbole.model.sequential_recommender.sine": _patch_sine_module,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the modules of ``_MODULE_PATCHES`` as usual and patches each right after it is executed."""

    def find_spec(self, fullname, path, target=None):
        patch = _MODULE_PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_then_patch  # this loader instance serves this one module only
        return spec


def install() -> None:
    """Install every shim (idempotent): called by ``recbole_llmkd/__init__.py``, so in every process."""
    # numpy 2 removed these aliases; RecBole's Config.compatibility_settings and ray<=2.6 read them.
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
                          ("bool8", np.bool_)):
        if not hasattr(np, alias):
            setattr(np, alias, target)
    # pandas 2.x warns (FutureWarning) on RecBole's chained fillna(inplace=True); it still works below pandas 3.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset\.dataset")
    # torch >= 2.4 deprecates torch.cuda.amp.GradScaler, which RecBole's trainer builds every epoch; harmless.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.trainer\.trainer")
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    for module_name, patch in _MODULE_PATCHES.items():  # modules imported before the plugin: patched now
        if module_name in sys.modules:
            patch(sys.modules[module_name])
