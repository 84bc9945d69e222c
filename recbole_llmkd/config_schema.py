"""The declared schema of the plugin's config keys: type, range and choices, in one place.

Defaults are not here: they live in the property files (``properties/model/<Class>.yaml``, read through the model
class's MRO by ``recbole_llmkd.config.Config``). This module only says which values a key accepts. Every plugin
model and trainer reads its keys with ``read_config(config, key)``, which returns the value (an ``int`` key as
``int``, a number as ``float``, a flag as ``bool``) or raises one error that names the key, the value and what is
allowed, e.g. ``rd_weight=-1 is not supported; expected a finite number >= 0``. The error is a
``ConfigValueError`` (or the subclass the caller passes), so the CLIs print it on one line.

Checks that relate several keys, or a key to the data or the teacher (``rd_topk`` below the number of items, B
dividing the layer counts), stay with the model that knows them.
"""
import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, Type

from recbole_llmkd.distill.hidden import SLM_KD_SCALINGS
from recbole_llmkd.distill.ranking import CONFIDENCE_MODES, RD_NEG_TERMS, TANG_WANG_WEIGHTINGS, WEIGHT_NORMS
from recbole_llmkd.errors import ConfigValueError

# Choices of the Distiller (DLLM2Rec students).
KD_METHODS = ("none", "logit", "rd", "dllm2rec")
ED_PROJECTORS = ("linear", "mlp")
ED_APPLY_TO = ("input", "input_and_output")
ED_MODES = ("offset", "replace")
ED_SCALES = ("fixed", "id_norm", "learned")
ITEM_INITS = ("random", "text_encoder")
BASE_LOSSES = ("native", "bce1")
SELECT_ON = ("valid", "test")
# Choices of the LLM recommenders and SLMRec.
HEADS = ("dot", "linear")
TITLE_VIEWS = ("tokens", "cached")  # use_item_titles: the title as prompt tokens, or one cached state per item
KD_MODES = ("offline", "online")
KD_LOSS_TYPES = ("cosine", "logit")
STUDENT_INITS = ("base", "teacher")
# Choices of the LLM trainers.
TRAIN_EXAMPLE_CHOICES = ("all_prefixes", "last_per_user")
SAMPLED_EVAL_CHOICES = (None, False, True, "test", "valid_and_test")
LEARNERS = ("adamw",)


@dataclass(frozen=True)
class Key:
    """What one config key accepts.

    Args:
        kind: ``number`` (finite int or float, returned as float), ``int`` (returned as int), ``flag`` (bool),
            ``choice`` (one of ``choices``), ``text`` (a string), ``path`` (a string or path), ``pair`` (two numbers),
            ``names`` (a non-empty list of strings, returned as a list).
        choices: the accepted values of a ``choice`` key.
        minimum: lower bound of a ``number`` or ``int`` key.
        exclusive: ``minimum`` itself is not accepted (``> minimum`` instead of ``>= minimum``).
        below: exclusive upper bound of a ``number`` or ``int`` key (``< below``).
        nullable: ``~`` (None) is accepted and returned as None (its meaning is the key's comment in the yaml).
        ignore_case: a ``choice`` key compared in lower case (and returned lower-cased).
        note: said after what is allowed.
    """

    kind: str
    choices: Tuple[Any, ...] = ()
    minimum: Optional[float] = None
    exclusive: bool = False
    below: Optional[float] = None
    nullable: bool = False
    ignore_case: bool = False
    note: str = ""

    def allowed(self) -> str:
        """What the key accepts, in words."""
        if self.kind == "choice":
            text = "one of " + ", ".join("~" if c is None else str(c) for c in self.choices)
        else:
            text = {
                "number": "a finite number", "int": "an int", "flag": "True or False", "text": "a string",
                "path": "a path", "pair": "two numbers", "names": "a non-empty list of names",
            }[self.kind]
            if self.minimum is not None:
                text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
            if self.below is not None:
                text += f"{' and' if self.minimum is not None else ''} < {self.below:g}"
        if self.nullable and None not in self.choices:
            text += " or ~"
        return f"{text} ({self.note})" if self.note else text

    def accepts(self, value) -> bool:
        if value is None:
            return self.nullable or None in self.choices
        if self.kind == "choice":
            value = value.lower() if self.ignore_case and isinstance(value, str) else value
            return any(value is c or (type(value) is type(c) and value == c) for c in self.choices)
        if self.kind == "flag":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind == "path":
            return isinstance(value, (str, os.PathLike))
        if self.kind == "pair":
            return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
        if self.kind == "names":
            return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)
        if not _is_number(value) or (self.kind == "int" and not float(value).is_integer()):
            return False
        if self.below is not None and not value < self.below:
            return False
        if self.minimum is None:
            return True
        return value > self.minimum if self.exclusive else value >= self.minimum

    def convert(self, value):
        if value is None:
            return None
        if self.kind == "number":
            return float(value)
        if self.kind == "int":
            return int(value)
        if self.kind == "pair":
            return tuple(float(v) for v in value)
        if self.kind == "names":
            return list(value)
        if self.kind == "choice" and self.ignore_case and isinstance(value, str):
            return value.lower()
        return value


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _choice(choices, **options) -> Key:
    return Key("choice", tuple(choices), **options)


_WEIGHT = Key("number", minimum=0.0)
_POSITIVE = Key("number", minimum=0.0, exclusive=True)
_COUNT = Key("int", minimum=1)
_FLAG = Key("flag")

