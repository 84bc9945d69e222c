"""DLLM2Rec distillation as one reusable component (docs/METHODS.md §1.2-§1.8).

``Distiller`` is a mixin placed before a RecBole sequential model in the MRO. It adds

- the teacher: ``recbole_llmkd.run.build_model`` reads ``config["teacher"]`` (an artifact file or a teacher run
  directory) and hands the loaded ``TeacherArtifacts`` to the constructor; ``init_distiller`` checks them against the
  config and aligns them with the training split. They are kept **outside** the module tree (``object.__setattr__``),
  so nothing from them lands in ``state_dict`` or in the optimizer. The model itself never opens a file;
- collaborative embedding distillation (ED, §1.5): ``e_i = b_i + ed_weight·g(z_i)`` for the input items, with a
  ``linear``/``mlp`` projector ``g`` over the teacher's item text embeddings ``z``: an ``EDItemEmbedding`` takes the
  place of the host's ``self.item_embedding`` (its ``.weight`` is the scoring table), so the host's own ``forward``
  and ``full_sort_predict`` run unchanged;
- the training loss (§1.2, §1.4, baselines of issue 4): ``calculate_loss`` hands the host's next-item logits to
  ``distill(...)``, which returns ``(L_base, λ_d·L_kd[, λ_l·L_logit])``;
- the fold step: ``fold_teacher()`` bakes ``ed_weight·g(z)`` into the item tables (``recbole_llmkd.jobs.fold``
  writes the checkpoint that needs no teacher file: a plain RecBole checkpoint whenever the folded model is one).

Distilling another RecBole sequential model that embeds its items with ``self.item_embedding`` and scores with
``self.item_embedding.weight`` takes the mixin alone::

    class KDNARM(Distiller, NARM):
        def __init__(self, config, dataset, teacher=None, item_text_vectors=None):
            NARM.__init__(self, config, dataset)
            self.init_distiller(config, dataset, teacher, item_text_vectors)

NARM's ``forward`` and ``full_sort_predict`` are used as they are; the mixin's ``calculate_loss`` (CE base loss on
the next-item logits; override ``native_loss`` for another) and ``predict`` (for a ``forward(item_seq, item_seq_len)``
that returns ``[B, H]``) fit most RecBole sequential models. Build it with ``recbole_llmkd.run.build_model`` (or
``run.prepare``), which hands over the teacher, and train it with
``recbole_llmkd.trainer.kd_trainer.KDTrainer``, which attaches the per-example teacher fields to the batches.

``kd_method`` (issue 4 point 4): ``none`` (plain student, no teacher), ``logit`` (Hinton KD over the teacher's
top-K scores, ``kd_temperature``), ``rd`` (Tang & Wang ranking distillation, ``tw_lambda``, ``tw_mu``,
``tw_weighting``), ``dllm2rec`` (importance-aware RD + ED). ED belongs to DLLM2Rec: it is active only with
``kd_method: dllm2rec`` and ``ed_weight > 0`` (the baselines are the plain student plus their own loss).
``rd_weight`` (λ_d) weighs whichever KD loss is selected. ``logit_weight`` (λ_l > 0) adds the ``logit`` loss beside
the ranking loss of ``rd`` or ``dllm2rec`` (``logit_aux``): ranking KD and logit KD carry different parts of what the
teacher knows (benchmarks/RESULTS.md, "The last grid rows, and where the teacher's lead is").

Every distillation key has its default, with a comment, in ``properties/model/Distiller.yaml``, which
``recbole_llmkd.config.Config`` reads for any model with ``Distiller`` in its MRO (below the model's own yaml); the
values each key accepts are declared in ``recbole_llmkd.config_schema``. The KD protocol (``loss_names``,
``kd_term_weights``, ``kd_terms``) is ``recbole_llmkd.distill.KDTermReporter``'s.
"""
from logging import getLogger
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.distill import ranking  # the ranking-KD losses and weights, pure functions on tensors
from recbole_llmkd.distill.guards import KDTermError, KDTermReporter, check_kd_term
from recbole_llmkd.errors import ConfigValueError
from recbole_llmkd.model.ed_item_embedding import EDItemEmbedding, upgrade_pre_module_keys

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
        membership[tied_rows] = ranking.consistency_weights(teacher_topk[tied_rows], student_logits[tied_rows], k)
    return membership


class TeacherConfigError(ConfigValueError):
    """The distillation config is inconsistent (no teacher, unknown switch, artifact without what is needed)."""


