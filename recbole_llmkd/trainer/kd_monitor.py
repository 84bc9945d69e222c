"""KDMonitoring: the KD-term guard shared by KDTrainer and SLMTrainer.

Every batch's KD terms go to a ``KDTermMonitor`` (``recbole_llmkd.distill.guards``): a NaN/inf term stops training
at once, a weighted term that is exactly 0 for a whole epoch stops it at the end of that epoch. The stop is a
``KDTermError`` that names the epoch and the term, and says where the best checkpoint saved before the stop is:
RecBole writes it only when validation improves, so it is kept as it was, and a rerun or an evaluation can use it.
"""
import os
from typing import Callable, Dict, Mapping, Optional

from recbole_llmkd.distill import KDTermMonitor
from recbole_llmkd.distill.guards import KDTermError


class KDMonitoring:
    """Trainer mixin (put it before RecBole's ``Trainer`` in the bases); call ``init_kd_monitor`` in ``__init__``."""

    kd_monitor: KDTermMonitor
    best_checkpoint_epoch: Optional[int] = None

    def init_kd_monitor(self, weights: Mapping[str, float], weight_names: Mapping[str, str]) -> None:
        self.kd_monitor = KDTermMonitor(weights, weight_names)

    def monitored_loss(self, calculate_loss: Callable, last_terms: Callable[[], Dict[str, object]]) -> Callable:
        """``calculate_loss`` whose batch KD terms (``last_terms()`` after each call) go through the monitor."""

        def loss(interaction):
            losses = calculate_loss(interaction)
            self.kd_monitor.update(last_terms())
            return losses

        return loss

    def monitored_epoch(self, train_epoch: Callable[[], object], epoch_idx: int):
        """Run one epoch (``train_epoch()``) and the epoch-end check; returns ``(epoch loss, {term: epoch mean})``.

        A ``KDTermError`` from either is raised again with the epoch and the kept checkpoint in its message.
        """
        try:
            total_loss = train_epoch()
            return total_loss, self.kd_monitor.end_epoch(epoch_idx)
        except KDTermError as error:
            raise KDTermError(f"training stopped in epoch {epoch_idx}: {error}. {self.kept_checkpoint_note()}") from error

    def kept_checkpoint_note(self) -> str:
        path = getattr(self, "saved_model_file", None)
        if self.best_checkpoint_epoch is None or not path or not os.path.isfile(path):
            return "No checkpoint had been saved before the stop"
        return f"The best checkpoint so far (epoch {self.best_checkpoint_epoch}) is kept: {path}"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        self.best_checkpoint_epoch = epoch