SCHEMA: Dict[str, Key] = {
    # Distiller: DLLM2Rec students (properties/model/Distiller.yaml)
    "teacher": Key("path", nullable=True),
    "cross_fit_folds": Key("int", minimum=2, nullable=True),
    "cross_fit_fold": Key("int", minimum=0, nullable=True),
    "kd_method": _choice(KD_METHODS),
    "rd_topk": _COUNT,
    "rd_beta": _POSITIVE,
    "gamma_p": _WEIGHT,
    "gamma_c": _WEIGHT,
    "gamma_o": _WEIGHT,
    "rd_weight": _WEIGHT,
    "rd_weight_norm": _choice(WEIGHT_NORMS),
    "rd_neg_term": _choice(RD_NEG_TERMS),
    "confidence_mode": _choice(CONFIDENCE_MODES),
    "confidence_temp": _POSITIVE,
    "rd_filter_candidates": _FLAG,
    "ed_weight": _WEIGHT,
    "ed_projector": _choice(ED_PROJECTORS),
    "ed_apply_to": _choice(ED_APPLY_TO),
    "ed_mode": _choice(ED_MODES),
    "ed_scale": _choice(ED_SCALES),
    "ed_scale_init": _POSITIVE,
    "item_init": _choice(ITEM_INITS),
    "text_encoder": Key("path"),
    "ed_folded": _FLAG,
    "base_loss": _choice(BASE_LOSSES),
    "kd_temperature": _POSITIVE,
    "logit_weight": _WEIGHT,
    "tw_lambda": _POSITIVE,
    "tw_mu": _WEIGHT,
    "tw_weighting": _choice(TANG_WANG_WEIGHTINGS),
    "select_on": _choice(SELECT_ON),
    "valid_smoothing": _COUNT,
    # LLMRec (properties/model/LLMRec.yaml)
    "llm_n_layers": Key("int", minimum=1, nullable=True),
    "llm_bf16": _FLAG,
    "llm_prefix_cache": _FLAG,
    "item_table": Key("path"),
    "item_dim": _COUNT,
    "head": _choice(HEADS),
    "use_item_titles": _FLAG,
    "llm_title_max_tokens": _COUNT,
    "llm_title_view": _choice(TITLE_VIEWS),
    "eval_batch_size": _COUNT,
    # LLM backbone and LoRA of LLMRec, BIGRec and SLMRec (recbole_llmkd/llm/lora.py: backbone_from_config, lora_from_config)
    "llm_gradient_checkpointing": _FLAG,
    "lora_r": _COUNT,
    "lora_alpha": _COUNT,
    "lora_dropout": Key("number", minimum=0.0, below=1.0),
    "lora_target_modules": Key("names", note="module names such as gate_proj, up_proj"),
    # BIGRec (properties/model/BIGRec.yaml)
    "bigrec_template": Key("text"),
    "bigrec_instruction": Key("text"),
    "bigrec_history_prefix": Key("text"),
    "bigrec_train_on_inputs": _FLAG,
    "bigrec_num_beams": _COUNT,
    "bigrec_max_new_tokens": _COUNT,
    "bigrec_pop_gamma": _WEIGHT,
    # SLMRec (properties/model/SLMRec.yaml)
    "slm_train_examples": _choice(TRAIN_EXAMPLE_CHOICES),
    "kd_mode": _choice(KD_MODES),
    "slm_teacher_n_layers": Key("int", minimum=1, nullable=True),
    "slm_student_init": _choice(STUDENT_INITS),
    "slm_copy_item_table": _FLAG,
    "slm_state_projection": _FLAG,
    "slm_blocks": _COUNT,
    "slm_lambda1": _WEIGHT,
    "slm_lambda2": _WEIGHT,
    "slm_lambda3": _WEIGHT,
    "slm_kd_scaling": _choice(SLM_KD_SCALINGS),
    "kd_loss_type": _choice(KD_LOSS_TYPES),
    "online_detach_teacher": _FLAG,
    "slm_online_lambda3_teacher": _WEIGHT,
    # LLMTrainer / SLMTrainer (LLMRec.yaml, BIGRec.yaml, SLMRec.yaml)
    "llm_train_examples": _choice(TRAIN_EXAMPLE_CHOICES),
    "learner": _choice(
        LEARNERS, nullable=True, ignore_case=True, note="the LLM trainers train with AdamW, docs/METHODS.md §2.5"
    ),
    "adam_betas": Key("pair"),
    "adam_eps": _POSITIVE,
    "warmup_steps": Key("int", minimum=0),
    "slm_eval_sampled": _choice(SAMPLED_EVAL_CHOICES),
    "slm_eval_negatives": _COUNT,
    "slm_eval_seed": Key("int", nullable=True),
}


def read_config(config, key: str, error: Type[ConfigValueError] = ConfigValueError):
    """``config[key]`` checked against ``SCHEMA[key]`` (converted to its kind); a key absent from ``config`` is None.

    Raises:
        error: the value is not allowed; the message names the key, the value and what is allowed.
    """
    spec = SCHEMA[key]
    value = config[key] if key in config else None
    if not spec.accepts(value):
        raise error(f"{key}={value!r} is not supported; expected {spec.allowed()}")
    return spec.convert(value)


@contextlib.contextmanager
def values_set(config: Any, **values: Any) -> Iterator[Any]:
    """``config`` with ``values`` set inside the ``with`` block and the previous values back after it (also on an
    error): e.g. the online SLMRec teacher's ``llm_n_layers`` on the student's config."""
    previous = {key: config[key] for key in values}
    for key, value in values.items():
        config[key] = value
    try:
        yield config
    finally:
        for key, value in previous.items():
            config[key] = value
