"""DLLM2Rec distillation as one reusable component (docs/METHODS.md §1.2-§1.8).

``Distiller`` is a mixin placed before a RecBole sequential model in the MRO. It adds

- teacher loading: ``config["teacher"]`` (an artifact file or a teacher run directory) is loaded and aligned with the
  training split in ``init_distiller``; the aligned teacher is kept **outside** the module tree
  (``object.__setattr__``), so nothing from it lands in ``state_dict`` or in the optimizer;
- collaborative embedding distillation (ED, §1.5): ``e_i = b_i + ed_weight·g(z_i)`` for the input items, with a
  ``linear``/``mlp`` projector ``g`` over the teacher's item text embeddings ``z`` (a non-persistent buffer);
- the training loss (§1.2, §1.4, baselines of issue 4): ``distill(...)`` returns ``(L_base, λ_d·L_kd)``;
- the fold step: ``fold_teacher()`` bakes ``ed_weight·g(z)`` into the item tables, ``save_folded(path)`` writes a
  checkpoint that needs no teacher file (a plain RecBole checkpoint whenever the folded model is one).

Distilling another RecBole sequential model whose item table is ``self.item_embedding`` takes a few lines::

    class KDNARM(Distiller, NARM):
        def __init__(self, config, dataset):
            NARM.__init__(self, config, dataset)
            self.init_distiller(config, dataset, item_table_rows=self.n_items, embedding_size=self.embedding_size)

        def forward(self, item_seq, item_seq_len):      # NARM's forward with one line changed:
            item_seq_emb = self.embed_input_items(item_seq)   # was: self.item_embedding(item_seq)
            ...

        def calculate_loss(self, interaction):
            item_seq, pos_items = interaction[self.ITEM_SEQ], interaction[self.POS_ITEM_ID]
            seq_output = self.forward(item_seq, interaction[self.ITEM_SEQ_LEN])           # [B, H]
            logits = seq_output @ self.output_item_table().T                             # [B, n_items]
            return self.distill(interaction, logits, item_seq, pos_items, lambda: self.loss_fct(logits, pos_items))

(and ``predict`` / ``full_sort_predict`` scoring with ``self.output_item_table()``); train it with
``recbole_llmkd.trainer.kd_trainer.KDTrainer``, which attaches the per-example teacher fields to the batches.

``kd_method`` (issue 4 point 4): ``none`` (plain student, no teacher), ``logit`` (Hinton KD over the teacher's
top-K scores, ``kd_temperature``), ``rd`` (Tang & Wang ranking distillation, ``tw_lambda``, ``tw_mu``,
``tw_weighting``), ``dllm2rec`` (importance-aware RD + ED). ED belongs to DLLM2Rec: it is active only with
``kd_method: dllm2rec`` and ``ed_weight > 0`` (the baselines are the plain student plus their own loss).
``rd_weight`` (λ_d) weighs whichever KD loss is selected.

Every distillation key has its default, with a comment, in ``properties/model/Distiller.yaml``, which
``recbole_llmkd.config.Config`` reads for any model with ``Distiller`` in its MRO (below the model's own yaml); the
values each key accepts are declared in ``recbole_llmkd.config_schema``. The KD protocol (``loss_names``,
``kd_term_weights``, ``kd_terms``) is ``recbole_llmkd.distill.KDTermReporter``'s.
"""
import copy
import os
from logging import getLogger
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.distill import (
    KDTermError,
    KDTermReporter,
    check_kd_term,
    combine_weights,
    confidence_weights,
    consistency_weights,
    dllm2rec_rd_loss,
    logit_kd_loss,
    mean_entropy,
    position_weights,
    tang_wang_rd_loss,
)
from recbole_llmkd.errors import ConfigValueError

