"""SLMRec: a shallow LLMRec (N decoder layers) distilled from a deep LLMRec teacher (M layers)
(docs/METHODS.md §2.2-§2.7).

The student is the teacher's architecture (``LLMRec``) truncated to N = ``llm_n_layers`` layers. The teacher's M
layers and the student's N layers form B = ``slm_blocks`` blocks; pair k = 1..B aligns the student's hidden state
after layer k·N/B with the teacher's after layer k·M/B, at the last prompt token (``distill.block_layer_pairs``;
the k = B pair is the final-norm states that feed the heads)::

    L = CE + λ1·D_cos + λ2·D_norm + λ3·L_ms                                    (offline, the paper)
    L = CE_t + CE_s + KD + λ3_t·L_ms^t + λ3_s·L_ms^s                           (online, kd_mode: online)

``L_ms`` scores items from the student's B-1 intermediate taps through adapters ``W_a^k`` applied to the raw
(un-normed) states: ``head: dot`` -> ``W_a^k = Linear(d_llm, d_item, bias=False)`` and logits ``W_a^k(h) @ Eᵀ``
with the student's item table E; ``head: linear`` -> ``W_a^k = Linear(d_llm, n_items, bias=False)`` whose output is
the logits (an adapter shaped like the linear head). ``slm_kd_scaling`` picks the official code's aggregation
(sums over blocks, unsquared L2; default) or the paper's (means, squared L2). KD terms are computed in float32 with
autocast off.

Offline (default): ``recbole_llmkd.run.build_model`` reads ``teacher`` (checkpoint or run directory) and the
teacher's backbone and hands them over (``SLMTeacher``); SLMRec builds the trained LLMRec from them in memory, puts
it in eval mode, run under ``torch.no_grad()`` with ``output_hidden_states``, and kept **outside**
the module tree (``object.__setattr__``): it is in no ``state_dict``, no optimizer, no parameter count.
Online: a fresh LLMRec of ``slm_teacher_n_layers`` layers is a submodule (``online_teacher``) trained jointly; it
shares the student's item table and has its own adapters.

``calculate_loss`` returns a tuple (each part is logged by RecBole as train_loss1..n) and leaves the unweighted
terms in ``kd_terms`` (the KD protocol, ``distill.KDTermReporter``) for ``SLMTrainer``'s ``KDTermMonitor`` (logged by name every epoch; NaN or an epoch of
exact zeros with a weight > 0 stops training).

Set-up checks (``SLMRecSetupError``, in ``__init__``, before any training; the ones that need no backbone,
``check_options``, ``teacher_blocks`` and ``check_teacher_dataset``, also in ``run.build_model`` before anything is
loaded): B divides M and N; teacher and
student share the backbone family (``model_type``) and hidden size unless ``slm_state_projection`` adds a
``Linear(d_student, d_teacher, bias=False)`` per block; the teacher checkpoint was trained on these item tokens;
N < M (a warning otherwise).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from recbole_llmkd.config_schema import read_config, values_set
from recbole_llmkd.data.keys import dataset_mismatch, item_tokens_fingerprint
from recbole_llmkd.distill import (
    KDTermError,
    KDTermReporter,
    alignment_reductions,
    block_layer_pairs,
    block_logit_kd,
    check_kd_term,
    cosine_alignment,
    multi_supervision_loss,
    norm_alignment,
)
from recbole_llmkd.errors import ConfigValueError
from recbole_llmkd.model.llmrec import (
    LLMParts,
    LLMRec,
    missing_parts_error,
)
from recbole_llmkd.model.restore import restore

ONLINE_TEACHER = "online_teacher"
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


class SLMRecSetupError(ConfigValueError):
    """The SLMRec teacher/student set-up is invalid (blocks, backbone family, hidden size, dataset, options)."""


@dataclass
class SLMTeacher:
    """The offline teacher as ``recbole_llmkd.run.build_model`` read it: the checkpoint's path, its header (its
    ``other_parameter`` plus ``config_max_len``, the teacher's ``MAX_ITEM_LIST_LENGTH``), the saved checkpoint
    (``config``, ``state_dict``, ``other_parameter``) and the keyword arguments its class is built with (``inputs``:
    its ``LLMParts``). SLMRec builds the trained teacher from them in memory (``build``)."""

    checkpoint: str
    header: dict
    saved: dict
    inputs: dict = field(default_factory=dict)

    def build(self, dataset, device) -> LLMRec:
        """The trained teacher on ``dataset``: the saved config's LLMRec (or subclass) on ``inputs``, with its trained
        state (``restore``: identity first); on ``device``, eval mode, frozen."""
        config = self.saved["config"]
        config["device"] = torch.device(device)
        teacher = restore(config.model_class(config, dataset, **self.inputs), self.saved, config["device"])
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher


class SLMRec(KDTermReporter, LLMRec):
    r"""Shallow LLMRec student distilled block-wise from a deep LLMRec teacher (SLMRec, ICLR 2025)."""

    KD_TERM_WEIGHT_KEYS = {
        "d_cos": "slm_lambda1",
        "kd_logit": "slm_lambda1",
        "d_norm": "slm_lambda2",
        "l_ms": "slm_lambda3",
        "l_ms_teacher": "slm_online_lambda3_teacher",
    }

    @staticmethod
    def check_options(config) -> None:
        """Every set-up check that needs the config alone (``run.build_model`` calls it before loading anything)."""
        kd_mode = read_config(config, "kd_mode", SLMRecSetupError)
        kd_loss_type = read_config(config, "kd_loss_type", SLMRecSetupError)
        if kd_mode == "offline" and kd_loss_type != "cosine":
            raise SLMRecSetupError(
                f"kd_loss_type={kd_loss_type!r} needs W_a adapters on the teacher, which only the online variant "
                "trains: use kd_mode: online, or kd_loss_type: cosine (the offline block loss)"
            )
        if read_config(config, "slm_student_init", SLMRecSetupError) == "teacher" and kd_mode == "online":
            raise SLMRecSetupError(
                "slm_student_init: teacher copies a *trained* teacher; the online teacher starts untrained. "
                "Use slm_student_init: base with kd_mode: online"
            )
        if config["llm_n_layers"] is None:
            raise SLMRecSetupError("SLMRec needs llm_n_layers: the student's number of decoder layers N (e.g. M/2)")
        for key in ("llm_n_layers", "slm_lambda1", "slm_lambda2", "slm_online_lambda3_teacher", "slm_kd_scaling",
                    "online_detach_teacher", "slm_state_projection", "slm_copy_item_table"):
            read_config(config, key, SLMRecSetupError)
        if read_config(config, "slm_blocks", SLMRecSetupError) == 1 and read_config(config, "slm_lambda3", SLMRecSetupError) > 0:
            raise SLMRecSetupError(
                f"slm_blocks=1 leaves no intermediate tap for multi-supervision while slm_lambda3="
                f"{config['slm_lambda3']:g} > 0; set slm_lambda3: 0 or slm_blocks >= 2"
            )
        if kd_mode == "offline" and not read_config(config, "teacher", SLMRecSetupError):
            raise SLMRecSetupError(
                "kd_mode: offline needs teacher=<LLMRec checkpoint (.pth) or run directory> (--teacher=...)"
            )
        if kd_mode == "online" and read_config(config, "slm_teacher_n_layers", SLMRecSetupError) is None:
            raise SLMRecSetupError("kd_mode: online needs slm_teacher_n_layers: the online teacher's depth M")
        LLMRec.check_options(config)  # the student's own LLMRec keys

    @staticmethod
    def teacher_blocks(config, teacher_header: Optional[dict] = None,
                       teacher_checkpoint: Optional[str] = None) -> Tuple[int, List[Tuple[int, int]]]:
        """``(M, block pairs)``: the teacher's depth (offline: from its checkpoint's ``teacher_header``, which must
        agree with ``slm_teacher_n_layers`` when that is set; online: ``slm_teacher_n_layers``) and
        ``block_layer_pairs(M, N, B)``. Needs no backbone: ``run.build_model`` calls it before loading any."""
        n_teacher_configured = read_config(config, "slm_teacher_n_layers", SLMRecSetupError)  # M, optional offline
        if teacher_header is not None:
            n_teacher = int(teacher_header["backbone_identity"]["n_layers"])
            if n_teacher_configured is not None and n_teacher_configured != n_teacher:
                raise SLMRecSetupError(
                    f"slm_teacher_n_layers={n_teacher_configured} but the teacher checkpoint "
                    f"{teacher_checkpoint} has {n_teacher} decoder layers"
                )
        else:
            n_teacher = n_teacher_configured
        n_student = read_config(config, "llm_n_layers", SLMRecSetupError)  # N
        try:
            return n_teacher, block_layer_pairs(n_teacher, n_student, read_config(config, "slm_blocks", SLMRecSetupError))
        except ValueError as error:
            raise SLMRecSetupError(f"invalid SLMRec blocks: {error}") from error

    @staticmethod
    def check_teacher_dataset(teacher: "SLMTeacher", dataset) -> None:
        """The offline teacher's checkpoint was trained on the item tokens of ``dataset`` (checked from its header,
        before the teacher is loaded)."""
        mismatch = dataset_mismatch(teacher.header.get("dataset_fingerprint") or {}, item_tokens_fingerprint(dataset))
        if mismatch:
            raise SLMRecSetupError(f"teacher {teacher.checkpoint} was {mismatch}: use the teacher's dataset and filtering")

    def __init__(self, config, dataset, parts: Optional[LLMParts] = None, teacher: Optional["SLMTeacher"] = None,
                 teacher_parts: Optional[LLMParts] = None):
        """What ``recbole_llmkd.run.build_model`` loaded: ``parts`` (the student's backbone of N layers, item vectors,
        titles) and, offline, ``teacher`` (the trained LLMRec, frozen, with its checkpoint's path and header) or,
        online, ``teacher_parts`` (the online teacher's backbone of M layers)."""
        logger = logging.getLogger(__name__)

        def value(key):
            return read_config(config, key, SLMRecSetupError)

        self.check_options(config)
        self.kd_mode = value("kd_mode")
        self.kd_loss_type = value("kd_loss_type")
        self.student_init = value("slm_student_init")
        n_student = value("llm_n_layers")  # N
        self.n_blocks = value("slm_blocks")  # B
        self.lambda_cos = value("slm_lambda1")
        self.lambda_norm = value("slm_lambda2")
        self.lambda_ms = value("slm_lambda3")
        self.lambda_ms_teacher = value("slm_online_lambda3_teacher")
        self.kd_scaling = value("slm_kd_scaling")
        self.reductions = alignment_reductions(self.kd_scaling)
        self.detach_online_teacher = value("online_detach_teacher")
        self.state_projection_enabled = value("slm_state_projection")
        self.copy_item_table = value("slm_copy_item_table")
        if self.kd_mode == "offline" and teacher is None:
            raise SLMRecSetupError(
                "SLMRec was built without its teacher: build it with recbole_llmkd.run.build_model(config, dataset) "
                f"(run.prepare and run.load do), which loads teacher={config['teacher']!r} and hands it over"
            )
        if self.kd_mode == "online" and teacher_parts is None:
            raise missing_parts_error("SLMRec's online teacher")
        self.teacher_checkpoint = teacher.checkpoint if self.kd_mode == "offline" else None
        n_teacher, self.block_pairs = self.teacher_blocks(
            config, teacher.header if self.kd_mode == "offline" else None, self.teacher_checkpoint
        )
        if n_student >= n_teacher:
            logger.warning(
                f"SLMRec: the student has N={n_student} decoder layers, not fewer than the teacher's M={n_teacher}: "
                "nothing is made shallower"
            )

        super().__init__(config, dataset, parts)  # the student: LLMRec with N layers
        self.n_student_layers = int(self.backbone_identity["n_layers"])
        self.n_teacher_layers = n_teacher

        # the teacher
        if self.kd_mode == "offline":
            self._check_teacher_matches(teacher, dataset, config)
            teacher = teacher.build(dataset, config["device"])
            object.__setattr__(self, "teacher", teacher)  # outside the module tree: not saved, not optimised
        else:
            teacher = self._build_online_teacher(config, dataset, n_teacher, teacher_parts)
            self.online_teacher = teacher
            object.__setattr__(self, "teacher", teacher)
        teacher_identity = teacher.backbone_identity
        if int(teacher_identity["n_layers"]) != n_teacher:
            raise SLMRecSetupError(
                f"the teacher has {teacher_identity['n_layers']} decoder layers, expected M={n_teacher}"
            )
        self.teacher_identity = dict(teacher_identity)
        self.d_teacher = int(teacher_identity["hidden_size"])

        # state projection (different family / hidden size), multi-supervision adapters
        self.state_projection = None
        if self.state_projection_enabled:
            self.state_projection = nn.ModuleList(
                nn.Linear(self.d_llm, self.d_teacher, bias=False) for _ in range(self.n_blocks)
            )
        self.ms_adapters = self._make_adapters(self.d_llm)
        self.teacher_ms_adapters = self._make_adapters(self.d_teacher) if self.kd_mode == "online" else None
        if self.kd_mode == "online" and self.kd_loss_type == "logit" and self.n_blocks > 1:
            missing = [
                name
                for name, weight in (("slm_lambda3", self.lambda_ms), ("slm_online_lambda3_teacher", self.lambda_ms_teacher))
                if weight == 0
            ]
            if missing:
                raise SLMRecSetupError(
                    f"kd_loss_type: logit compares block logits from W_a adapters on both sides; {', '.join(missing)} = 0 "
                    "leaves those adapters untrained (the official code then silently falls back to CE). Set both "
                    "slm_lambda3 and slm_online_lambda3_teacher > 0, or use kd_loss_type: cosine"
                )

        # student initialisation
        if self.kd_mode == "offline":
            self._initialise_from_teacher(config)
            self.to(config["device"])

        self.init_kd_terms()
        logger.info(
            f"SLMRec ({self.kd_mode}): teacher {teacher_identity['spec']} M={n_teacher} layers "
            f"(d {self.d_teacher}{', ' + self.teacher_checkpoint if self.teacher_checkpoint else ''}), student "
            f"N={self.n_student_layers} layers (d {self.d_llm}), B={self.n_blocks} blocks, (student, teacher) hidden "
            f"state pairs {self.block_pairs}, λ1={self.lambda_cos:g} λ2={self.lambda_norm:g} λ3={self.lambda_ms:g}, "
            f"scaling {self.kd_scaling}, init {self.student_init}"
        )

    # ----- set-up -----------------------------------------------------------------------------------------
    def _check_teacher_matches(self, teacher: SLMTeacher, dataset, config) -> None:
        """Same item tokens, backbone family and hidden size (or a projection) as the teacher checkpoint."""
        self.check_teacher_dataset(teacher, dataset)
        header = teacher.header
        self._check_family(header["backbone_identity"], self.state_projection_enabled)
        teacher_len = header.get("config_max_len")
        if teacher_len is not None and teacher_len != config["MAX_ITEM_LIST_LENGTH"]:
            self.logger.warning(
                f"SLMRec: the teacher was trained with MAX_ITEM_LIST_LENGTH={teacher_len}, the student uses "
                f"{config['MAX_ITEM_LIST_LENGTH']}: the teacher sees prompts of a length it was not trained on"
            )

    def _check_family(self, teacher_identity: dict, projection: bool) -> None:
        mine = self.backbone_identity
        differences = [
            f"{key} {teacher_identity.get(key)!r} (teacher) vs {mine.get(key)!r} (student)"
            for key in ("model_type", "hidden_size")
            if teacher_identity.get(key) != mine.get(key)
        ]
        if differences and not projection:
            raise SLMRecSetupError(
                "teacher and student backbones differ: " + "; ".join(differences)
                + ". Use the teacher's backbone for the student, or set slm_state_projection: True to align through "
                "a learned Linear(d_student, d_teacher) per block"
            )
        if not differences and teacher_identity.get("sha256") != mine.get("sha256"):
            self.logger.warning(
                f"SLMRec: teacher backbone {teacher_identity.get('spec')!r} (sha256 {str(teacher_identity.get('sha256'))[:12]}…) "
                f"and student backbone {mine.get('spec')!r} (sha256 {str(mine.get('sha256'))[:12]}…) are different weights "
                "of the same family: the student does not start from the teacher's base"
            )

    def _build_online_teacher(self, config, dataset, n_teacher: int, teacher_parts: LLMParts) -> LLMRec:
        """A fresh LLMRec of M layers on ``teacher_parts`` (the same base), sharing the student's item table."""
        with values_set(config, llm_n_layers=n_teacher):
            teacher = LLMRec(config, dataset, teacher_parts)
        self._check_family(teacher.backbone_identity, self.state_projection_enabled)
        teacher.item_embedding = self.item_embedding  # one item table for both (the paper's shared table)
        return teacher

    def _make_adapters(self, d_state: int) -> nn.ModuleList:
        out_features = self.item_dim if self.head_type == "dot" else self.n_items
        return nn.ModuleList(nn.Linear(d_state, out_features, bias=False) for _ in range(self.n_blocks - 1))

    def _initialise_from_teacher(self, config) -> None:
        """``slm_student_init: teacher``: copy LoRA of layers < N, input_proj, head; item table per slm_copy_item_table."""
        teacher = self.teacher
        teacher_state = teacher.state_dict()  # trained tensors only
        own_state = self.state_dict()
        to_copy = {}
        if self.item_table_frozen or teacher.item_table_frozen:
            if self.item_table_sha256 != teacher.item_table_sha256:
                self.logger.warning(
                    f"SLMRec: student item table {self.item_table_source!r} differs from the teacher's "
                    f"{teacher.item_table_source!r}: teacher and student score in different item spaces"
                )
            if not self.item_table_frozen and self.copy_item_table:
                to_copy["item_embedding.weight"] = teacher.item_embedding.weight.detach()
        elif self.copy_item_table:
            to_copy["item_embedding.weight"] = teacher_state["item_embedding.weight"]
        if self.student_init == "teacher":
            if self.d_llm != self.d_teacher:
                raise SLMRecSetupError(
                    f"slm_student_init: teacher copies the teacher's layers, but d_llm differs (teacher {self.d_teacher}, "
                    f"student {self.d_llm})"
                )
            n_lora = 0
            for key, value in teacher_state.items():
                if key.startswith("llm."):
                    layer = _LAYER_INDEX.search(key)
                    if layer is None or int(layer.group(1)) >= self.n_student_layers:
                        continue
                    n_lora += 1
                elif not key.startswith(("input_proj.", "head.")):
                    continue
                to_copy[key] = value
            if n_lora == 0:
                raise SLMRecSetupError("slm_student_init: teacher found no LoRA tensors of layers < N in the teacher")
        for key, value in to_copy.items():
            if key not in own_state:
                raise SLMRecSetupError(
                    f"slm_student_init: the teacher's {key!r} has no counterpart in the student: use the teacher's "
                    "lora_r, lora_target_modules, head and item_table settings"
                )
            if tuple(own_state[key].shape) != tuple(value.shape):
                raise SLMRecSetupError(
                    f"cannot copy the teacher's {key!r}: shape {tuple(value.shape)} (teacher) vs "
                    f"{tuple(own_state[key].shape)} (student); use the teacher's lora_r, item_dim and head"
                )
        own_parameters = dict(self.named_parameters())
        with torch.no_grad():
            for key, value in to_copy.items():
                own_parameters[key].copy_(value.to(own_parameters[key].device))
        self.copied_from_teacher = sorted(to_copy)

    # ----- checkpoint ---------------------------------------------------------------------------------------
    def is_frozen_by_design(self, name: str) -> bool:
        prefix = ONLINE_TEACHER + "."
        if name.startswith(prefix):
            return self.online_teacher.is_frozen_by_design(name[len(prefix):])
        return super().is_frozen_by_design(name)

    def other_parameter(self) -> dict:
        para = super().other_parameter()
        para["slmrec_teacher"] = {
            "kd_mode": self.kd_mode,
            "checkpoint": self.teacher_checkpoint,
            "backbone_identity": dict(self.teacher_identity),
            "block_pairs": [list(pair) for pair in self.block_pairs],
        }
        return para

    # ----- KD -----------------------------------------------------------------------------------------------
    def kd_term_weights(self) -> Dict[str, float]:
        """``{term: weight}`` of every KD term ``calculate_loss`` reports (for ``KDTermMonitor``)."""
        if self.kd_mode == "online" and self.kd_loss_type == "logit":
            weights = {"kd_logit": self.lambda_cos}
        else:
            weights = {"d_cos": self.lambda_cos, "d_norm": self.lambda_norm}
        if self.n_blocks > 1:
            weights["l_ms"] = self.lambda_ms
            if self.kd_mode == "online":
                weights["l_ms_teacher"] = self.lambda_ms_teacher
        return weights

    @staticmethod
    def _check_hidden_states(side: str, hidden_states, n_layers: int, batch_size: int) -> None:
        if hidden_states is None or len(hidden_states) != n_layers + 1:
            got = "None" if hidden_states is None else f"{len(hidden_states)}"
            raise KDTermError(
                f"the {side} returned {got} hidden states; expected n_layers + 1 = {n_layers + 1} "
                "(embeddings + one per decoder layer): without them there is no block alignment"
            )
        for index, state in enumerate(hidden_states):
            if state.dim() != 3 or state.shape[0] != batch_size:
                raise KDTermError(
                    f"the {side}'s hidden_states[{index}] has shape {tuple(state.shape)}; expected [B={batch_size}, T, d]"
                )

    def _teacher_forward(self, interaction) -> Tuple[torch.Tensor, tuple]:
        """(teacher user state [B, d_t], its M+1 hidden states); offline under no_grad."""
        if self.kd_mode == "offline":
            with torch.no_grad():
                return self.teacher.user_state(interaction, output_hidden_states=True)
        return self.online_teacher.user_state(interaction, output_hidden_states=True)

    def _block_logits(self, adapters: nn.ModuleList, taps: List[torch.Tensor], item_table: torch.Tensor) -> List[torch.Tensor]:
        """Logits [B, n_items] of every intermediate tap through its adapter (fp32, PAD left to the loss)."""
        logits = []
        for adapter, tap in zip(adapters, taps):
            projected = adapter(tap.float())  # [B, d_item] (dot) | [B, n_items] (linear)
            logits.append(projected @ item_table.float().t() if self.head_type == "dot" else projected)
        return logits

    def kd_states(self, interaction) -> dict:
        """Student and teacher forwards with the aligned last-token states of every block.

        Returns ``student_state`` [B, d_s], ``teacher_state`` [B, d_t], ``student_taps`` / ``teacher_taps``: B states
        ``hidden_states[k·N/B][:, -1]`` / ``hidden_states[k·M/B][:, -1]`` (k = 1..B).
        """
        batch_size = interaction[self.ITEM_SEQ].shape[0]
        student_state, student_hidden = self.user_state(interaction, output_hidden_states=True)
        self._check_hidden_states("student", student_hidden, self.n_student_layers, batch_size)
        teacher_state, teacher_hidden = self._teacher_forward(interaction)
        self._check_hidden_states("teacher", teacher_hidden, self.n_teacher_layers, batch_size)
        return {
            "student_state": student_state,
            "teacher_state": teacher_state,
            "student_taps": [student_hidden[s][:, -1, :] for s, _ in self.block_pairs],  # B × [B, d_s]
            "teacher_taps": [teacher_hidden[t][:, -1, :] for _, t in self.block_pairs],  # B × [B, d_t]
        }

    def calculate_loss(self, interaction):
        target = interaction[self.POS_ITEM_ID]  # [B]
        states = self.kd_states(interaction)
        student_logits = self.score(states["student_state"])  # [B, n_items]
        terms = {"ce": F.cross_entropy(student_logits, target)}
        online = self.kd_mode == "online"
        with torch.autocast(device_type=target.device.type, enabled=False):  # KD terms in float32
            student_taps = [tap.float() for tap in states["student_taps"]]  # B × [B, d_s]
            teacher_taps = [tap.float() for tap in states["teacher_taps"]]  # B × [B, d_t]
            item_table = self.item_embedding.weight  # [n_items, d_item]
            student_block_logits = self._block_logits(self.ms_adapters, student_taps[:-1], item_table)  # B-1 × [B, n_items]
            teacher_block_logits = (
                self._block_logits(self.teacher_ms_adapters, teacher_taps[:-1], item_table) if online else None
            )
            if online and self.kd_loss_type == "logit":
                terms["kd_logit"] = block_logit_kd(  # teacher logits detached inside
                    student_block_logits + [student_logits],
                    teacher_block_logits + [self.teacher.score(states["teacher_state"])],
                    **self.reductions["block_logit_kd"],
                )
            else:
                if online and self.detach_online_teacher:
                    teacher_taps = [tap.detach() for tap in teacher_taps]
                aligned_taps = (
                    [projection(tap) for projection, tap in zip(self.state_projection, student_taps)]
                    if self.state_projection is not None
                    else student_taps
                )  # B × [B, d_t]
                terms["d_cos"] = cosine_alignment(aligned_taps, teacher_taps, **self.reductions["cosine"])
                terms["d_norm"] = norm_alignment(aligned_taps, teacher_taps, **self.reductions["norm"])
            if self.n_blocks > 1:
                terms["l_ms"] = multi_supervision_loss(student_block_logits, target, **self.reductions["multi_supervision"])
            if online:
                terms["ce_teacher"] = F.cross_entropy(self.teacher.score(states["teacher_state"]), target)
                if self.n_blocks > 1:
                    terms["l_ms_teacher"] = multi_supervision_loss(
                        teacher_block_logits, target, **self.reductions["multi_supervision"]
                    )
        weights = self.kd_term_weights()
        for name, weight in weights.items():
            check_kd_term(name, terms.get(name), weight)
        self.kd_terms = {name: value.detach() for name, value in terms.items()}
        losses = []
        for name in self.loss_names():
            losses.append(terms[name] * weights[name] if name in weights else terms[name])
        return tuple(losses)

    def loss_names(self) -> Tuple[str, ...]:
        """Names of the parts of ``calculate_loss``'s tuple, in order (train_loss1..n in RecBole's log)."""
        names = ["ce"]
        names += ["kd_logit"] if (self.kd_mode == "online" and self.kd_loss_type == "logit") else ["d_cos", "d_norm"]
        if self.n_blocks > 1:
            names.append("l_ms")
        if self.kd_mode == "online":
            names.append("ce_teacher")
            if self.n_blocks > 1:
                names.append("l_ms_teacher")
        return tuple(names)

    def train(self, mode: bool = True):
        super().train(mode)
        teacher = self.__dict__.get("teacher")
        if teacher is not None and self.kd_mode == "offline":
            teacher.eval()  # the frozen teacher never leaves eval mode (no LoRA dropout)
        return self

    def teacher_module(self) -> Optional[LLMRec]:
        return self.__dict__.get("teacher")
