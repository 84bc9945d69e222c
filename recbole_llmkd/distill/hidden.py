"""SLMRec block-wise hidden-state distillation and multi-supervision (docs/METHODS.md §2.2-§2.4).

Notation: the teacher has M decoder layers, the student N, both split into B_blocks blocks. Hugging Face
``hidden_states`` has L+1 entries (index 0 = input embeddings, index L = after the final norm). The aligned states
are last-token states ``[B, d]`` (B = batch size), taken by the caller at the indices of ``block_layer_pairs``.

Every term is computed in float32 even when the states or logits are bf16/fp16 (raw residual streams have large
norms). The λ weights (λ1, λ2 = 0.1, λ3) are applied by the caller, not here. Nothing here detaches the teacher
states: offline KD runs the teacher under ``torch.no_grad()`` and the online variant decides
(``online_detach_teacher``); ``block_logit_kd`` always detaches the teacher logits (docs/METHODS.md §2.4).
"""
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("sum", "mean")
SLM_KD_SCALINGS = ("code", "paper")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}")


def _reduce(per_block: List[Tensor], reduction: str) -> Tensor:
    """``Σ_k x_k`` for ``"sum"``, ``(1/len) Σ_k x_k`` for ``"mean"``; float32 scalar."""
    stacked = torch.stack(per_block)  # [n_blocks]
    return stacked.sum() if reduction == "sum" else stacked.mean()


def _aligned_blocks(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    block_term: Callable[[Tensor, Tensor], Tensor],
    reduction: str,
) -> Tensor:
    """``block_term(h_s^(k), h_t^(k))`` for every block ``k``, reduced over the blocks (after the shape checks)."""
    _check_reduction(reduction)
    _check_state_pairs(student_states, teacher_states)
    per_block = [block_term(student, teacher) for student, teacher in zip(student_states, teacher_states)]  # [n_blocks]
    return _reduce(per_block, reduction)


def _check_state_pairs(student_states: Sequence[Tensor], teacher_states: Sequence[Tensor]) -> None:
    if len(student_states) == 0:
        raise ValueError("student_states is empty; expected one [B, d] state per block")
    if len(student_states) != len(teacher_states):
        raise ValueError(
            f"got {len(student_states)} student states but {len(teacher_states)} teacher states; "
            "expected one aligned pair per block"
        )
    for block, (student_state, teacher_state) in enumerate(zip(student_states, teacher_states), start=1):
        if student_state.dim() != 2:
            raise ValueError(
                f"block {block}: student state must be a last-token state [B, d], "
                f"got shape {tuple(student_state.shape)}"
            )
        if tuple(student_state.shape) != tuple(teacher_state.shape):
            raise ValueError(
                f"block {block}: student state {tuple(student_state.shape)} and teacher state "
                f"{tuple(teacher_state.shape)} differ; expected the same [B, d] (teacher and student share d_llm)"
            )


