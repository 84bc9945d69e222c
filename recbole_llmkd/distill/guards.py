"""KD terms must never fail silently (docs/METHODS.md §2.7).

In the official SLMRec code a missing KD term stayed the integer 0, ``.item()`` raised, and a bare ``except`` fell
back to the student's cross-entropy: the published scripts trained without distillation. Here a KD term whose weight
is > 0 is checked every batch (``check_kd_term``) and over every epoch (``KDTermMonitor``), and any problem raises
``KDTermError`` naming the term, its weight and what went wrong. Terms whose weight is 0 are not checked (except for
NaN/inf in ``KDTermMonitor.update``: ``0 · NaN = NaN`` would still poison a weighted sum).

``KDTermReporter`` is the model side of this protocol, shared by every distilled model (``Distiller``, ``SLMRec``);
``recbole_llmkd.trainer.kd_monitor.KDMonitoring`` is the trainer side, shared by ``KDTrainer`` and ``SLMTrainer``.
"""
import math
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from recbole_llmkd.errors import RecboleLLMKDError


class KDTermError(RecboleLLMKDError, RuntimeError):
    """A knowledge-distillation term is missing, non-finite, detached from the graph, or always zero."""

    exit_status = 1  # the run stopped (its input may be fine)


def _check_weight(name: str, weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight of KD term {name!r} must be a finite number >= 0, got {weight!r}")
    return float(weight)


def check_kd_term(name: str, value: Optional[Tensor], weight: float) -> Optional[Tensor]:
    """Raise ``KDTermError`` unless ``value`` is a usable KD loss term; returns ``value`` unchanged.

    With ``weight > 0`` the value must be a one-element ``torch.Tensor`` with a finite value and, when
    ``torch.is_grad_enabled()``, attached to the autograd graph (``requires_grad``). With ``weight == 0`` nothing is
    checked.

    Example: ``loss = base + rd_weight * check_kd_term("rd", rd_loss, rd_weight)``.
    """
    weight = _check_weight(name, weight)
    if weight == 0:
        return value
    where = f"KD term {name!r} (weight {weight:g} > 0)"
    if value is None:
        raise KDTermError(f"{where} is None: the term was not computed")
    if not isinstance(value, Tensor):
        raise KDTermError(
            f"{where} is a {type(value).__name__} ({value!r}), not a torch.Tensor: it cannot carry gradients"
        )
    if value.numel() != 1:
        raise KDTermError(f"{where} has shape {tuple(value.shape)}; expected a scalar loss")
    if not bool(torch.isfinite(value.detach()).all()):
        raise KDTermError(f"{where} is not finite ({float(value.detach().reshape(-1)[0])})")
    if torch.is_grad_enabled() and not value.requires_grad:
        raise KDTermError(
            f"{where} does not require grad: it is detached from the student's graph, so it cannot train the student"
        )
    return value


class KDTermMonitor:
    """Per-epoch bookkeeping of the KD terms: logs their epoch means and catches terms that never contribute.

    ``update`` is called once per batch with the terms of that batch; ``end_epoch`` returns the per-term means over
    the batches in which each term was reported, raises ``KDTermError`` if a term with weight > 0 was exactly 0 in
    every batch of the epoch (or never reported), and resets for the next epoch.

    Args:
        weights: ``{term name: weight}``. Terms reported but absent here are logged and never checked.
        weight_names: optional ``{term name: config key}`` used in messages (default ``"<term>_weight"``).
    """

    def __init__(self, weights: Mapping[str, float], weight_names: Optional[Mapping[str, str]] = None) -> None:
        self.weights: Dict[str, float] = {name: _check_weight(name, weight) for name, weight in weights.items()}
        self.weight_names: Dict[str, str] = dict(weight_names or {})
        self._reset()

    def _reset(self) -> None:
        self.n_batches = 0
        self._sums: Dict[str, float] = {}
        self._counts: Dict[str, int] = {}
        self._nonzero: Dict[str, bool] = {}

    def _weight_label(self, name: str) -> str:
        return f"{self.weight_names.get(name, f'{name}_weight')}={self.weights[name]:g}"

    def update(self, terms: Mapping[str, Union[Tensor, float]]) -> None:
        """Record one batch. Raises ``KDTermError`` at once if a term is NaN/inf or not a scalar."""
        batch_values: Dict[str, float] = {}
        for name, term in terms.items():
            if isinstance(term, Tensor):
                if term.numel() != 1:
                    raise KDTermError(f"KD term {name!r} has shape {tuple(term.shape)}; expected a scalar")
                value = float(term.detach().float().reshape(-1)[0])
            elif isinstance(term, (int, float)) and not isinstance(term, bool):
                value = float(term)
            else:
                raise KDTermError(f"KD term {name!r} is a {type(term).__name__}, expected a tensor or a float")
            if not math.isfinite(value):
                weight = f" (weight {self._weight_label(name)})" if name in self.weights else ""
                raise KDTermError(f"KD term {name!r}{weight} is {value} in batch {self.n_batches + 1}")
            batch_values[name] = value
        self.n_batches += 1
        for name, value in batch_values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1
            self._nonzero[name] = self._nonzero.get(name, False) or value != 0.0

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        """Per-term means of the epoch; raises ``KDTermError`` for a weighted term that never contributed. Resets."""
        means = {name: self._sums[name] / self._counts[name] for name in self._sums}
        problems = []
        for name, weight in self.weights.items():
            if weight == 0:
                continue
            if self._counts.get(name, 0) == 0:
                problems.append(
                    f"KD term {name!r} was never reported in the {self.n_batches} batches of epoch {epoch} while its "
                    f"weight {self._weight_label(name)} > 0: the teacher signal is not reaching the loss"
                )
            elif not self._nonzero[name]:
                problems.append(
                    f"KD term {name!r} was exactly 0 for all {self._counts[name]} batches of epoch {epoch} while its "
                    f"weight {self._weight_label(name)} > 0: the teacher signal is not reaching the loss"
                )
        self._reset()
        if problems:
            raise KDTermError("; ".join(problems))
        return means


class KDTermReporter:
    """Model mixin: the KD protocol a distilled model offers its trainer (``KDMonitoring``).

    - ``loss_names()``: the names of the parts of ``calculate_loss``'s tuple, in order;
    - ``kd_term_weights()``: ``{term: weight}`` of the weighted terms this model reports, each checked every batch
      (``check_kd_term``, by the model) and every epoch (``KDTermMonitor``, by the trainer);
    - ``KD_TERM_WEIGHT_KEYS``: ``{term: config key of its weight}``, named in the guards' messages;
    - ``kd_terms``: the unweighted, detached terms (and diagnostics) of the last training batch, which the trainer
      averages over the epoch and logs by name. The model fills it in ``calculate_loss``.
    """

    KD_TERM_WEIGHT_KEYS: Mapping[str, str] = {}
    kd_terms: Dict[str, Tensor]

    def init_kd_terms(self) -> None:
        self.kd_terms = {}

    def loss_names(self) -> Tuple[str, ...]:
        raise NotImplementedError

    def kd_term_weights(self) -> Dict[str, float]:
        raise NotImplementedError