# The distillation keys a student reads (docs/METHODS.md §1), by the attribute that holds each: attribute -> key.
KD_OPTIONS = {
    "kd_method": "kd_method", "rd_topk": "rd_topk", "rd_beta": "rd_beta", "gamma_p": "gamma_p",
    "gamma_c": "gamma_c", "gamma_o": "gamma_o", "rd_weight": "rd_weight", "rd_weight_norm": "rd_weight_norm",
    "rd_neg_term": "rd_neg_term", "confidence_mode": "confidence_mode", "confidence_temp": "confidence_temp",
    "rd_filter_candidates": "rd_filter_candidates", "ed_weight": "ed_weight", "ed_projector_kind": "ed_projector",
    "ed_apply_to": "ed_apply_to", "ed_mode": "ed_mode", "ed_scale": "ed_scale", "ed_scale_init": "ed_scale_init",
    "ed_folded": "ed_folded",
    "base_loss": "base_loss", "kd_temperature": "kd_temperature", "logit_weight": "logit_weight",
    "tw_lambda": "tw_lambda", "tw_mu": "tw_mu",
    "tw_weighting": "tw_weighting", "select_on": "select_on", "item_init": "item_init",
}


class Distiller(KDTermReporter):
    """Mixin that turns a RecBole sequential model into a DLLM2Rec student (see the module docstring).

    The host class must define ``self.item_embedding`` (``nn.Embedding``, row 0 = [PAD]), ``self.n_items``, and
    call ``init_distiller`` at the end of its ``__init__``; its ``forward`` embeds items with
    ``self.item_embedding(item_seq)`` and its ``full_sort_predict`` scores with ``self.item_embedding.weight``.
    """

    KD_TERM_WEIGHT_KEYS = {"logit_kd": "rd_weight", "rd_tw": "rd_weight", "rd": "rd_weight", "ed_ratio": "ed_weight",
                           "logit_aux": "logit_weight"}

    # ----------------------------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------------------------

    @staticmethod
    def needs_teacher_artifacts(config) -> bool:
        """Whether a student of ``config`` reads the teacher's artifacts: every ``kd_method`` but ``none`` (ED is
        ``dllm2rec``'s; a folded student is saved with ``kd_method: none``)."""
        return read_config(config, "kd_method", TeacherConfigError) != "none"

    @staticmethod
    def no_teacher_error(kd_method: str) -> TeacherConfigError:
        """The error for a student whose ``kd_method`` reads a teacher, given none."""
        return TeacherConfigError(f"kd_method={kd_method!r} needs a teacher: pass --teacher=<artifact file or teacher "
                                  "run dir> (or kd_method: none for the plain student)")

    @staticmethod
    def check_options(config) -> Dict[str, object]:
        """Every distillation key of ``config`` (``KD_OPTIONS``), checked by the schema and against each other before
        anything is loaded (``run.build_model`` calls it first); returns ``{attribute: value}``."""
        options = {attribute: read_config(config, key, TeacherConfigError) for attribute, key in KD_OPTIONS.items()}
        if options["kd_method"] == "dllm2rec" and options["gamma_p"] == options["gamma_c"] == options["gamma_o"] == 0:
            raise TeacherConfigError("gamma_p, gamma_c and gamma_o are all 0: every ranking-distillation weight is 0")
        if options["logit_weight"] > 0 and options["kd_method"] not in ("rd", "dllm2rec"):
            raise TeacherConfigError(
                f"logit_weight={options['logit_weight']} adds logit KD beside the ranking loss of kd_method rd or "
                f"dllm2rec; kd_method={options['kd_method']!r}"
                + (" is that loss already (its weight is rd_weight)" if options["kd_method"] == "logit"
                   else " has no teacher")
                + ": use logit_weight: 0"
            )
        if options["ed_scale"] != "fixed" and options["ed_mode"] == "replace":
            raise TeacherConfigError(
                f"ed_scale: {options['ed_scale']} sizes ED's offset b_i + ed_weight·g(z_i) against the ID rows b; "
                "ed_mode: replace has no offset (e_i = g(z_i)): use ed_scale: fixed with it"
            )
        loss_type = config["loss_type"] if "loss_type" in config else "CE"
        if loss_type not in (None, "CE") and options["base_loss"] == "native":
            raise TeacherConfigError(
                f"KD students train with train_neg_sample_args: ~, so base_loss: native needs loss_type: CE, got "
                f"loss_type: {loss_type}; use loss_type: CE or base_loss: bce1"
            )
        return options

    def init_distiller(self, config, dataset, teacher=None, item_text_vectors: Optional[Tensor] = None) -> None:
        """Read the KD config, check and align the teacher, install ED as ``self.item_embedding``.

        Args:
            dataset: the training split (``train_data._dataset``); the teacher rows are aligned with its rows.
            teacher: the loaded ``TeacherArtifacts`` of ``config["teacher"]`` when ``needs_teacher_artifacts(config)``
                (``recbole_llmkd.run.build_model`` reads them, the training split only), else None.
            item_text_vectors: ``[n_items, d_text]`` sentence embeddings of the item titles for
                ``item_init: text_encoder`` (read by ``run.build_model``), else None.
        """

        def value(key):
            return read_config(config, key, TeacherConfigError)

        for attribute, option in self.check_options(config).items():
            setattr(self, attribute, option)
        if self.rd_topk >= self.n_items:
            raise TeacherConfigError(
                f"rd_topk={self.rd_topk} must be smaller than the number of items ({self.n_items - 1})"
            )

        # ED is DLLM2Rec's; a folded checkpoint (ed_folded) carries its folded tables whatever kd_method says.
        self.ed_active = (self.kd_method == "dllm2rec" and self.ed_weight > 0) or self.ed_folded
        self.kd_loss_name = {"none": None, "logit": "logit_kd", "rd": "rd_tw", "dllm2rec": "rd"}[self.kd_method]
        # Terms and diagnostics of the last training batch (detached), read by KDTrainer every batch.
        self.init_kd_terms()

        teacher_path = value("teacher")
        object.__setattr__(self, "teacher", None)
        object.__setattr__(self, "teacher_artifacts", None)
        if self.needs_teacher_artifacts(config):
            if not teacher_path:
                raise self.no_teacher_error(self.kd_method)
            if teacher is None:
                raise TeacherConfigError(
                    f"{type(self).__name__} was built without its teacher artifacts: build KD students with "
                    "recbole_llmkd.run.build_model(config, dataset) (run.prepare and run.load do), which reads "
                    f"teacher={teacher_path!r} and hands them over"
                )
            self._set_teacher(teacher, dataset)
        elif teacher_path:
            getLogger().info(f"kd_method=none: the teacher {teacher_path} is not used")

        object.__setattr__(self, "kd_config", config)
        self._build_ed()
        if self.item_init == "text_encoder":
            if item_text_vectors is None:
                raise TeacherConfigError(
                    "item_init: text_encoder needs the titles' sentence embeddings handed over: build the model with "
                    "recbole_llmkd.run.build_model(config, dataset)"
                )
            self._init_items_from_text(item_text_vectors)

    def _init_items_from_text(self, vectors: Tensor) -> None:
        """``item_init: text_encoder``: the item table starts from the titles' sentence embeddings ``vectors``
        ``[n_items, d_text]``, projected to its width by PCA and scaled to the mean row norm of RecBole's random
        initialisation (PAD stays zero)."""
        from recbole_llmkd.llm.text_encoder import pca_project

        with torch.no_grad():
            weight = getattr(self.item_embedding, "id_embedding", self.item_embedding).weight  # b: [rows, H]
            target_norm = float(weight[1 : self.n_items].norm(dim=1).mean())
            try:
                weight[: self.n_items] = pca_project(vectors, weight.shape[1], target_norm).to(weight.device)
            except ValueError as error:
                raise TeacherConfigError(f"item_init: text_encoder: {error}") from None

    def _set_teacher(self, artifacts, dataset) -> None:
        """Check the loaded ``artifacts`` against the KD config and keep them, aligned with ``dataset``'s rows."""
        path = artifacts.path
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
        object.__setattr__(self, "teacher_artifacts", artifacts)
        object.__setattr__(self, "_teacher_dataset_id", id(dataset))

    def _build_ed(self) -> None:
        """With ED on, ``self.item_embedding`` becomes an ``EDItemEmbedding`` around the host's ``nn.Embedding``."""
        if not self.ed_active or (self.ed_folded and self.ed_apply_to == "input_and_output"):
            return  # no ED, or a folded tied table: the host's plain nn.Embedding holds it all
        self.item_embedding = EDItemEmbedding(
            self.item_embedding, self.n_items, None if self.ed_folded else self.teacher.item_text_emb, self.kd_terms,
            ed_weight=self.ed_weight, projector=self.ed_projector_kind, mode=self.ed_mode, scale=self.ed_scale,
            scale_init=self.ed_scale_init, apply_to=self.ed_apply_to,
        )
        self.register_load_state_dict_pre_hook(upgrade_pre_module_keys)  # KD checkpoints written before the module

    def _ed_uses_projector(self) -> bool:
        return self.ed_active and not self.ed_folded

    # ----------------------------------------------------------------------------------------------------------
    # RecBole's calls: the host's logits go to ``distill``
    # ----------------------------------------------------------------------------------------------------------

    def calculate_loss(self, interaction) -> Tuple[Tensor, ...]:
        """``distill``'s ``(L_base, λ_d·L_kd)``, from the host's next-item logits (its own ``full_sort_predict``)."""
        logits = self.full_sort_predict(interaction)  # [B, n_items]
        item_seq, pos_items = interaction[self.ITEM_SEQ], interaction[self.POS_ITEM_ID]  # [B, L], [B]
        return self.distill(interaction, logits, item_seq, pos_items, lambda: self.native_loss(interaction, logits))

    def native_loss(self, interaction, logits: Tensor) -> Tensor:
        """The host's own loss (``base_loss: native``): cross-entropy of the next-item ``logits`` ``[B, n_items]``, as
        SASRec, GRU4Rec, NARM, ... compute it with ``loss_type: CE``. A host with another loss overrides this."""
        return self.loss_fct(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction) -> Tensor:
        """Scores ``[B]`` of ``interaction[ITEM_ID]`` with the scoring table ``item_embedding.weight``, as
        ``full_sort_predict`` scores: RecBole's ``predict`` uses ``item_embedding(test_item)``, the input embedding,
        which ED (``ed_apply_to: input``) makes differ. For hosts whose ``forward(item_seq, item_seq_len)`` is the
        ``[B, H]`` sequence state (SASRec, GRU4Rec, NARM, STAMP, ...)."""
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, H]
        test_item_emb = self.item_embedding.weight[interaction[self.ITEM_ID]]  # [B, H]
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

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
        w_p = ranking.position_weights(num_candidates, self.rd_beta).to(logits.device)  # [K]
        extra = {"teacher_topk": teacher_topk}
        if self.confidence_mode == "paper_target":
            # d_b = -target_score: minus the teacher's score of the true target (a distance for score_kind neg_l2).
            extra["target_distance"] = -self._batch_field(interaction, TEACHER_TARGET_SCORE_FIELD)  # [B]
            extra["beta"] = self.rd_beta
        elif self.confidence_mode == "teacher_l2":
            extra["teacher_user_state"] = self._batch_field(interaction, TEACHER_USER_STATE_FIELD)  # [B, d]
            extra["teacher_item_table"] = self.teacher_item_table().to(logits.device)  # [n_items, d]
        w_c = ranking.confidence_weights(teacher_scores, self.confidence_mode, self.confidence_temp, **extra)  # [B, K]
        w_o = student_topk_membership(teacher_topk, logits, self.rd_topk)  # [B, K], the student's current top-K
        valid = teacher_topk > 0  # [B, K]
        if candidate_mask is not None:
            valid = valid & candidate_mask
        w = ranking.combine_weights(
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
        """``(L_base, λ_d·L_kd)`` for one training batch (``(L_base,)`` with ``kd_method: none``; with
        ``logit_weight`` λ_l > 0 a third part ``λ_l·L_logit``, Hinton KD over the same candidates).

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
            kd_loss = ranking.logit_kd_loss(logits, teacher_topk, teacher_scores, self.kd_temperature)
        elif self.kd_method == "rd":
            kd_loss = ranking.tang_wang_rd_loss(logits, teacher_topk, self.tw_lambda, self.tw_mu, self.tw_weighting)
        else:
            candidate_mask = None
            if self.rd_filter_candidates:
                in_history = (teacher_topk[:, :, None] == item_seq[:, None, :]).any(dim=-1)  # [B, K]
                candidate_mask = ~(in_history | (teacher_topk == pos_items[:, None]))  # [B, K]
            weights = self.rd_weights(logits, teacher_topk, teacher_scores, interaction, candidate_mask)
            if neg_items is None:
                neg_items = torch.ones_like(pos_items)  # unused by rd_neg_term: none
            kd_loss, rd_pos, rd_neg = ranking.dllm2rec_rd_loss(
                logits, teacher_topk, neg_items, weights["w"], self.rd_neg_term, candidate_mask=candidate_mask
            )
            terms["rd_pos"] = rd_pos.detach()
            terms["rd_neg"] = rd_neg.detach()
            terms["wc_entropy"] = torch.tensor(ranking.mean_entropy(weights["w_c"]))
            terms["overlap"] = weights["w_o"].sum(dim=-1).mean().detach() / self.rd_topk
        if "overlap" not in terms:
            membership = student_topk_membership(teacher_topk, logits, self.rd_topk)  # [B, K]
            terms["overlap"] = membership.sum(dim=-1).mean() / self.rd_topk
        check_kd_term(self.kd_loss_name, kd_loss, self.rd_weight)
        terms[self.kd_loss_name] = kd_loss.detach()
        if not self.logit_weight > 0:
            return (base, self.rd_weight * kd_loss)
        logit_loss = ranking.logit_kd_loss(logits, teacher_topk, teacher_scores, self.kd_temperature)
        check_kd_term("logit_aux", logit_loss, self.logit_weight)
        terms["logit_aux"] = logit_loss.detach()
        return (base, self.rd_weight * kd_loss, self.logit_weight * logit_loss)

    def loss_names(self) -> Tuple[str, ...]:
        """Names of the parts of ``distill``'s tuple: ``("base",)``, ``("base", kd loss name)``, and
        ``"logit_aux"`` after it with ``logit_weight`` > 0."""
        if self.kd_loss_name is None:
            return ("base",)
        return ("base", self.kd_loss_name) + (("logit_aux",) if self.logit_weight > 0 else ())

    def kd_term_weights(self) -> Dict[str, float]:
        """``{term: weight}`` for ``KDTermMonitor``: terms that must be finite and not stuck at 0 while weighted."""
        weights = {}
        if self.kd_loss_name is not None:
            weights[self.kd_loss_name] = self.rd_weight
            if self.logit_weight > 0:
                weights["logit_aux"] = self.logit_weight
        if self._ed_uses_projector():
            weights["ed_ratio"] = self.ed_weight
        return weights

    # ----------------------------------------------------------------------------------------------------------
    # Teacher fields for the trainer
    # ----------------------------------------------------------------------------------------------------------

    def teacher_batch_fields(self, dataset) -> Dict[str, Tensor]:
        """Per-example teacher tensors for ``dataset.inter_feat`` rows (empty with ``kd_method: none``).

        Aligns the loaded artifacts again (in memory) when ``dataset`` is not the split the model was built with.
        Raises if a value is not finite.
        """
        if self.kd_method == "none":
            return {}
        teacher = self.teacher
        if id(dataset) != getattr(self, "_teacher_dataset_id", None):
            teacher = self.teacher_artifacts.align(dataset, split="train").truncate(self.rd_topk)
        fields = {TEACHER_TOPK_FIELD: teacher.topk, TEACHER_SCORE_FIELD: teacher.scores.float()}
        if self.kd_method == "dllm2rec" and self.confidence_mode == "paper_target":
            fields[TEACHER_TARGET_SCORE_FIELD] = teacher.target_score.float()
        if self.kd_method == "dllm2rec" and self.confidence_mode == "teacher_l2":
            fields[TEACHER_USER_STATE_FIELD] = teacher.user_state.float()
        for name, tensor in fields.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad_rows = torch.nonzero(~torch.isfinite(tensor).reshape(tensor.shape[0], -1).all(dim=1)).flatten()
                raise KDTermError(
                    f"teacher field {name!r} from {self.teacher_artifacts.path} has non-finite values in {len(bad_rows):,} "
                    f"training rows (first: {bad_rows[:5].tolist()}): distillation would be NaN"
                )
        return fields

    # ----------------------------------------------------------------------------------------------------------
    # Fold (``recbole_llmkd.jobs.fold.save_folded`` writes the folded checkpoint)
    # ----------------------------------------------------------------------------------------------------------

    def plain_exportable(self) -> bool:
        """True when the folded student is exactly the host RecBole model (one tied item table)."""
        return not self.ed_active or self.ed_apply_to == "input_and_output"

    def fold_teacher(self) -> None:
        """Bake ``ed_weight·g(z)`` into the item tables; afterwards the model needs neither projector nor teacher file.

        ``ed_apply_to: input_and_output``: the single tied table becomes ``b + ed·g(z)``: ``item_embedding`` is the
        host's ``nn.Embedding`` again and the folded model is the host RecBole model exactly. ``ed_apply_to: input``
        (default): input items use ``b + ed·g(z)`` while scoring uses ``b`` (``EDItemEmbedding.fold``). Idempotent.
        """
        if not self._ed_uses_projector():
            return
        self.item_embedding = self.item_embedding.fold()
        self.ed_folded = True

    @classmethod
    def recbole_parent(cls) -> type:
        """The RecBole model class this student extends."""
        for klass in cls.__mro__:
            if klass.__module__.startswith("recbole.model.") and klass.__module__ != "recbole.model.abstract_recommender":
                return klass
        raise TypeError(f"{cls.__name__} does not extend a RecBole model")
