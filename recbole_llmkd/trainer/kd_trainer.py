"""KDTrainer: RecBole's Trainer for the DLLM2Rec students (docs/METHODS.md §1.8, §2.7, §3.1, §3.3).

What it adds to RecBole's ``Trainer``:

- before the first epoch, the per-example teacher fields (``teacher_topk`` [N, K], ``teacher_score`` [N, K], and the
  extras some confidence modes need) are attached to ``train_data._dataset.inter_feat`` with
  ``inter_feat.update(Interaction(...))``, so every shuffled batch carries the teacher rows of its own examples;
  validation and test loaders get nothing;
- every batch, the model's KD terms go through ``KDTermMonitor`` (``KDMonitoring``): a NaN/inf term raises
  ``KDTermError`` at once, a weighted term that is exactly 0 for a whole epoch raises at the end of the epoch;
- every epoch (``KDMonitoring.log_kd_epoch``), each loss component and diagnostic (base, rd / logit_kd / rd_tw, rd_pos, rd_neg, wc_entropy,
  overlap = |O_T ∩ O_S|/K, ed_ratio = ‖ed·g(z)‖/‖b‖) is logged by name and written to TensorBoard under ``KD/``;
- the best epoch is picked on validation (RecBole's early stopping); ``select_on: test`` (reproduction of the official
  code only) selects on the test loader given to ``fit(..., test_data=...)`` and labels the run "test-selected";
  ``valid_smoothing: N`` makes early stopping and the checkpoint go by the mean of the last N evaluations' scores
  (``trainer/selection.py``).
"""
from typing import Dict

from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_llmkd.compat import TrainerStateCheckpoint
from recbole_llmkd.trainer.kd_monitor import KDMonitoring
from recbole_llmkd.trainer.selection import SmoothedValidation


class KDTrainer(KDMonitoring, SmoothedValidation, TrainerStateCheckpoint, Trainer):
    """Trainer for models built on ``recbole_llmkd.model.distiller.Distiller``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.init_kd_monitor(model)
        self.selection_label = "valid"
        self.init_valid_smoothing(config)

    # ----------------------------------------------------------------------------------------------------------
    def attach_teacher_fields(self, train_data) -> Dict[str, tuple]:
        """Attach the model's per-example teacher tensors to the training split; returns ``{field: shape}``."""
        dataset = train_data._dataset
        fields = self.model.teacher_batch_fields(dataset)
        if not fields:
            return {}
        n_rows = len(dataset.inter_feat)
        for name, tensor in fields.items():
            if tensor.shape[0] != n_rows:
                raise ValueError(
                    f"teacher field {name!r} has {tensor.shape[0]:,} rows but the training split has {n_rows:,}"
                )
        dataset.inter_feat.update(Interaction(fields))
        shapes = {name: tuple(tensor.shape) for name, tensor in fields.items()}
        self.logger.info(f"teacher fields attached to the {n_rows:,} training examples: {shapes}")
        return shapes

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None,
            test_data=None):
        """RecBole's ``fit`` after attaching the teacher fields; ``select_on: test`` selects on ``test_data``."""
        self.attach_teacher_fields(train_data)
        selection_data = valid_data
        if getattr(self.model, "select_on", "valid") == "test":
            if test_data is None:
                raise ValueError(
                    "select_on: test (reproduction of the official DLLM2Rec code) needs fit(..., test_data=...); "
                    "the default select_on: valid picks the best epoch on validation"
                )
            selection_data = test_data
            self.selection_label = "test-selected"
            self.logger.warning(
                "select_on: test: the best epoch is chosen on the TEST split (official-code reproduction only); "
                "label these results 'test-selected'"
            )
        return super().fit(
            train_data, selection_data, verbose=verbose, saved=saved, show_progress=show_progress,
            callback_fn=callback_fn,
        )

    # ----------------------------------------------------------------------------------------------------------
    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        """RecBole's line, with the loss parts named (``base``, ``rd``, ...) instead of ``train_loss1..n``."""
        names = self.model.loss_names()
        if not isinstance(losses, tuple) or len(names) != len(losses):
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        des = self.config["loss_decimal_place"] or 4
        parts = ", ".join(
            set_color(f"{name}", "blue") + f": {value:.{des}f}" for name, value in zip(names, losses)
        )
        return (
            set_color(f"epoch {epoch_idx} training", "green")
            + " ["
            + set_color("time", "blue")
            + f": {e_time - s_time:.2f}s, {parts}]"
        )

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        names = self.model.loss_names()
        if isinstance(losses, tuple) and len(names) == len(losses):
            for name, value in zip(names, losses):
                self.tensorboard.add_scalar(f"{tag}/{name}", value, epoch_idx)
            return
        super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
