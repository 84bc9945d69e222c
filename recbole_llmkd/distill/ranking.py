"""DLLM2Rec importance-aware ranking distillation (docs/METHODS.md §1.4, §1.6-§1.8) and its baselines.

Every function is a pure function on tensors. Notation (docs/METHODS.md):

- ``B`` batch size, ``K`` number of teacher candidates, ``n_items`` number of item ids including ``0 = [PAD]``.
- ``teacher_topk`` ``[B, K]``: the teacher's best items ``c_1..c_K`` per example, best first. Entries ``<= 0`` are
  padding (``0`` is RecBole's ``[PAD]``; negative ids are used by some exporters). Padding never receives weight.
- ``student_logits`` ``[B, n_items]``: the student's logits ``ŷ_{b,j}`` over all items; column 0 is ``[PAD]``.

Everything is computed in float32 (inputs are cast with ``.float()``) and ``log σ`` is always ``F.logsigmoid``.

Student ranks (used by the consistency weight, the overlap diagnostic and Tang & Wang's rank discrepancy) are computed
without gradient over items ``1..n_items-1`` (``[PAD]`` excluded); ties are broken towards the lower item id (stable
sort), so the student's top-k is deterministic.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

CONFIDENCE_MODES = ("topk_softmax", "code", "teacher_l2", "paper_target", "uniform")
WEIGHT_NORMS = ("row", "none")
RD_NEG_TERMS = ("logsigmoid", "code_shifted", "none")
TANG_WANG_WEIGHTINGS = ("position", "hybrid")

# The official DLLM2Rec code adds this constant to exp(-d) before normalising the confidence weights.
CODE_CONFIDENCE_EPS = 1e-8

# Finite stand-in for -inf in masked softmaxes: keeps rows made only of padding free of NaN (forward and backward).
_MASKED_LOGIT = -1.0e30


# ----------------------------------------------------------------------------------------------------------------------
# Input checks and small helpers
# ----------------------------------------------------------------------------------------------------------------------


def _check_2d(name: str, tensor: Tensor, expected: str) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(tensor.shape)}")


def _check_same_shape(name: str, tensor: Tensor, reference_name: str, reference: Tensor) -> None:
    if tuple(tensor.shape) != tuple(reference.shape):
        raise ValueError(
            f"{name} must have the same shape as {reference_name} {tuple(reference.shape)}, got {tuple(tensor.shape)}"
        )


def _check_topk_ids(teacher_topk: Tensor, student_logits: Tensor) -> None:
    """``teacher_topk`` [B, K] integer ids must index ``student_logits`` [B, n_items] (ids <= 0 are padding)."""
    _check_2d("teacher_topk", teacher_topk, "[B, K]")
    _check_2d("student_logits", student_logits, "[B, n_items]")
    if teacher_topk.dtype.is_floating_point or teacher_topk.dtype == torch.bool:
        raise ValueError(f"teacher_topk must hold integer item ids, got dtype {teacher_topk.dtype}")
    if teacher_topk.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"teacher_topk has {teacher_topk.shape[0]} rows but student_logits has {student_logits.shape[0]}; "
            "expected one teacher list per example"
        )
    n_items = student_logits.shape[1]
    if teacher_topk.numel() > 0 and int(teacher_topk.max()) >= n_items:
        raise ValueError(
            f"teacher_topk contains item id {int(teacher_topk.max())} but student_logits only has n_items={n_items} "
            "columns; expected ids in [1, n_items) (ids <= 0 are padding)"
        )


def candidate_validity(teacher_topk: Tensor, candidate_mask: Optional[Tensor] = None) -> Tensor:
    """Which teacher candidates are real items: ``valid_bk = (c_bk > 0) ∧ candidate_mask_bk``.

    Args:
        teacher_topk: ``[B, K]`` teacher item ids; ids ``<= 0`` are padding.
        candidate_mask: optional ``[B, K]`` bool, ``False`` for candidates removed by ``rd_filter_candidates``
            (history or target items).

    Returns:
        ``[B, K]`` bool.
    """
    _check_2d("teacher_topk", teacher_topk, "[B, K]")
    valid = teacher_topk > 0  # [B, K]
    if candidate_mask is not None:
        _check_same_shape("candidate_mask", candidate_mask, "teacher_topk", teacher_topk)
        if candidate_mask.dtype != torch.bool:
            raise ValueError(f"candidate_mask must be a bool tensor, got dtype {candidate_mask.dtype}")
        valid = valid & candidate_mask.to(valid.device)
    return valid


def _masked_softmax(logits: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the valid entries of each row; invalid entries and rows with no valid entry get 0."""
    masked_logits = logits.masked_fill(~valid, _MASKED_LOGIT)  # [B, K]
    probs = torch.softmax(masked_logits, dim=-1)  # [B, K]
    return torch.where(valid, probs, torch.zeros_like(probs))