# Per-example teacher fields the KD trainer attaches to the training split (docs/METHODS.md §3.1).
TEACHER_TOPK_FIELD = "teacher_topk"
TEACHER_SCORE_FIELD = "teacher_score"
TEACHER_TARGET_SCORE_FIELD = "teacher_target_score"
TEACHER_USER_STATE_FIELD = "teacher_user_state"

_MAX_NEGATIVE_DRAWS = 100


@torch.no_grad()
def student_topk_membership(teacher_topk: Tensor, student_logits: Tensor, k: int) -> Tensor:
    """``distill.consistency_weights`` computed with ``topk`` instead of a full sort (same result, ties included).

    ``c`` is in the student's top-k iff ``ŷ_c`` beats the k-th largest item logit ``v_k`` ([PAD] excluded); a
    candidate equal to ``v_k`` needs the exact tie rule (lower id first), so rows holding one fall back to
    ``consistency_weights``. A full sort of ``[B, n_items]`` per batch costs more than the student's own step on CPU.

    Returns:
        ``[B, K]`` float32 of 0/1, no gradient.
    """
    item_logits = student_logits.detach().float()  # [B, n_items]
    kth_value = item_logits[:, 1:].topk(k, dim=1).values[:, -1:]  # [B, 1]
    candidate_logits = item_logits.gather(1, teacher_topk.clamp_min(0))  # [B, K]
    real = teacher_topk > 0  # [B, K]
    membership = ((candidate_logits > kth_value) & real).float()  # [B, K]
    tied_rows = ((candidate_logits == kth_value) & real).any(dim=1)  # [B]
    if bool(tied_rows.any()):
        membership[tied_rows] = consistency_weights(teacher_topk[tied_rows], student_logits[tied_rows], k)
    return membership


class TeacherConfigError(ConfigValueError):
    """The distillation config is inconsistent (no teacher, unknown switch, artifact without what is needed)."""