def block_layer_pairs(teacher_layers: int, student_layers: int, n_blocks: int) -> List[Tuple[int, int]]:
    """Aligned ``(student, teacher)`` ``hidden_states`` indices ``(k·N/B, k·M/B)`` for blocks ``k = 1..B``.

    ``M = 8, N = 4, B = 4 -> [(1, 2), (2, 4), (3, 6), (4, 8)]``. The last pair is always ``(N, M)``, the final-norm
    states that feed the heads.

    Args:
        teacher_layers: M, the teacher's number of decoder layers.
        student_layers: N, the student's number of decoder layers.
        n_blocks: B, must divide both M and N.
    """
    for name, value in (("teacher_layers M", teacher_layers), ("student_layers N", student_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(
            f"n_blocks B must be an int >= 1, got {n_blocks!r} (M={teacher_layers}, N={student_layers})"
        )
    not_divided = [
        f"{name}={value}"
        for name, value in (("M", teacher_layers), ("N", student_layers))
        if value % n_blocks != 0
    ]
    if not_divided:
        raise ValueError(
            f"n_blocks B={n_blocks} must divide both teacher layers M={teacher_layers} and student layers "
            f"N={student_layers}; B does not divide {' and '.join(not_divided)}"
        )
    student_block = student_layers // n_blocks  # n
    teacher_block = teacher_layers // n_blocks  # m
    return [(k * student_block, k * teacher_block) for k in range(1, n_blocks + 1)]


def cosine_alignment(
    student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], reduction: str = "sum"
) -> Tensor:
    """Cosine alignment ``D_cos``.

    ``"sum"`` (code): ``Σ_k (1 - mean_b cos(h_s^(k), h_t^(k)))``;
    ``"mean"`` (paper): ``(1/B_blocks) Σ_k (1 - mean_b cos(h_s^(k), h_t^(k)))``.
    ``cos`` is ``F.cosine_similarity(s, t, dim=1)`` (eps 1e-8).

    Args:
        student_states, teacher_states: one ``[B, d]`` last-token state per block, same length.

    Returns:
        float32 scalar.
    """
    def block_term(student_state: Tensor, teacher_state: Tensor) -> Tensor:
        cosine = F.cosine_similarity(student_state.float(), teacher_state.float(), dim=1)  # [B]
        return 1.0 - cosine.mean()

    return _aligned_blocks(student_states, teacher_states, block_term, reduction)


def norm_alignment(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    squared: bool = False,
    reduction: str = "sum",
) -> Tensor:
    """Distance alignment ``D_norm`` (without λ2).

    code (``squared=False, reduction="sum"``): ``Σ_k mean_b ‖h_s^(k) - h_t^(k)‖₂``;
    paper (``squared=True, reduction="mean"``): ``(1/B_blocks) Σ_k mean_b ‖h_s^(k) - h_t^(k)‖₂²``.

    Args:
        student_states, teacher_states: one ``[B, d]`` last-token state per block, same length.

    Returns:
        float32 scalar.
    """
    def block_term(student_state: Tensor, teacher_state: Tensor) -> Tensor:
        difference = student_state.float() - teacher_state.float()  # [B, d]
        if squared:
            distance = difference.pow(2).sum(dim=1)  # [B]
        else:
            distance = torch.linalg.vector_norm(difference, ord=2, dim=1)  # [B]
        return distance.mean()

    return _aligned_blocks(student_states, teacher_states, block_term, reduction)


def _check_block_logits(name: str, block_logits: Sequence[Tensor]) -> None:
    if len(block_logits) == 0:
        raise ValueError(f"{name} is empty; expected one [B, n_items] logit tensor per multi-supervision tap")
    for tap, logits in enumerate(block_logits, start=1):
        if logits.dim() != 2:
            raise ValueError(f"{name}[{tap - 1}] must have shape [B, n_items], got {tuple(logits.shape)}")
        if logits.shape[1] < 2:
            raise ValueError(f"{name}[{tap - 1}] has {logits.shape[1]} columns; expected [PAD] plus at least 1 item")


def multi_supervision_loss(block_logits: Sequence[Tensor], target: Tensor, reduction: str = "sum") -> Tensor:
    """Multi-supervision ``L_ms`` over the B_blocks - 1 intermediate taps.

    ``"sum"`` (code): ``Σ_k CE(y, z^(k))``; ``"mean"`` (paper): ``(1/(B_blocks-1)) Σ_k CE(y, z^(k))``, where
    ``z^(k) = W_a^k(h_s^(k)) · Eᵀ`` are full-item logits with column 0 (``[PAD]``) set to -inf and CE is the
    batch-mean full-softmax cross-entropy.

    Args:
        block_logits: one ``[B, n_items]`` tensor per tap.
        target: ``[B]`` target item ids in ``[1, n_items)``.

    Returns:
        float32 scalar.
    """
    _check_reduction(reduction)
    _check_block_logits("block_logits", block_logits)
    batch_size, n_items = block_logits[0].shape
    if target.dim() != 1 or target.shape[0] != batch_size:
        raise ValueError(f"target must have shape [B]=[{batch_size}], got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer item ids, got dtype {target.dtype}")
    if int(target.min()) < 1 or int(target.max()) >= n_items:
        raise ValueError(
            f"target must be item ids in [1, n_items)=[1, {n_items}) ([PAD]=0 is never a target), got range "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    per_tap = []
    for tap, logits in enumerate(block_logits):
        if tuple(logits.shape) != (batch_size, n_items):
            raise ValueError(
                f"block_logits[{tap}] has shape {tuple(logits.shape)}, expected {(batch_size, n_items)} like tap 0"
            )
        logits = logits.float()  # [B, n_items]
        pad_column = torch.zeros_like(logits, dtype=torch.bool)  # [B, n_items]
        pad_column[:, 0] = True
        masked_logits = logits.masked_fill(pad_column, float("-inf"))  # [B, n_items]
        per_tap.append(F.cross_entropy(masked_logits, target.to(logits.device)))
    return _reduce(per_tap, reduction)


def block_logit_kd(
    student_block_logits: Sequence[Tensor], teacher_block_logits: Sequence[Tensor], reduction: str = "sum"
) -> Tensor:
    """Online logit KD per block: ``Σ_k KL(softmax(z_t^(k)) ‖ softmax(z_s^(k)))`` (or the mean over blocks).

    ``KL(p ‖ q) = (1/B) Σ_b Σ_j p_bj (log p_bj - log q_bj)`` (``batchmean``), softmaxes over items ``1..n_items-1``
    (column 0 ``[PAD]`` masked), no temperature, teacher logits detached.

    Args:
        student_block_logits, teacher_block_logits: one ``[B, n_items]`` tensor per block, same shapes.

    Returns:
        float32 scalar.
    """
    _check_reduction(reduction)
    _check_block_logits("student_block_logits", student_block_logits)
    _check_block_logits("teacher_block_logits", teacher_block_logits)
    if len(student_block_logits) != len(teacher_block_logits):
        raise ValueError(
            f"got {len(student_block_logits)} student blocks but {len(teacher_block_logits)} teacher blocks; "
            "both sides need one W_a head per block"
        )
    per_block = []
    for block, (student_logits, teacher_logits) in enumerate(zip(student_block_logits, teacher_block_logits)):
        if tuple(student_logits.shape) != tuple(teacher_logits.shape):
            raise ValueError(
                f"block {block}: student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} differ"
            )
        student_log_probs = torch.log_softmax(student_logits.float()[:, 1:], dim=-1)  # [B, n_items - 1]
        teacher_log_probs = torch.log_softmax(teacher_logits.detach().float()[:, 1:], dim=-1)  # [B, n_items - 1]
        per_block.append(F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True))
    return _reduce(per_block, reduction)


def alignment_reductions(scaling: str) -> Dict[str, Dict[str, object]]:
    """Keyword arguments of each SLMRec term for ``slm_kd_scaling`` (docs/METHODS.md §2.3 table).

    - ``"code"``: ``D_cos`` and ``D_norm`` summed over blocks, ``D_norm`` unsquared, ``L_ms`` summed over taps.
    - ``"paper"``: means over blocks / taps, ``D_norm`` squared.

    ``block_logit_kd`` (online only, not in the paper) follows the block aggregation of ``D_cos`` (inferred).

    Usage: ``cosine_alignment(s, t, **alignment_reductions("code")["cosine"])``.
    """
    reduction = {"code": "sum", "paper": "mean"}.get(scaling)
    if reduction is None:
        raise ValueError(f"unknown slm_kd_scaling {scaling!r}; expected one of {', '.join(SLM_KD_SCALINGS)}")
    return {
        "cosine": {"reduction": reduction},
        "norm": {"reduction": reduction, "squared": scaling == "paper"},
        "multi_supervision": {"reduction": reduction},
        "block_logit_kd": {"reduction": reduction},
    }
