"""Every workaround for RecBole 1.2.1 on today's stack (numpy 2, pandas 2, torch >= 2.6, modern Ray).

Nothing else in the package patches around RecBole; each shim carries one line on why it exists.
Imported first by ``recbole_llmkd/__init__.py`` so every process that imports the plugin (Ray workers
included) has the shims before RecBole runs.

Not shimmed, handled by packaging instead:
- pandas 3 (copy-on-write turns RecBole's ``fillna(inplace=True)`` into a no-op and breaks ``token_seq``
  remapping): ``setup.py`` pins ``pandas>=2,<3``.
- RecBole's ``objective_function``/``run_hyper`` (broken on modern Ray): never called; sweeps live in
  ``recbole_llmkd.tune``.
"""
import functools
import warnings
import logging
import os

import numpy as np

# numpy 2 removed these aliases; RecBole's Config.compatibility_settings and ray<=2.6 read them.
for _alias, _target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_), ("bool8", np.bool_)):
    if not hasattr(np, _alias):
        setattr(np, _alias, _target)


def load_checkpoint(path: str, map_location=None) -> dict:
    """Load one of our own RecBole checkpoints (they pickle the Config; torch >= 2.6 defaults to weights_only)."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)


class _CheckpointSafeTrainer:
    """Mixin over a RecBole trainer: its checkpoint loads go through ``load_checkpoint``."""

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        # RecBole's evaluate calls torch.load(weights_only=True) on its pickled checkpoint and fails.
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, model_file=None, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        # Same torch.load(weights_only=True) failure as evaluate; otherwise RecBole's own logic.
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
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


@functools.lru_cache(maxsize=None)
def checkpoint_safe_trainer(trainer_class: type) -> type:
    """``trainer_class`` with the torch >= 2.6 checkpoint fix (cached: one subclass per trainer class)."""
    if issubclass(trainer_class, _CheckpointSafeTrainer):
        return trainer_class
    return type(trainer_class.__name__, (_CheckpointSafeTrainer, trainer_class), {"__module__": trainer_class.__module__})


def _tensorboard_beside_log(logger):
    """RecBole hard-codes ./log_tensorboard in the cwd; write the events beside the run's log file instead."""
    from torch.utils.tensorboard import SummaryWriter

    log_files = [h.baseFilename for h in logging.getLogger().handlers + logger.handlers if hasattr(h, "baseFilename")]
    if not log_files:
        return _recbole_get_tensorboard(logger)
    return SummaryWriter(os.path.join(os.path.dirname(log_files[0]), "tensorboard"))


_recbole_get_tensorboard = None


def apply_recbole_patches() -> None:
    """Install the module-level RecBole patches (idempotent; called when ``recbole_llmkd.config`` is imported,
    so ``--help`` and the pure-tensor modules do not pay for importing RecBole)."""
    global _recbole_get_tensorboard
    import recbole.trainer.trainer as recbole_trainer_module

    if _recbole_get_tensorboard is None:
        _recbole_get_tensorboard = recbole_trainer_module.get_tensorboard
        recbole_trainer_module.get_tensorboard = _tensorboard_beside_log
    _own_parameter_lists()


def _own_parameter_lists() -> None:
    """Give each RecBole Config its own copies of the parameter-category lists (idempotent)."""
    from recbole.config.configurator import Config as RecBoleConfig

    original = RecBoleConfig._init_parameters_category
    if getattr(original, "_recbole_llmkd_copy", False):
        return

    @functools.wraps(original)
    def _init_parameters_category(self):
        # RecBole stores the module-level argument lists and then `+=` a dataset yaml's keys into the "Dataset"
        # one, so every Config built later in the process inherits them; a copy per Config keeps them apart.
        original(self)
        self.parameters = {category: list(keys) for category, keys in self.parameters.items()}

    _init_parameters_category._recbole_llmkd_copy = True
    RecBoleConfig._init_parameters_category = _init_parameters_category


# pandas 2.x warns (FutureWarning) on RecBole's chained fillna(inplace=True); it still works below pandas 3.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset\.dataset")
# torch >= 2.4 deprecates torch.cuda.amp.GradScaler, which RecBole's trainer builds every epoch; harmless.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.trainer\.trainer")
