"""Trainers for the LLM recommenders: RecBole's Trainer with the E-LLMRec training setup (docs/METHODS.md §2.5).

``LLMTrainer`` (for ``LLMRec``):

- AdamW over the trainable parameters only (betas ``adam_betas``, eps ``adam_eps``, ``weight_decay``);
- gradient-norm clipping of those parameters (``clip_grad_norm``, default max norm 1.0);
- per-step learning rate: linear warmup over ``warmup_steps``, then cosine decay to 0 at the last step
  (``epochs * batches per epoch``), as transformers' ``get_cosine_schedule_with_warmup``;
- training examples (``llm_train_examples``): ``all_prefixes`` (RecBole's augmentation) or ``last_per_user``
  (one example per user, its last training prefix): the train dataloader is rebuilt over
  ``dataset.copy(filtered inter_feat)``;
- the checkpoint holds only the trained tensors (see ``LLMRec.state_dict``); its size is logged.

Subclasses (``SLMTrainer``) reuse all of it; ``train_examples_key`` names the config key of the example choice.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from torch.nn.utils.clip_grad import clip_grad_norm_
from tqdm import tqdm

from recbole_llmkd.compat import TrainerStateCheckpoint
from recbole_llmkd.config_schema import read_config
from recbole_llmkd.trainer.kd_monitor import KDMonitoring
from recbole_llmkd.trainer.selection import SmoothedValidation


def last_row_per_user(dataset) -> np.ndarray:
    """Row indices of ``dataset.inter_feat`` holding each user's last example, in row order.

    RecBole's sequential augmentation sorts rows by (user, time) and the ``TO`` split keeps that order, so a
    user's last row is its longest (most recent) prefix.
    """
    user_ids = dataset.inter_feat[dataset.uid_field].numpy()  # [N]
    n_rows = len(user_ids)
    _, first_in_reversed = np.unique(user_ids[::-1], return_index=True)
    return np.sort(n_rows - 1 - first_in_reversed)


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: ``step / warmup`` during warmup, then ``0.5 (1 + cos(pi * progress))``."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


# slm_eval_sampled -> the splits that get the sampled protocol (None: full ranking only)
SAMPLED_EVAL_MODES = {None: None, False: None, True: "test", "test": "test", "valid_and_test": "valid_and_test"}


class LLMTrainer(SmoothedValidation, TrainerStateCheckpoint, Trainer):
    """RecBole Trainer for LLMRec: AdamW, clipped gradients, warmup + cosine schedule, trained-only checkpoints.

    - ``slm_eval_sampled: test`` (or True) adds the SLMRec protocol (1 positive + ``slm_eval_negatives`` negatives
      outside the user's entire sequence, ``recbole_llmkd.evaluation``) to the test result as ``sampled_hit@1``,
      ``sampled_hit@5``, ``sampled_ndcg@5``, ``sampled_mrr``, … beside RecBole's full-ranking metrics;
      ``valid_and_test`` also adds them at every validation (negatives re-drawn: seed + 1, + 2, …), so that
      ``valid_metric: sampled_mrr`` selects on the SLMRec protocol. The users' sequences come from the train and
      valid data given to ``fit`` plus the evaluated split (LLMRec, its no-KD twin and SLMRec alike).
    - ``valid_smoothing: N`` selects the epoch on the mean of the last N evaluations' scores, as for the KD students
      (``trainer/selection.py``).
    """

    train_examples_key = "llm_train_examples"

    def __init__(self, config, model):
        read_config(config, "learner")  # AdamW only (~ too: this trainer builds its own optimizer)
        self.adam_betas = read_config(config, "adam_betas")  # before RecBole's __init__ builds the optimizer
        self.adam_eps = read_config(config, "adam_eps")
        super().__init__(config, model)
        self.init_valid_smoothing(config)
        self.warmup_steps = read_config(config, "warmup_steps")
        self.scheduler = None
        self.global_step = 0
        self.sampled_mode = SAMPLED_EVAL_MODES[read_config(config, "slm_eval_sampled")]
        self.sampled_negatives = read_config(config, "slm_eval_negatives")
        seed = read_config(config, "slm_eval_seed")
        self.sampled_seed = int(config["seed"] if seed is None else seed)
        self.sampled_valid_evaluations = 0
        self.sampled_test_result = None
        self._user_item_sources = []
        self._valid_data = None

    # ----- optimizer and schedule -------------------------------------------------------------------------
    def trainable_parameters(self) -> list:
        return [parameter for parameter in self.model.parameters() if parameter.requires_grad]

    def _build_optimizer(self, **kwargs):
        params = kwargs.pop("params", self.trainable_parameters())
        return torch.optim.AdamW(
            params,
            lr=kwargs.pop("learning_rate", self.learning_rate),
            betas=self.adam_betas,
            eps=self.adam_eps,
            weight_decay=kwargs.pop("weight_decay", self.weight_decay) or 0.0,
        )

    def _build_scheduler(self, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
        """Warmup and cosine decay over the whole run (``epochs`` x ``steps_per_epoch`` optimizer steps), at step
        ``global_step``: 0 for a new run; after ``resume_checkpoint`` the schedule goes on where it was."""
        total_steps = max(1, self.epochs * steps_per_epoch)
        warmup_steps = self.warmup_steps
        # at global_step > 0, LambdaLR reads each group's "initial_lr", which the resumed optimizer state holds
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: cosine_with_warmup(step, warmup_steps, total_steps),
            last_epoch=self.global_step - 1,
        )

    # ----- training examples ------------------------------------------------------------------------------
    def select_training_examples(self, train_data):
        """The train dataloader over the examples chosen by ``config[train_examples_key]``."""
        choice = read_config(self.config, self.train_examples_key)
        if choice == "all_prefixes":
            return train_data
        dataset = train_data._dataset
        rows = torch.from_numpy(last_row_per_user(dataset))
        filtered = dataset.copy(dataset.inter_feat[rows])
        self.logger.info(
            f"{self.train_examples_key}=last_per_user: training on {len(rows):,} examples (one per user) instead of "
            f"{len(dataset.inter_feat):,} prefixes"
        )
        return type(train_data)(train_data.config, filtered, train_data._sampler, shuffle=train_data.shuffle)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._user_item_sources = [data for data in (train_data, valid_data) if data]  # before last_per_user filtering
        self._valid_data = valid_data
        train_data = self.select_training_examples(train_data)
        self.global_step = self.start_epoch * len(train_data)  # > 0 after resume_checkpoint: every epoch is whole
        self.scheduler = self._build_scheduler(len(train_data))
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    # ----- one epoch --------------------------------------------------------------------------------------
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.scheduler is None:  # _train_epoch called without fit()
            self.scheduler = self._build_scheduler(len(train_data))
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        parameters = self.trainable_parameters()
        total_loss = None
        iter_data = (
            tqdm(train_data, total=len(train_data), ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
            if show_progress
            else train_data
        )
        for interaction in iter_data:
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad()
            losses = loss_func(interaction)
            if isinstance(losses, tuple):
                loss = sum(losses)
                loss_tuple = tuple(per_loss.item() for per_loss in losses)
                total_loss = loss_tuple if total_loss is None else tuple(map(sum, zip(total_loss, loss_tuple)))
            else:
                loss = losses
                total_loss = losses.item() if total_loss is None else total_loss + losses.item()
            self._check_nan(loss)
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(parameters, **self.clip_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.global_step += 1
        self.logger.info(
            f"epoch {epoch_idx}: {self.global_step} optimizer steps so far, learning rate now "
            f"{self.scheduler.get_last_lr()[0]:.3g}"
        )
        return total_loss

    # ----- checkpoints ------------------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        """Also how many sampled validations ran: each draws its negatives with seed ``sampled_seed`` + that count,
        so a resumed run draws the ones the uninterrupted run would have."""
        return {**super().trainer_state(), "sampled_valid_evaluations": self.sampled_valid_evaluations}

    def load_trainer_state(self, state: dict) -> None:
        super().load_trainer_state(state)
        self.sampled_valid_evaluations = int(state.get("sampled_valid_evaluations", 0))

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        from recbole_llmkd.evaluation import evaluate_sampled, prefixed

        result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        is_valid = eval_data is not None and eval_data is self._valid_data
        if result is None or self.sampled_mode is None or (is_valid and self.sampled_mode != "valid_and_test"):
            return result
        if is_valid:
            self.sampled_valid_evaluations += 1
            seed = self.sampled_seed + self.sampled_valid_evaluations
        else:
            seed = self.sampled_seed
        if not self._user_item_sources:
            self.logger.warning(
                "SLMRec protocol without fit(): negatives exclude only the evaluated rows' (possibly truncated) histories"
            )
        sampled = evaluate_sampled(
            self.model, eval_data, self._user_item_sources + [eval_data], n_negatives=self.sampled_negatives, seed=seed
        )
        if not is_valid:
            self.sampled_test_result = sampled
        self.logger.info(
            f"SLMRec protocol ({'valid' if is_valid else 'test'}; 1 + {self.sampled_negatives} candidates, seed {seed}, "
            f"{sampled['n_rows']} rows, {sampled['n_tied']} with ties): "
            + " ".join(f"{key}={value:.4f}" for key, value in prefixed(sampled).items())
        )
        result.update(prefixed(sampled))
        return result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.get("saved_model_file", self.saved_model_file)
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        if os.path.isfile(saved_model_file) and verbose:
            n_tensors = len(self.model.state_dict())
            size_mb = os.path.getsize(saved_model_file) / 2**20
            self.logger.info(
                f"checkpoint size: {size_mb:.2f} MiB ({n_tensors} trained tensors + optimizer state; frozen backbone "
                "weights not included)"
            )


class SLMTrainer(KDMonitoring, LLMTrainer):
    """Trainer for SLMRec (docs/METHODS.md §2.3-§2.7): LLMTrainer plus the KD-term guard (``KDMonitoring``).

    - ``slm_train_examples`` picks the training examples (``last_per_user`` by default, docs/METHODS.md §2.5).
    - Every batch's unweighted terms (``model.kd_terms``) go to a ``KDTermMonitor``: a NaN/inf term stops
      training at once, a term exactly 0 for a whole epoch while its weight > 0 stops it at the epoch's end; every
      term's epoch mean is logged by name (``SLMRec terms epoch N: ce=… d_cos=… d_norm=… l_ms=…``).
    """

    train_examples_key = "slm_train_examples"

    def __init__(self, config, model):
        super().__init__(config, model)
        self.init_kd_monitor(model)

    def log_kd_epoch(self, epoch_idx, epoch_terms):
        self.logger.info(
            f"SLMRec terms epoch {epoch_idx} (unweighted batch means; train_loss1.. = "
            f"{', '.join(self.model.loss_names())}, weighted sums): "
            + " ".join(f"{name}={value:.6g}" for name, value in epoch_terms.items())
        )