def student_item_ranks(student_logits: Tensor) -> Tensor:
    """1-based rank of every item in the student's current ranking, computed without gradient.

    ``rank_bj = 1 + #{i >= 1 : ŷ_bi > ŷ_bj} + #{1 <= i < j : ŷ_bi = ŷ_bj}`` for ``j >= 1`` (ties go to the lower
    item id); ``[PAD]`` (column 0) is excluded from the ranking and gets rank ``n_items`` (never in any top-k with
    ``k < n_items``).

    Args:
        student_logits: ``[B, n_items]``.

    Returns:
        ``[B, n_items]`` int64 ranks.
    """
    _check_2d("student_logits", student_logits, "[B, n_items]")
    batch_size, n_items = student_logits.shape
    with torch.no_grad():
        item_logits = student_logits.detach().float()[:, 1:]  # [B, n_items - 1]
        order = torch.sort(item_logits, dim=-1, descending=True, stable=True).indices + 1  # [B, n_items - 1]
        positions = torch.arange(1, n_items, device=student_logits.device).expand(batch_size, -1)  # [B, n_items - 1]
        ranks = torch.full((batch_size, n_items), n_items, dtype=torch.long, device=student_logits.device)
        ranks.scatter_(1, order, positions)  # [B, n_items]
    return ranks


# ----------------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------------