class Distiller(KDTermReporter):
    """Mixin that turns a RecBole sequential model into a DLLM2Rec student (see the module docstring).

    The host class must define ``self.item_embedding`` (``nn.Embedding``, row 0 = [PAD]), ``self.n_items``, and
    call ``init_distiller`` at the end of its ``__init__``; its ``forward`` embeds items with
    ``embed_input_items`` and its scoring uses ``output_item_table``.
    """

    KD_TERM_WEIGHT_KEYS = {"logit_kd": "rd_weight", "rd_tw": "rd_weight", "rd": "rd_weight", "ed_ratio": "ed_weight"}

    # ----------------------------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------------------------

    def init_distiller(self, config, dataset, item_table_rows: int, embedding_size: int) -> None:
        """Read the KD config, load and align the teacher, build the ED projector.

        Args:
            dataset: the training split (``train_data._dataset``); the teacher rows are aligned with its rows.
            item_table_rows: rows of ``self.item_embedding`` (``n_items``, or ``n_items + 1`` with a mask token).
            embedding_size: width of ``self.item_embedding``.
        """

        def value(key):
            return read_config(config, key, TeacherConfigError)

        self.kd_method = value("kd_method")
        self.rd_topk = value("rd_topk")
        self.rd_beta = value("rd_beta")
        self.gamma_p = value("gamma_p")
        self.gamma_c = value("gamma_c")
        self.gamma_o = value("gamma_o")
        self.rd_weight = value("rd_weight")
        self.rd_weight_norm = value("rd_weight_norm")
        self.rd_neg_term = value("rd_neg_term")
        self.confidence_mode = value("confidence_mode")
        self.confidence_temp = value("confidence_temp")
        self.rd_filter_candidates = value("rd_filter_candidates")
        self.ed_weight = value("ed_weight")
        self.ed_projector_kind = value("ed_projector")
        self.ed_apply_to = value("ed_apply_to")
        self.ed_mode = value("ed_mode")
        self.ed_scale = value("ed_scale")
        self.ed_folded = value("ed_folded")
        self.base_loss = value("base_loss")
        self.kd_temperature = value("kd_temperature")
        self.tw_lambda = value("tw_lambda")
        self.tw_mu = value("tw_mu")
        self.tw_weighting = value("tw_weighting")
        self.select_on = value("select_on")
        if self.kd_method == "dllm2rec" and self.gamma_p == self.gamma_c == self.gamma_o == 0:
            raise TeacherConfigError("gamma_p, gamma_c and gamma_o are all 0: every ranking-distillation weight is 0")
        if self.rd_topk >= self.n_items:
            raise TeacherConfigError(
                f"rd_topk={self.rd_topk} must be smaller than the number of items ({self.n_items - 1})"
            )
        if getattr(self, "loss_type", "CE") != "CE" and self.base_loss == "native":
            raise TeacherConfigError(
                f"KD students train with train_neg_sample_args: ~, so base_loss: native needs loss_type: CE, got "
                f"loss_type: {self.loss_type}; use loss_type: CE or base_loss: bce1"
            )

        self.item_table_rows = int(item_table_rows)
        # ED is DLLM2Rec's; a folded checkpoint (ed_folded) carries its folded tables whatever kd_method says.
        self.ed_active = (self.kd_method == "dllm2rec" and self.ed_weight > 0) or self.ed_folded
        self.kd_loss_name = {"none": None, "logit": "logit_kd", "rd": "rd_tw", "dllm2rec": "rd"}[self.kd_method]
        # Terms and diagnostics of the last training batch (detached), read by KDTrainer every batch.
        self.init_kd_terms()

        teacher_path = value("teacher")
        needs_teacher = self.kd_method != "none"
        object.__setattr__(self, "teacher", None)
        object.__setattr__(self, "teacher_path", None)
        if needs_teacher and not teacher_path:
            raise TeacherConfigError(
                f"kd_method={self.kd_method!r} needs a teacher: pass --teacher=<artifact file or teacher run dir> "
                "(or kd_method: none for the plain student)"
            )
        if teacher_path and (needs_teacher or (self.ed_active and not self.ed_folded)):
            self._load_teacher(teacher_path, dataset)
        elif teacher_path:
            getLogger().info(f"kd_method=none: the teacher {teacher_path} is not used")

        object.__setattr__(self, "kd_config", config)
        # ED: projector g and the frozen teacher item text embeddings z (non-persistent buffer).
        self._build_ed(embedding_size)
        self.item_init = value("item_init")
        if self.item_init == "text_encoder":
            self._init_items_from_text(dataset, str(value("text_encoder")))

    def _init_items_from_text(self, dataset, encoder: str) -> None:
        """``item_init: text_encoder``: the item table starts from the titles' sentence embeddings, projected to its
        width by PCA and scaled to the mean row norm of RecBole's random initialisation (PAD stays zero)."""
        from recbole_llmkd.llm.text_encoder import item_text_embeddings, pca_project

        vectors = item_text_embeddings(dataset, encoder)  # [n_items, d_text]
        with torch.no_grad():
            weight = self.item_embedding.weight  # [rows, H]
            target_norm = float(weight[1 : self.n_items].norm(dim=1).mean())
            try:
                weight[: self.n_items] = pca_project(vectors, weight.shape[1], target_norm).to(weight.device)
            except ValueError as error:
                raise TeacherConfigError(f"item_init: text_encoder: {error}") from None

    def _load_teacher(self, teacher_path, dataset) -> None:
        from recbole_llmkd.data.artifacts import load_artifacts, resolve_teacher_artifacts

        path = resolve_teacher_artifacts(teacher_path)
        artifacts = load_artifacts(path)
        if artifacts.K < self.rd_topk:
            raise TeacherConfigError(
                f"rd_topk={self.rd_topk} but the teacher artifact {path} stores only K={artifacts.K} items per example"
            )
        if self.confidence_mode == "code" and artifacts.score_kind != "neg_l2":
            raise TeacherConfigError(
                f"confidence_mode: code needs distances (score_kind 'neg_l2'); artifact {path} has score_kind "
                f"{artifacts.score_kind!r}: use confidence_mode: topk_softmax"
            )
        teacher = artifacts.align(dataset, split="train").truncate(self.rd_topk)
        if self.kd_method == "dllm2rec" and self.confidence_mode == "paper_target" and teacher.target_score is None:
            raise TeacherConfigError(f"confidence_mode: paper_target needs train.target_score; artifact {path} lacks it")
        if self.kd_method == "dllm2rec" and self.confidence_mode == "teacher_l2":
            if teacher.user_state is None or teacher.item_text_emb is None:
                raise TeacherConfigError(
                    f"confidence_mode: teacher_l2 needs train.user_state and item_text_emb; artifact {path} lacks them"
                )
            if teacher.user_state.shape[1] != teacher.item_text_emb.shape[1]:
                raise TeacherConfigError(
                    f"confidence_mode: teacher_l2 measures ‖u_b − z_c‖ between user_state (d={teacher.user_state.shape[1]})"
                    f" and item_text_emb (d={teacher.item_text_emb.shape[1]}); the artifact's dimensions differ"
                )
        if self.ed_active and not self.ed_folded and teacher.item_text_emb is None:
            raise TeacherConfigError(
                f"ed_weight={self.ed_weight:g} > 0 needs item_text_emb, which artifact {path} lacks; set ed_weight: 0 "
                "to distil rankings only"
            )
        object.__setattr__(self, "teacher", teacher)
        object.__setattr__(self, "teacher_path", path)
        object.__setattr__(self, "_teacher_dataset_id", id(dataset))

    def _build_ed(self, embedding_size: int) -> None:
        self.ed_projector = None
        self.folded_input_embedding = None
        if not self.ed_active:
            return
        if self.ed_folded:
            # The tables already hold b + ed·g(z); a separate input table exists when the output side kept b.
            if self.ed_apply_to == "input":
                self.folded_input_embedding = nn.Embedding(self.item_table_rows, embedding_size, padding_idx=0)
            return
        text_emb = self.teacher.item_text_emb.float()  # [n_items, d_llm], row 0 zeros
        d_llm = text_emb.shape[1]
        padded = torch.zeros(self.item_table_rows, d_llm)  # [rows, d_llm]; a mask-token row has no text
        padded[: text_emb.shape[0]] = text_emb
        self.register_buffer("item_text_emb", padded, persistent=False)
        has_text = torch.zeros(self.item_table_rows, 1)  # [rows, 1]: 0 for [PAD] and the mask token
        has_text[1 : self.n_items] = 1.0
        self.register_buffer("ed_row_mask", has_text, persistent=False)
        if self.ed_projector_kind == "linear":
            self.ed_projector = nn.Linear(d_llm, embedding_size)
        else:
            self.ed_projector = nn.Sequential(
                nn.Linear(d_llm, embedding_size), nn.GELU(), nn.Linear(embedding_size, embedding_size)
            )

    # ----------------------------------------------------------------------------------------------------------
    # Embedding distillation
    # ----------------------------------------------------------------------------------------------------------

    def _ed_uses_projector(self) -> bool:
        return self.ed_active and not self.ed_folded

    def _projected_item_table(self) -> Tensor:
        """``g(z)`` for every row of the item table, zero for [PAD] and the mask token. ``[rows, H]``.

        ``ed_scale: id_norm`` rescales it to the ID table's size, ``g(z_i) · mean_j ‖b_j‖ / mean_j ‖g(z_j)‖`` (both
        means over the text rows, detached), so the offset ``ed_weight · g(z)`` is ``ed_weight`` times the ID
        embeddings' size from the first step on; ``fixed`` (the official code) leaves ``g(z)`` as it comes.
        """
        projected = self.ed_projector(self.item_text_emb) * self.ed_row_mask  # [rows, H]
        if self.ed_scale == "id_norm":
            text_rows = self.ed_row_mask.squeeze(-1).bool()  # [rows]
            id_norm = self.item_embedding.weight[text_rows].detach().norm(dim=-1).mean()
            text_norm = projected[text_rows].detach().norm(dim=-1).mean().clamp_min(1e-12)
            projected = projected * (id_norm / text_norm)
        return projected

    def _enriched_table(self, table: Tensor, projected: Tensor) -> Tensor:
        """``b + ed·g(z)`` (offset) or ``g(z)`` (replace) on text rows; [PAD]/mask rows keep ``b``. ``[rows, H]``."""
        if self.ed_mode == "offset":
            return table + self.ed_weight * projected
        return torch.where(self.ed_row_mask.bool(), projected, table)

    def embed_input_items(self, item_seq: Tensor) -> Tensor:
        """Embeddings of the input items ``[B, L, H]`` (ED offset added before positions/LayerNorm/dropout)."""
        if self.folded_input_embedding is not None:
            return self.folded_input_embedding(item_seq)  # [B, L, H]
        id_emb = self.item_embedding(item_seq)  # [B, L, H]
        if not self._ed_uses_projector():
            return id_emb
        projected = self._projected_item_table()[item_seq]  # [B, L, H]
        if self.training:
            with torch.no_grad():
                real = item_seq > 0  # [B, L]; the mask token has projected = 0
                offset_norm = (self.ed_weight * projected[real]).norm()
                self.kd_terms["ed_ratio"] = offset_norm / id_emb[real].norm().clamp_min(1e-12)
        if self.ed_mode == "offset":
            return id_emb + self.ed_weight * projected
        has_text = self.ed_row_mask[item_seq]  # [B, L, 1]
        return torch.where(has_text.bool(), projected, id_emb)

    def output_item_table(self) -> Tensor:
        """The table the student scores with, first ``n_items`` rows (the mask token excluded). ``[n_items, H]``."""
        table = self.item_embedding.weight  # [rows, H]
        if self._ed_uses_projector() and self.ed_apply_to == "input_and_output":
            table = self._enriched_table(table, self._projected_item_table())
        return table[: self.n_items]

    # ----------------------------------------------------------------------------------------------------------
    # Losses
    # ----------------------------------------------------------------------------------------------------------

    def sample_negatives(self, item_seq: Tensor, pos_items: Tensor) -> Tensor:
        """One uniform negative per example from ``[1, n_items)``, excluding its history and target. ``[B]``."""
        batch_size = pos_items.shape[0]
        negatives = torch.randint(1, self.n_items, (batch_size,), device=pos_items.device)  # [B]
        for _ in range(_MAX_NEGATIVE_DRAWS):
            clash = (negatives[:, None] == item_seq).any(dim=1) | (negatives == pos_items)  # [B]
            n_clash = int(clash.sum())
            if n_clash == 0:
                return negatives
            negatives[clash] = torch.randint(1, self.n_items, (n_clash,), device=pos_items.device)
        raise RuntimeError(
            f"could not draw a negative outside history and target after {_MAX_NEGATIVE_DRAWS} tries "
            f"(n_items={self.n_items}, history length {item_seq.shape[1]})"
        )

    def _batch_field(self, interaction, field: str) -> Tensor:
        if field not in interaction.interaction:
            raise KeyError(
                f"the training batch has no {field!r} field: KD students ({type(self).__name__}) must be trained "
                "with recbole_llmkd.trainer.kd_trainer.KDTrainer, which attaches the teacher fields to the data"
            )
        return interaction[field]

    def rd_weights(
        self, logits: Tensor, teacher_topk: Tensor, teacher_scores: Tensor, interaction=None,
        candidate_mask: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """The DLLM2Rec importance weights of a batch: ``w_p`` [K], ``w_c``, ``w_o`` (the student's current top-K from
        ``logits``), and the combined ``w`` [B, K]."""
        num_candidates = teacher_topk.shape[1]
        w_p = position_weights(num_candidates, self.rd_beta).to(logits.device)  # [K]
        extra = {"teacher_topk": teacher_topk}
        if self.confidence_mode == "paper_target":
            # d_b = -target_score: minus the teacher's score of the true target (a distance for score_kind neg_l2).
            extra["target_distance"] = -self._batch_field(interaction, TEACHER_TARGET_SCORE_FIELD)  # [B]
            extra["beta"] = self.rd_beta
        elif self.confidence_mode == "teacher_l2":
            extra["teacher_user_state"] = self._batch_field(interaction, TEACHER_USER_STATE_FIELD)  # [B, d]
            extra["teacher_item_table"] = self.teacher_item_table().to(logits.device)  # [n_items, d]
        w_c = confidence_weights(teacher_scores, self.confidence_mode, self.confidence_temp, **extra)  # [B, K]
        w_o = student_topk_membership(teacher_topk, logits, self.rd_topk)  # [B, K], the student's current top-K
        valid = teacher_topk > 0  # [B, K]
        if candidate_mask is not None:
            valid = valid & candidate_mask
        w = combine_weights(
            w_p, w_c, w_o, self.gamma_p, self.gamma_c, self.gamma_o, self.rd_weight_norm, candidate_mask=valid
        )  # [B, K]
        return {"w_p": w_p, "w_c": w_c, "w_o": w_o, "w": w}

    def teacher_item_table(self) -> Tensor:
        """Teacher item vectors for ``confidence_mode: teacher_l2``: the artifact's ``item_text_emb``."""
        if self.teacher is None or self.teacher.item_text_emb is None:
            raise TeacherConfigError("confidence_mode: teacher_l2 needs the teacher's item_text_emb")
        return self.teacher.item_text_emb

    def distill(
        self, interaction, logits: Tensor, item_seq: Tensor, pos_items: Tensor, native_loss: Callable[[], Tensor]
    ) -> Tuple[Tensor, ...]:
        """``(L_base, λ_d·L_kd)`` for one training batch (``(L_base,)`` with ``kd_method: none``).

        Args:
            logits: ``[B, n_items]`` the student's next-item logits (column 0 = [PAD]), from this forward pass.
            item_seq: ``[B, L]`` the input history (for the negative and candidate filtering).
            pos_items: ``[B]`` the target items.
            native_loss: computes the host model's own loss (``base_loss: native``).
        """
        terms = self.kd_terms
        for key in [k for k in terms if k != "ed_ratio"]:
            del terms[key]
        needs_negative = self.base_loss == "bce1" or (self.kd_method == "dllm2rec" and self.rd_neg_term != "none")
        neg_items = self.sample_negatives(item_seq, pos_items) if needs_negative else None  # [B]

        if self.base_loss == "native":
            base = native_loss()
        else:
            pos_logit = logits.gather(1, pos_items[:, None]).squeeze(1).float()  # [B]
            neg_logit = logits.gather(1, neg_items[:, None]).squeeze(1).float()  # [B]
            base = -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit)).mean() / 2.0
        terms["base"] = base.detach()
        if self.kd_method == "none":
            return (base,)

        teacher_topk = self._batch_field(interaction, TEACHER_TOPK_FIELD)  # [B, K]
        teacher_scores = self._batch_field(interaction, TEACHER_SCORE_FIELD)  # [B, K]
        if self.kd_method == "logit":
            kd_loss = logit_kd_loss(logits, teacher_topk, teacher_scores, self.kd_temperature)
        elif self.kd_method == "rd":
            kd_loss = tang_wang_rd_loss(logits, teacher_topk, self.tw_lambda, self.tw_mu, self.tw_weighting)
        else:
            candidate_mask = None
            if self.rd_filter_candidates:
                in_history = (teacher_topk[:, :, None] == item_seq[:, None, :]).any(dim=-1)  # [B, K]
                candidate_mask = ~(in_history | (teacher_topk == pos_items[:, None]))  # [B, K]
            weights = self.rd_weights(logits, teacher_topk, teacher_scores, interaction, candidate_mask)
            if neg_items is None:
                neg_items = torch.ones_like(pos_items)  # unused by rd_neg_term: none
            kd_loss, rd_pos, rd_neg = dllm2rec_rd_loss(
                logits, teacher_topk, neg_items, weights["w"], self.rd_neg_term, candidate_mask=candidate_mask
            )
            terms["rd_pos"] = rd_pos.detach()
            terms["rd_neg"] = rd_neg.detach()
            terms["wc_entropy"] = torch.tensor(mean_entropy(weights["w_c"]))
            terms["overlap"] = weights["w_o"].sum(dim=-1).mean().detach() / self.rd_topk
        if "overlap" not in terms:
            membership = student_topk_membership(teacher_topk, logits, self.rd_topk)  # [B, K]
            terms["overlap"] = membership.sum(dim=-1).mean() / self.rd_topk
        check_kd_term(self.kd_loss_name, kd_loss, self.rd_weight)
        terms[self.kd_loss_name] = kd_loss.detach()
        return (base, self.rd_weight * kd_loss)

    def loss_names(self) -> Tuple[str, ...]:
        """Names of the parts of ``distill``'s tuple: ``("base",)`` or ``("base", kd loss name)``."""
        return ("base",) if self.kd_loss_name is None else ("base", self.kd_loss_name)

    def kd_term_weights(self) -> Dict[str, float]:
        """``{term: weight}`` for ``KDTermMonitor``: terms that must be finite and not stuck at 0 while weighted."""
        weights = {}
        if self.kd_loss_name is not None:
            weights[self.kd_loss_name] = self.rd_weight
        if self._ed_uses_projector():
            weights["ed_ratio"] = self.ed_weight
        return weights

    # ----------------------------------------------------------------------------------------------------------
    # Teacher fields for the trainer
    # ----------------------------------------------------------------------------------------------------------

    def teacher_batch_fields(self, dataset) -> Dict[str, Tensor]:
        """Per-example teacher tensors for ``dataset.inter_feat`` rows (empty with ``kd_method: none``).

        Re-aligns when ``dataset`` is not the split the model was built with. Raises if a value is not finite.
        """
        if self.kd_method == "none":
            return {}
        teacher = self.teacher
        if id(dataset) != getattr(self, "_teacher_dataset_id", None):
            from recbole_llmkd.data.artifacts import load_artifacts

            teacher = load_artifacts(self.teacher_path).align(dataset, split="train").truncate(self.rd_topk)
        fields = {TEACHER_TOPK_FIELD: teacher.topk, TEACHER_SCORE_FIELD: teacher.scores.float()}
        if self.kd_method == "dllm2rec" and self.confidence_mode == "paper_target":
            fields[TEACHER_TARGET_SCORE_FIELD] = teacher.target_score.float()
        if self.kd_method == "dllm2rec" and self.confidence_mode == "teacher_l2":
            fields[TEACHER_USER_STATE_FIELD] = teacher.user_state.float()
        for name, tensor in fields.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad_rows = torch.nonzero(~torch.isfinite(tensor).reshape(tensor.shape[0], -1).all(dim=1)).flatten()
                raise KDTermError(
                    f"teacher field {name!r} from {self.teacher_path} has non-finite values in {len(bad_rows):,} "
                    f"training rows (first: {bad_rows[:5].tolist()}): distillation would be NaN"
                )
        return fields

    # ----------------------------------------------------------------------------------------------------------
    # Fold and export
    # ----------------------------------------------------------------------------------------------------------

    def plain_exportable(self) -> bool:
        """True when the folded student is exactly the host RecBole model (one tied item table)."""
        return not self.ed_active or self.ed_apply_to == "input_and_output"

    @torch.no_grad()
    def fold_teacher(self) -> None:
        """Bake ``ed_weight·g(z)`` into the item tables; afterwards the model needs neither projector nor teacher file.

        ``ed_apply_to: input_and_output``: the single tied table becomes ``b + ed·g(z)``: the folded model is the host
        RecBole model exactly. ``ed_apply_to: input`` (default): input items use ``b + ed·g(z)`` while scoring uses
        ``b``, so the fold keeps ``item_embedding = b`` for scoring and adds ``folded_input_embedding`` for input.
        Idempotent.
        """
        if not self._ed_uses_projector():
            return
        enriched = self._enriched_table(self.item_embedding.weight, self._projected_item_table())  # [rows, H]
        if self.ed_apply_to == "input_and_output":
            self.item_embedding.weight.copy_(enriched)
        else:
            self.folded_input_embedding = nn.Embedding(
                self.item_table_rows, enriched.shape[1], padding_idx=0
            ).to(enriched.device)
            self.folded_input_embedding.weight.copy_(enriched)
        self.ed_projector = None
        del self.item_text_emb
        del self.ed_row_mask
        self.ed_folded = True

    def save_folded(self, path, config=None, plain: Optional[bool] = None) -> Dict[str, str]:
        """Fold and write a checkpoint that needs no teacher file (RecBole checkpoint layout).

        ``plain=None``: a plain RecBole checkpoint of the host class (e.g. ``SASRec``) whenever the folded student is
        one (``plain_exportable()``), else a checkpoint of this KD class with ``ed_folded: True``, ``teacher: ~`` and
        ``kd_method: none``, which rebuilds without the teacher. ``plain=True`` raises when that is impossible.

        Returns:
            ``{"path": ..., "model": class name the checkpoint loads into}``.
        """
        from recbole_llmkd import compat

        config = config if config is not None else self.kd_config
        if plain and not self.plain_exportable():
            raise TeacherConfigError(
                "ed_apply_to: input embeds input items with b + ed·g(z) but scores with b; RecBole's "
                f"{self.recbole_parent().__name__} ties both to one table, so the folded student is not a plain "
                "RecBole model. Use ed_apply_to: input_and_output for a plain export, or save_folded(plain=False)"
            )
        plain = self.plain_exportable() if plain is None else plain
        self.fold_teacher()
        config = copy.deepcopy(config)
        config["teacher"] = None
        config["kd_method"] = "none"
        for key in ("ed_weight", "ed_projector", "ed_apply_to", "ed_mode"):
            config[key] = getattr(self, {"ed_projector": "ed_projector_kind"}.get(key, key))
        if plain:
            parent = self.recbole_parent()
            config["model"] = parent.__name__
            config.model = parent.__name__
            state_dict = {
                key: value for key, value in self.state_dict().items()
                if not key.startswith(("ed_projector.", "folded_input_embedding."))
            }
            compat.as_plain_recbole_config(config)  # the pickle then references RecBole only
            model_name = parent.__name__
        else:
            config["ed_folded"] = True
            state_dict = self.state_dict()
            model_name = type(self).__name__
        checkpoint = {
            "config": config,
            "epoch": -1,
            "cur_step": 0,
            "best_valid_score": None,
            "state_dict": state_dict,
            "other_parameter": self.other_parameter(),
            "optimizer": None,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, os.fspath(path), pickle_protocol=4)
        return {"path": os.fspath(path), "model": model_name}

    @classmethod
    def recbole_parent(cls) -> type:
        """The RecBole model class this student extends."""
        for klass in cls.__mro__:
            if klass.__module__.startswith("recbole.model.") and klass.__module__ != "recbole.model.abstract_recommender":
                return klass
        raise TypeError(f"{cls.__name__} does not extend a RecBole model")
