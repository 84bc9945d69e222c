"""KDMonitoring: the trainer side of the KD protocol, shared by KDTrainer and SLMTrainer.

The model is a ``recbole_llmkd.distill.KDTermReporter``. Every batch's KD terms (``model.kd_terms``) go to a
``KDTermMonitor`` (``recbole_llmkd.distill.guards``): a NaN/inf term stops training at once, a weighted term that is
exactly 0 for a whole epoch stops it at the end of that epoch. The stop is a ``KDTermError`` that names the epoch and
the term, and says where the best checkpoint saved before the stop is: RecBole writes it only when validation
improves, so it is kept as it was, and a rerun or an evaluation can use it. Each epoch's term means are kept in
``kd_epoch_terms`` and logged by ``log_kd_epoch``.
"""
import os
from typing import Dict, List, Mapping, Optional

from recbole.utils import set_color

from recbole_llmkd.distill import KDTermMonitor, KDTermReporter
from recbole_llmkd.distill.guards import KDTermError


class KDMonitoring:
    """Trainer mixin (put it before RecBole's ``Trainer`` in the bases); call ``init_kd_monitor`` in ``__init__``."""

    kd_monitor: KDTermMonitor
    kd_epoch_terms: List[Dict[str, float]]
    best_checkpoint_epoch: Optional[int] = None

    def init_kd_monitor(self, model) -> None:
        """Guard ``model``'s weighted KD terms; ``kd_epoch_terms`` gets one ``{term: epoch mean}`` per trained epoch."""
        if not isinstance(model, KDTermReporter):
            raise TypeError(
                f"{type(self).__name__} trains models that report KD terms (KDSASRec, KDGRU4Rec, KDBERT4Rec, SLMRec, "
                f"...); got {type(model).__name__}"
            )
        self.kd_monitor = KDTermMonitor(model.kd_term_weights(), model.KD_TERM_WEIGHT_KEYS)
        self.kd_epoch_terms = []

    def last_epoch_kd_terms(self) -> Optional[Dict[str, float]]:
        """The KD term means of the last finished epoch (None before the first)."""
        return self.kd_epoch_terms[-1] if self.kd_epoch_terms else None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """The host trainer's epoch with every batch's ``model.kd_terms`` monitored, then the epoch-end check.

        A ``KDTermError`` from either is raised again with the epoch and the kept checkpoint in its message.
        """
        calculate_loss = loss_func or self.model.calculate_loss

        def monitored_loss(interaction):
            losses = calculate_loss(interaction)
            self.kd_monitor.update(self.model.kd_terms)
            return losses

        try:
            total_loss = super()._train_epoch(
                train_data, epoch_idx, loss_func=monitored_loss, show_progress=show_progress
            )
            epoch_terms = self.kd_monitor.end_epoch(epoch_idx)
        except KDTermError as error:
            raise KDTermError(f"training stopped in epoch {epoch_idx}: {error}. {self.kept_checkpoint_note()}") from error
        self.kd_epoch_terms.append(epoch_terms)
        self.log_kd_epoch(epoch_idx, epoch_terms)
        return total_loss

    def log_kd_epoch(self, epoch_idx: int, epoch_terms: Mapping[str, float]) -> None:
        """Log the epoch means by name and write them to TensorBoard under ``KD/``."""
        self.logger.info(
            set_color(f"epoch {epoch_idx} KD terms (epoch means)", "green")
            + ": "
            + ", ".join(f"{name}: {value:.6g}" for name, value in epoch_terms.items())
        )
        for name, value in epoch_terms.items():
            self.tensorboard.add_scalar(f"KD/{name}", value, epoch_idx)

    def kept_checkpoint_note(self) -> str:
        path = getattr(self, "saved_model_file", None)
        if self.best_checkpoint_epoch is None or not path or not os.path.isfile(path):
            return "No checkpoint had been saved before the stop"
        return f"The best checkpoint so far (epoch {self.best_checkpoint_epoch}) is kept: {path}"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        self.best_checkpoint_epoch = epoch

    def trainer_state(self) -> dict:
        """The checkpoint's part (``compat.TrainerStateCheckpoint``): the KD term means of the epochs so far."""
        return {**super().trainer_state(), "kd_epoch_terms": [dict(terms) for terms in self.kd_epoch_terms]}

    def load_trainer_state(self, state: dict) -> None:
        """A resumed run goes on from the checkpoint's epoch: its terms so far, and that epoch's checkpoint kept."""
        super().load_trainer_state(state)
        self.kd_epoch_terms = [dict(terms) for terms in state.get("kd_epoch_terms", [])]
        self.best_checkpoint_epoch = self.start_epoch - 1