def position_weights(k: int, beta: float = 1.0) -> Tensor:
    """Position weight ``w^p_k = exp(-k/β) / Σ_{j=1..K} exp(-j/β)`` for ranks ``k = 1..K``.

    For ``K = 10, β = 1``: ``[.6321, .2326, .0856, .0315, .0116, .0043, .0016, .0006, .0002, .0001]``.

    Returns:
        ``[K]`` float32, sums to 1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (number of teacher candidates) must be an int >= 1, got {k!r}")
    if not beta > 0:
        raise ValueError(f"beta (position temperature) must be > 0, got {beta!r}")
    ranks = torch.arange(1, k + 1, dtype=torch.float32)  # [K]
    return torch.softmax(-ranks / beta, dim=0)  # [K]


def confidence_weights(
    teacher_scores: Tensor,
    mode: str,
    temperature: float = 1.0,
    *,
    target_distance: Optional[Tensor] = None,
    beta: float = 1.0,
    teacher_user_state: Optional[Tensor] = None,
    teacher_item_table: Optional[Tensor] = None,
    teacher_topk: Optional[Tensor] = None,
) -> Tensor:
    """Teacher confidence ``w^c_bk`` (docs/METHODS.md §1.4, ``confidence_mode``).

    Modes (``t`` = teacher score from ``topk_scores``, ``τ`` = ``temperature``):

    - ``topk_softmax``: ``w^c_bk = softmax_k(t_bk / τ)``.
    - ``code``: scores are minus a distance (``score_kind: neg_l2``), ``d_bk = -t_bk``;
      ``w^c_bk = (exp(-d_bk/τ) + 1e-8) / Σ_j (exp(-d_bj/τ) + 1e-8)``, the official code exactly when ``τ = 1``.
      Positive scores (negative distances) raise ``ValueError``.
    - ``teacher_l2``: ``w^c_bk = softmax_k(-‖u_b - e_{c_k}‖₂ / τ)`` with ``u_b = teacher_user_state[b]`` and
      ``e = teacher_item_table``; needs ``teacher_user_state`` [B, d], ``teacher_item_table`` [n_items, d] and
      ``teacher_topk`` [B, K]. ``teacher_scores`` only fixes the shape.
    - ``paper_target``: per-example constant ``w^c_bk = exp(-d_b/β)`` for every k, not normalised over K;
      needs ``target_distance`` [B].
    - ``uniform``: ``w^c_bk = 1/K``.

    If ``teacher_topk`` is given, padding candidates (ids ``<= 0``) get weight 0 in every mode and the softmax /
    normalisation runs over the remaining candidates (``uniform`` becomes ``1/#valid``).

    Args:
        teacher_scores: ``[B, K]`` teacher scores of the listed candidates.
        mode: one of ``CONFIDENCE_MODES``.
        temperature: ``τ_c > 0`` for ``topk_softmax``, ``code`` and ``teacher_l2``.

    Returns:
        ``[B, K]`` float32.
    """
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"unknown confidence mode {mode!r}; expected one of {', '.join(CONFIDENCE_MODES)}")
    _check_2d("teacher_scores", teacher_scores, "[B, K]")
    if not temperature > 0:
        raise ValueError(f"temperature (confidence_temp) must be > 0, got {temperature!r}")
    teacher_scores = teacher_scores.detach().float()  # [B, K]
    batch_size, num_candidates = teacher_scores.shape

    if teacher_topk is not None:
        _check_same_shape("teacher_topk", teacher_topk, "teacher_scores", teacher_scores)
        valid = candidate_validity(teacher_topk).to(teacher_scores.device)  # [B, K]
    else:
        valid = torch.ones_like(teacher_scores, dtype=torch.bool)  # [B, K]

    if mode == "topk_softmax":
        return _masked_softmax(teacher_scores / temperature, valid)  # [B, K]

    if mode == "code":
        if bool((teacher_scores[valid] > 0).any()):
            raise ValueError(
                "confidence mode 'code' expects teacher_scores = -distance (score_kind 'neg_l2', all <= 0), "
                f"got a positive score (max {float(teacher_scores[valid].max()):.4g}); use 'topk_softmax' for logits"
            )
        teacher_distance = -teacher_scores  # [B, K]
        unnormalised = torch.exp(-teacher_distance / temperature) + CODE_CONFIDENCE_EPS  # [B, K]
        unnormalised = torch.where(valid, unnormalised, torch.zeros_like(unnormalised))
        row_sum = unnormalised.sum(dim=-1, keepdim=True)  # [B, 1]; 0 only for rows made of padding
        return unnormalised / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))  # [B, K]

    if mode == "teacher_l2":
        if teacher_user_state is None or teacher_item_table is None or teacher_topk is None:
            missing = [
                name
                for name, value in (
                    ("teacher_user_state", teacher_user_state),
                    ("teacher_item_table", teacher_item_table),
                    ("teacher_topk", teacher_topk),
                )
                if value is None
            ]
            raise ValueError(f"confidence mode 'teacher_l2' needs {', '.join(missing)}")
        _check_2d("teacher_user_state", teacher_user_state, "[B, d]")
        _check_2d("teacher_item_table", teacher_item_table, "[n_items, d]")
        if teacher_user_state.shape[0] != batch_size:
            raise ValueError(
                f"teacher_user_state has {teacher_user_state.shape[0]} rows, expected B={batch_size} (one per example)"
            )
        if teacher_user_state.shape[1] != teacher_item_table.shape[1]:
            raise ValueError(
                f"teacher_user_state has dim {teacher_user_state.shape[1]} but teacher_item_table has dim "
                f"{teacher_item_table.shape[1]}; expected the same d"
            )
        if teacher_topk.numel() > 0 and int(teacher_topk.max()) >= teacher_item_table.shape[0]:
            raise ValueError(
                f"teacher_topk contains item id {int(teacher_topk.max())} but teacher_item_table has only "
                f"{teacher_item_table.shape[0]} rows"
            )
        user_state = teacher_user_state.detach().float()  # [B, d]
        candidate_emb = teacher_item_table.detach().float()[teacher_topk.clamp_min(0)]  # [B, K, d]
        distance = torch.linalg.vector_norm(user_state[:, None, :] - candidate_emb, ord=2, dim=-1)  # [B, K]
        return _masked_softmax(-distance / temperature, valid)  # [B, K]

    if mode == "paper_target":
        if target_distance is None:
            raise ValueError("confidence mode 'paper_target' needs target_distance [B]")
        if target_distance.dim() != 1 or target_distance.shape[0] != batch_size:
            raise ValueError(
                f"target_distance must have shape [B]=[{batch_size}], got {tuple(target_distance.shape)}"
            )
        if not beta > 0:
            raise ValueError(f"beta must be > 0 for confidence mode 'paper_target', got {beta!r}")
        example_confidence = torch.exp(-target_distance.detach().float().to(teacher_scores.device) / beta)  # [B]
        confidence = example_confidence[:, None].expand(batch_size, num_candidates)  # [B, K]
        return torch.where(valid, confidence, torch.zeros_like(confidence))

    # mode == "uniform"
    valid_float = valid.float()  # [B, K]
    n_valid = valid_float.sum(dim=-1, keepdim=True)  # [B, 1]
    return valid_float / n_valid.clamp_min(1.0)  # [B, K]


def consistency_weights(teacher_topk: Tensor, student_logits: Tensor, k: int) -> Tensor:
    """Consistency weight ``w^o_bk = 1[c_bk ∈ O_S(b)]``, ``O_S(b)`` = the student's current top-k items.

    ``O_S`` excludes ``[PAD]`` (column 0) and is computed without gradient; ties in the student logits go to the
    lower item id. Padding candidates (ids ``<= 0``) get 0.

    Args:
        teacher_topk: ``[B, K]`` teacher item ids.
        student_logits: ``[B, n_items]`` student logits from the same training forward pass.
        k: size of the student's top-k (``rd_topk``), ``1 <= k < n_items``.

    Returns:
        ``[B, K]`` float32 of 0/1.
    """
    _check_topk_ids(teacher_topk, student_logits)
    n_items = student_logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n_items:
        raise ValueError(f"k (student top-k size) must be an int in [1, n_items-1]=[1, {n_items - 1}], got {k!r}")
    ranks = student_item_ranks(student_logits)  # [B, n_items]
    teacher_ids = teacher_topk.to(ranks.device)
    candidate_rank = ranks.gather(1, teacher_ids.clamp_min(0))  # [B, K]
    in_student_topk = (candidate_rank <= k) & (teacher_ids > 0)  # [B, K]
    return in_student_topk.float()


def combine_weights(
    w_p: Tensor,
    w_c: Tensor,
    w_o: Tensor,
    gamma_p: float = 0.3,
    gamma_c: float = 0.5,
    gamma_o: float = 0.1,
    norm: str = "row",
    *,
    candidate_mask: Optional[Tensor] = None,
) -> Tensor:
    """Combined importance ``w̃_bk = γ_p·w^p_k + γ_c·w^c_bk + γ_o·w^o_bk``, optionally row-normalised.

    - ``norm="row"`` (code): ``w_bk = w̃_bk / Σ_j w̃_bj``. A row whose weights are all 0 (only possible when every
      candidate is masked) stays all-zero instead of dividing by zero; no epsilon is added to other rows.
    - ``norm="none"``: returns ``w̃``.

    Args:
        w_p: ``[K]`` or ``[B, K]`` position weights.
        w_c: ``[B, K]`` confidence weights.
        w_o: ``[B, K]`` consistency weights.
        gamma_p, gamma_c, gamma_o: non-negative mixing coefficients, not all zero.
        candidate_mask: optional ``[B, K]`` bool; ``False`` entries (padding, filtered candidates) are zeroed before
            the normalisation so that the remaining candidates sum to 1.

    Returns:
        ``[B, K]`` float32.
    """
    if norm not in WEIGHT_NORMS:
        raise ValueError(f"unknown weight normalisation {norm!r}; expected one of {', '.join(WEIGHT_NORMS)}")
    for name, gamma in (("gamma_p", gamma_p), ("gamma_c", gamma_c), ("gamma_o", gamma_o)):
        if not gamma >= 0:
            raise ValueError(f"{name} must be >= 0, got {gamma!r}")
    if gamma_p == 0 and gamma_c == 0 and gamma_o == 0:
        raise ValueError("gamma_p, gamma_c and gamma_o are all 0: the ranking-distillation weights would all be 0")
    _check_2d("w_c", w_c, "[B, K]")
    _check_same_shape("w_o", w_o, "w_c", w_c)
    if w_p.dim() == 1:
        if w_p.shape[0] != w_c.shape[1]:
            raise ValueError(f"w_p has K={w_p.shape[0]} entries but w_c has K={w_c.shape[1]} columns")
        w_p = w_p[None, :]  # [1, K]
    elif tuple(w_p.shape) != tuple(w_c.shape):
        raise ValueError(f"w_p must have shape [K] or [B, K]={tuple(w_c.shape)}, got {tuple(w_p.shape)}")

    position = w_p.detach().float().to(w_c.device)  # [1 or B, K]
    confidence = w_c.detach().float()  # [B, K]
    consistency = w_o.detach().float().to(w_c.device)  # [B, K]
    for name, weight in (("w_p", position), ("w_c", confidence), ("w_o", consistency)):
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0, got min {float(weight.min()):.4g}")

    combined = gamma_p * position + gamma_c * confidence + gamma_o * consistency  # [B, K]
    if candidate_mask is not None:
        _check_same_shape("candidate_mask", candidate_mask, "w_c", w_c)
        combined = torch.where(candidate_mask.to(combined.device), combined, torch.zeros_like(combined))
    if norm == "none":
        return combined
    row_sum = combined.sum(dim=-1, keepdim=True)  # [B, 1]
    safe_row_sum = torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))  # [B, 1]
    return combined / safe_row_sum  # [B, K]; all-zero rows stay zero


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------


def dllm2rec_rd_loss(
    student_logits: Tensor,
    teacher_topk: Tensor,
    neg_items: Tensor,
    weights: Tensor,
    neg_term: str = "logsigmoid",
    *,
    candidate_mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """DLLM2Rec ranking-distillation loss (docs/METHODS.md §1.4, official-code aggregation).

    ``ℓ_bk = -log σ(ŷ_{b,c_k}) - N_b`` with

    - ``neg_term="logsigmoid"`` (default): ``N_b = log σ(-ŷ_{b,neg})``;
    - ``neg_term="code_shifted"``: ``N_b = log σ(1 - ŷ_{b,neg})`` (the official code's shifted term, computed stably);
    - ``neg_term="none"``: ``N_b = 0`` (the paper's form).

    ``L = (1/B) Σ_b Σ_k w_bk ℓ_bk = pos_part + neg_part`` with ``pos_part = (1/B) Σ_b Σ_k w_bk (-log σ(ŷ_{b,c_k}))`` and
    ``neg_part = (1/B) Σ_b (Σ_k w_bk) (-N_b)``. Padding candidates (ids ``<= 0``) and candidates with
    ``candidate_mask = False`` get ``w_bk = 0`` (the remaining weights are not renormalised here: normalise with
    ``combine_weights(..., candidate_mask=...)``). The weights are constants (detached).

    Args:
        student_logits: ``[B, n_items]``.
        teacher_topk: ``[B, K]`` teacher item ids.
        neg_items: ``[B]`` one sampled negative item per example.
        weights: ``[B, K]`` importance weights ``w_bk``.
        neg_term: one of ``RD_NEG_TERMS``.
        candidate_mask: optional ``[B, K]`` bool (``rd_filter_candidates``).

    Returns:
        ``(loss, pos_part, neg_part)``: float32 scalars.
    """
    if neg_term not in RD_NEG_TERMS:
        raise ValueError(f"unknown RD negative term {neg_term!r}; expected one of {', '.join(RD_NEG_TERMS)}")
    _check_topk_ids(teacher_topk, student_logits)
    _check_same_shape("weights", weights, "teacher_topk", teacher_topk)
    batch_size, n_items = student_logits.shape
    if batch_size == 0:
        raise ValueError("student_logits has an empty batch (B=0)")
    if neg_items.dim() != 1 or neg_items.shape[0] != batch_size:
        raise ValueError(f"neg_items must have shape [B]=[{batch_size}], got {tuple(neg_items.shape)}")
    if int(neg_items.min()) < 1 or int(neg_items.max()) >= n_items:
        raise ValueError(
            f"neg_items must be item ids in [1, n_items)=[1, {n_items}), got range "
            f"[{int(neg_items.min())}, {int(neg_items.max())}]"
        )

    logits = student_logits.float()  # [B, n_items]
    valid = candidate_validity(teacher_topk, candidate_mask).to(logits.device)  # [B, K]
    weights = weights.detach().float().to(logits.device)  # [B, K]
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or inf; expected finite importance weights w_bk")
    candidate_weight = torch.where(valid, weights, torch.zeros_like(weights))  # [B, K]

    candidate_logits = logits.gather(1, teacher_topk.to(logits.device).clamp_min(0))  # [B, K]
    candidate_loss = -F.logsigmoid(candidate_logits)  # [B, K]
    pos_part = (candidate_weight * candidate_loss).sum() / batch_size

    neg_logits = logits.gather(1, neg_items.to(logits.device)[:, None]).squeeze(1)  # [B]
    if neg_term == "logsigmoid":
        neg_loss = -F.logsigmoid(-neg_logits)  # [B]
    elif neg_term == "code_shifted":
        neg_loss = -F.logsigmoid(1.0 - neg_logits)  # [B]
    else:
        neg_loss = torch.zeros_like(neg_logits)  # [B]
    neg_part = (candidate_weight.sum(dim=-1) * neg_loss).sum() / batch_size

    return pos_part + neg_part, pos_part, neg_part


def logit_kd_loss(
    student_logits: Tensor, teacher_topk: Tensor, teacher_scores: Tensor, temperature: float = 1.0
) -> Tensor:
    """Hinton logit distillation restricted to the teacher's K listed candidates.

    ``L = T² · (1/B) Σ_b Σ_k p_bk (log p_bk - log q_bk)`` with ``p_b = softmax_k(t_bk / T)`` (teacher, detached) and
    ``q_b = softmax_k(ŷ_{b,c_k} / T)`` (student), both over the valid candidates of row b only (padding excluded;
    a row without a valid candidate contributes 0). Division by B is ``batchmean``.

    Args:
        student_logits: ``[B, n_items]``.
        teacher_topk: ``[B, K]`` teacher item ids.
        teacher_scores: ``[B, K]`` teacher logits of those items.
        temperature: ``T > 0``.

    Returns:
        float32 scalar.
    """
    _check_topk_ids(teacher_topk, student_logits)
    _check_same_shape("teacher_scores", teacher_scores, "teacher_topk", teacher_topk)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    batch_size = student_logits.shape[0]
    if batch_size == 0:
        raise ValueError("student_logits has an empty batch (B=0)")

    logits = student_logits.float()  # [B, n_items]
    valid = candidate_validity(teacher_topk).to(logits.device)  # [B, K]
    candidate_logits = logits.gather(1, teacher_topk.to(logits.device).clamp_min(0))  # [B, K]
    teacher_logits = teacher_scores.detach().float().to(logits.device)  # [B, K]

    teacher_log_probs = torch.log_softmax(teacher_logits.masked_fill(~valid, _MASKED_LOGIT) / temperature, dim=-1)
    student_log_probs = torch.log_softmax(candidate_logits.masked_fill(~valid, _MASKED_LOGIT) / temperature, dim=-1)
    teacher_probs = teacher_log_probs.exp()  # [B, K]
    kl_terms = teacher_probs * (teacher_log_probs - student_log_probs)  # [B, K]
    kl_terms = torch.where(valid, kl_terms, torch.zeros_like(kl_terms))
    return kl_terms.sum() / batch_size * temperature**2


def tang_wang_rd_loss(
    student_logits: Tensor,
    teacher_topk: Tensor,
    lam: float = 1.0,
    mu: float = 0.1,
    weighting: str = "hybrid",
) -> Tensor:
    """Ranking distillation of Tang & Wang (KDD'18): the teacher's top-K as extra, weighted positives.

    ``L = -(1/B) Σ_b Σ_k w_bk log σ(ŷ_{b,c_k})`` with

    - ranking weight ``w^r_k = exp(-k/λ) / Σ_{j=1..K} exp(-j/λ)`` (k = 1 is the teacher's best);
    - ``weighting="position"``: ``w_bk = w^r_k``;
    - ``weighting="hybrid"``: ``w_bk = w^r_k·w^d_bk / Σ_j w^r_j·w^d_bj`` with the rank-discrepancy weight
      ``w^d_bk = tanh(max(μ·(r̂_bk - k), 0))``, ``r̂_bk`` = the student's current 1-based rank of ``c_bk`` among all
      items (``[PAD]`` excluded, no gradient). A row with ``Σ_j w^r_j w^d_bj = 0`` (the student already ranks every
      candidate at least as high as the teacher) gets zero weight.

    Padding candidates (ids ``<= 0``) get ``w_bk = 0``; the position weights are not renormalised over the remaining
    candidates.

    Returns:
        float32 scalar.
    """
    if weighting not in TANG_WANG_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {', '.join(TANG_WANG_WEIGHTINGS)}")
    if not lam > 0:
        raise ValueError(f"lam (ranking-weight temperature λ) must be > 0, got {lam!r}")
    if not mu >= 0:
        raise ValueError(f"mu (rank-discrepancy sharpness μ) must be >= 0, got {mu!r}")
    _check_topk_ids(teacher_topk, student_logits)
    batch_size, num_candidates = teacher_topk.shape
    if batch_size == 0:
        raise ValueError("student_logits has an empty batch (B=0)")
    if num_candidates == 0:
        raise ValueError("teacher_topk has K=0 candidates; expected K >= 1")

    logits = student_logits.float()  # [B, n_items]
    teacher_ids = teacher_topk.to(logits.device)
    valid = candidate_validity(teacher_ids)  # [B, K]
    ranking_weight = position_weights(num_candidates, lam).to(logits.device)[None, :]  # [1, K]
    if weighting == "position":
        weight = ranking_weight.expand(batch_size, -1)  # [B, K]
    else:
        teacher_rank = torch.arange(1, num_candidates + 1, device=logits.device, dtype=torch.float32)  # [K]
        student_rank = student_item_ranks(logits).gather(1, teacher_ids.clamp_min(0)).float()  # [B, K]
        discrepancy_weight = torch.tanh(torch.clamp(mu * (student_rank - teacher_rank[None, :]), min=0.0))  # [B, K]
        weight = torch.where(valid, ranking_weight * discrepancy_weight, torch.zeros_like(discrepancy_weight))
        row_sum = weight.sum(dim=-1, keepdim=True)  # [B, 1]
        weight = weight / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))  # [B, K]
    weight = torch.where(valid, weight, torch.zeros_like(weight))  # [B, K]

    candidate_logits = logits.gather(1, teacher_ids.clamp_min(0))  # [B, K]
    return -(weight * F.logsigmoid(candidate_logits)).sum() / batch_size


# ----------------------------------------------------------------------------------------------------------------------
# Diagnostics (docs/METHODS.md §1.8)
# ----------------------------------------------------------------------------------------------------------------------


def overlap_ratio(teacher_topk: Tensor, student_logits: Tensor, k: int) -> float:
    """Mean teacher-student top-k overlap ``mean_b |O_T(b) ∩ O_S(b)| / k``.

    ``O_T(b)`` = the first k entries of ``teacher_topk[b]`` (padding never overlaps), ``O_S(b)`` = the student's
    top-k (``[PAD]`` excluded, ties to the lower id). Paper Table 7 reports it at k = 20.
    """
    _check_2d("teacher_topk", teacher_topk, "[B, K]")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= teacher_topk.shape[1]:
        raise ValueError(f"k must be an int in [1, K]=[1, {teacher_topk.shape[1]}], got {k!r}")
    overlap = consistency_weights(teacher_topk[:, :k], student_logits, k)  # [B, k]
    return float(overlap.sum(dim=-1).div(k).mean())


def teacher_list_diagnostics(teacher_topk: Tensor, target: Tensor, history: Tensor) -> dict:
    """What a teacher's top-K lists hold besides new knowledge (issue: lists that re-teach the label).

    With ``T_b`` = the items of ``teacher_topk[b]`` (``[PAD]`` = 0 never counts), ``y_b`` = ``target[b]`` and
    ``H_b`` = the non-PAD items of ``history[b]``:

        target_in_list      = mean_b 1[y_b ∈ T_b]
        history_in_list     = mean_b 1[|T_b ∩ H_b| > 0]
        history_items_share = mean_b |{k : T_bk ∈ H_b}| / K

    Args:
        teacher_topk: ``[B, K]`` item ids, best first.
        target: ``[B]`` the ground-truth next items.
        history: ``[B, L]`` the history item ids, 0-padded.

    Returns:
        ``{"target_in_list", "history_in_list", "history_items_share"}`` as floats, and ``"rows"``.
    """
    _check_2d("teacher_topk", teacher_topk, "[B, K]")
    _check_2d("history", history, "[B, L]")
    if target.dim() != 1 or target.shape[0] != teacher_topk.shape[0] or history.shape[0] != teacher_topk.shape[0]:
        raise ValueError(
            f"target [B] and history [B, L] must have the B={teacher_topk.shape[0]} rows of teacher_topk, got "
            f"{list(target.shape)} and {list(history.shape)}"
        )
    listed = teacher_topk.long()  # [B, K]
    is_target = (listed == target.long()[:, None]) & (listed != 0)  # [B, K]
    in_history = ((listed[:, :, None] == history.long()[:, None, :]) & (history.long()[:, None, :] != 0)).any(-1)
    in_history &= listed != 0  # [B, K]
    return {
        "rows": int(listed.shape[0]),
        "target_in_list": float(is_target.any(dim=1).float().mean()),
        "history_in_list": float(in_history.any(dim=1).float().mean()),
        "history_items_share": float(in_history.float().mean()),
    }


def mean_entropy(weights: Tensor) -> float:
    """Mean row entropy ``mean_b -Σ_k w̄_bk log w̄_bk`` (natural log, ``0·log 0 = 0``) of ``w̄_b = w_b / Σ_k w_bk``.

    ``log K`` = uniform (confidence carries no information), ``0`` = all mass on one candidate. Rows that sum to 0
    are skipped; 0.0 if every row does.

    Args:
        weights: ``[B, K]`` non-negative weights (e.g. ``w^c``).
    """
    _check_2d("weights", weights, "[B, K]")
    weights = weights.detach().float()  # [B, K]
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("weights must be finite and >= 0 to compute an entropy")
    row_sum = weights.sum(dim=-1, keepdim=True)  # [B, 1]
    nonzero_rows = row_sum.squeeze(-1) > 0  # [B]
    if not bool(nonzero_rows.any()):
        return 0.0
    probs = weights[nonzero_rows] / row_sum[nonzero_rows]  # [B', K]
    entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)  # [B']
    return float(entropy.mean())
