"""Model selection on a smoothed validation curve: ``valid_smoothing: N`` (docs/MODELS.md, "Choosing the epoch").

RecBole's ``Trainer`` keeps the checkpoint of the evaluation with the best score and stops after ``stopping_step``
evaluations without a better one. On a small validation set (943 users for ml-100k) one evaluation's score moves by
about as much as the differences a run is meant to find, so a single spike can freeze the checkpoint early. With
``valid_smoothing`` N > 1 the plugin's trainers (``KDTrainer``, ``LLMTrainer``, ``SLMTrainer``) compare the mean of
the last N evaluations' scores instead. RecBole's own trainers (plain ``SASRec`` etc.) do not; a config that asks
them to is refused by ``check_valid_smoothing`` (a plain SASRec with smoothing: ``KDSASRec`` with ``kd_method: none``).
"""
from typing import List, Optional

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.errors import ConfigValueError


def valid_smoothing(config) -> int:
    """The config's ``valid_smoothing`` (a count >= 1; a config without the key: 1, RecBole's rule)."""
    return read_config(config, "valid_smoothing") or 1


class SmoothedValidation:
    """Trainer mixin (before RecBole's ``Trainer`` in the bases): ``_valid_epoch`` returns the smoothed score.
    A trainer that never calls ``init_valid_smoothing`` selects by RecBole's rule (N = 1)."""

    valid_smoothing: int = 1

    def init_valid_smoothing(self, config) -> None:
        """Read (and check) ``valid_smoothing`` when the trainer is built, before anything trains."""
        self.valid_smoothing = valid_smoothing(config)

    resumed_evaluation_scores: Optional[List[float]] = None

    def fit(self, *args, **kwargs):
        """RecBole's ``fit``, its smoothing window started empty (a second ``fit`` does not average the first's), or,
        after ``resume_checkpoint``, with the scores up to the checkpoint's epoch."""
        # each evaluation's own score in this fit, before smoothing
        self.evaluation_scores: List[float] = list(self.resumed_evaluation_scores or [])
        self.resumed_evaluation_scores = None
        return super().fit(*args, **kwargs)

    def trainer_state(self) -> dict:
        """The checkpoint's part (``compat.TrainerStateCheckpoint``): the scores the smoothing window reads."""
        return {**super().trainer_state(), "evaluation_scores": list(getattr(self, "evaluation_scores", []))}

    def load_trainer_state(self, state: dict) -> None:
        super().load_trainer_state(state)
        self.resumed_evaluation_scores = list(state.get("evaluation_scores", []))

    def _valid_epoch(self, valid_data, show_progress=False):
        """RecBole's evaluation of the selection split; with ``valid_smoothing`` N > 1 the score returned (what early
        stopping compares, the checkpoint is saved on, RecBole logs as ``valid_score`` and ``fit`` returns as the best
        score) is the mean of the last N evaluations' scores, fewer in the first N - 1. The result returned (the
        ``valid result`` lines, ``best_valid_result``) is still this evaluation's own.

            smoothed_j = mean(score_{j-N+1}, ..., score_j)    # j: the j-th evaluation (every eval_step epochs)
        """
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.evaluation_scores.append(valid_score)
        window = self.evaluation_scores[-self.valid_smoothing:]
        return sum(window) / len(window), valid_result


def check_valid_smoothing(config, trainer_class: type) -> None:
    """A ``ConfigValueError`` when ``valid_smoothing`` > 1 is asked of a trainer class that would ignore it."""
    smoothing = valid_smoothing(config)
    if smoothing > 1 and not issubclass(trainer_class, SmoothedValidation):
        raise ConfigValueError(
            f"valid_smoothing={smoothing} needs one of the plugin's trainers (KD students, LLMRec, BIGRec, SLMRec); "
            f"{config['model']} trains with RecBole's {trainer_class.__name__}, which selects on each evaluation's "
            f"own score. For a plain SASRec / GRU4Rec / BERT4Rec with smoothing use KDSASRec / KDGRU4Rec / KDBERT4Rec "
            f"with kd_method: none, or valid_smoothing: 1"
        )
