"""DLLM2Rec ranking distillation weights and losses (recbole_llmkd/distill/ranking.py) against hand-computed numbers.

Constants used below (natural logs):
    ln 2 = 0.693147, ln 3 = 1.098612, ln 4 = 1.386294
    -logσ(ln 3)  = -ln(3/4) = 0.287682      (σ(ln 3) = 3/(3+1) = 0.75)
    -logσ(0)     = ln 2     = 0.693147
    -logσ(-ln 3) = -ln(1/4) = 1.386294
"""
import math

import pytest
import torch

from recbole_llmkd.distill import (
    CONFIDENCE_MODES,
    combine_weights,
    confidence_weights,
    consistency_weights,
    dllm2rec_rd_loss,
    logit_kd_loss,
    mean_entropy,
    overlap_ratio,
    position_weights,
    student_item_ranks,
    tang_wang_rd_loss,
    teacher_list_diagnostics,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


# ----------------------------------------------------------------------------------------------------------------------
# position_weights
# ----------------------------------------------------------------------------------------------------------------------


def test_position_weights_k10_matches_methods_table():
    # Σ_{j=1..10} e^{-j} = e^{-1}(1 - e^{-10})/(1 - e^{-1}) = 0.581948
    # w_1 = e^{-1}/0.581948 = 0.367879/0.581948 = 0.6321, w_2 = e^{-2}/0.581948 = 0.135335/0.581948 = 0.2326
    expected = torch.tensor([0.6321, 0.2326, 0.0856, 0.0315, 0.0116, 0.0043, 0.0016, 0.0006, 0.0002, 0.0001])
    weights = position_weights(10, beta=1.0)
    assert weights.dtype == torch.float32
    assert weights.shape == (10,)
    torch.testing.assert_close(weights, expected, atol=6e-5, rtol=0)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_position_weights_k1_and_beta2():
    torch.testing.assert_close(position_weights(1), torch.tensor([1.0]))
    # β = 2, K = 2: e^{-0.5} = 0.606531, e^{-1} = 0.367879, sum 0.974410 -> [0.622459, 0.377541]
    torch.testing.assert_close(position_weights(2, beta=2.0), torch.tensor([0.622459, 0.377541]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k, beta", [(0, 1.0), (-3, 1.0), (3, 0.0), (3, -1.0)])
def test_position_weights_rejects_bad_arguments(k, beta):
    with pytest.raises(ValueError):
        position_weights(k, beta)


# ----------------------------------------------------------------------------------------------------------------------
# confidence_weights
# ----------------------------------------------------------------------------------------------------------------------


def test_confidence_topk_softmax_with_temperature():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    # τ = 1: e^2 = 7.389056, e^1 = 2.718282, e^0 = 1, sum 11.107338 -> [0.665241, 0.244728, 0.090031]
    torch.testing.assert_close(
        confidence_weights(scores, "topk_softmax"), torch.tensor([[0.665241, 0.244728, 0.090031]]), atol=1e-6, rtol=0
    )
    # τ = 2: logits [1, 0.5, 0]: e^1 = 2.718282, e^0.5 = 1.648721, 1, sum 5.367003 -> [0.506480, 0.307196, 0.186324]
    torch.testing.assert_close(
        confidence_weights(scores, "topk_softmax", temperature=2.0),
        torch.tensor([[0.506480, 0.307196, 0.186324]]),
        atol=1e-6,
        rtol=0,
    )


def test_confidence_code_mode_is_softmax_of_minus_distance_plus_1e8():
    # d = [0, 1, 2] stored as scores -d: exp(-d) + 1e-8 = [1, 0.367879, 0.135335] (+1e-8), sum 1.503214
    # -> [0.665241, 0.244728, 0.090031]
    scores = -torch.tensor([[0.0, 1.0, 2.0]])
    torch.testing.assert_close(
        confidence_weights(scores, "code"), torch.tensor([[0.665241, 0.244728, 0.090031]]), atol=1e-6, rtol=0
    )
    # Large distances d = [30, 31, 32]: exp(-d) ≈ 9.4e-14, 3.4e-14, 1.3e-14 << 1e-8, so the 1e-8 dominates and the
    # weights collapse to uniform (docs/METHODS.md §1.4): (9.36e-14 + 1e-8) / (3e-8 + 1.40e-13) = 0.333335
    far = confidence_weights(-torch.tensor([[30.0, 31.0, 32.0]]), "code")
    torch.testing.assert_close(far, torch.full((1, 3), 1.0 / 3.0), atol=2e-6, rtol=0)


def test_confidence_code_mode_rejects_logits():
    with pytest.raises(ValueError, match="neg_l2"):
        confidence_weights(torch.tensor([[2.0, -1.0]]), "code")


def test_confidence_teacher_l2():
    # item table: PAD = (0,0), item1 = (3,4), item2 = (0,1), item3 = (1,0); user u = (0,0)
    # candidates [2, 1, 3] -> distances [1, 5, 1]; e^{-1} = 0.367879, e^{-5} = 0.006738, sum 0.742496
    # -> [0.495463, 0.009075, 0.495463]
    item_table = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    weights = confidence_weights(
        torch.zeros(1, 3),
        "teacher_l2",
        teacher_user_state=torch.zeros(1, 2),
        teacher_item_table=item_table,
        teacher_topk=torch.tensor([[2, 1, 3]]),
    )
    torch.testing.assert_close(weights, torch.tensor([[0.495463, 0.009075, 0.495463]]), atol=1e-6, rtol=0)


def test_confidence_teacher_l2_needs_its_inputs():
    with pytest.raises(ValueError, match="teacher_user_state"):
        confidence_weights(torch.zeros(1, 3), "teacher_l2", teacher_topk=torch.tensor([[1, 2, 3]]))


def test_confidence_paper_target_is_per_example_constant_not_normalised():
    # β = 1: exp(-0) = 1, exp(-ln 2) = 0.5; broadcast over K = 3, rows do not sum to 1
    weights = confidence_weights(torch.zeros(2, 3), "paper_target", target_distance=torch.tensor([0.0, LN2]))
    torch.testing.assert_close(weights, torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    # β = 2, d = 2 ln 2: exp(-ln 2) = 0.5
    weights = confidence_weights(
        torch.zeros(1, 2), "paper_target", target_distance=torch.tensor([2 * LN2]), beta=2.0
    )
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="target_distance"):
        confidence_weights(torch.zeros(2, 3), "paper_target")


def test_confidence_uniform_and_padding():
    torch.testing.assert_close(confidence_weights(torch.randn(2, 4), "uniform"), torch.full((2, 4), 0.25))
    # padding (0 and -1) gets 0; the 2 valid candidates share 1/2
    weights = confidence_weights(torch.randn(1, 4), "uniform", teacher_topk=torch.tensor([[5, 0, 7, -1]]))
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))
    # topk_softmax over the valid candidates only: scores [2, (pad), 0] -> e^2/(e^2 + 1) = 7.389056/8.389056 = 0.880797
    weights = confidence_weights(
        torch.tensor([[2.0, 1.0, 0.0]]), "topk_softmax", teacher_topk=torch.tensor([[4, 0, 6]])
    )
    torch.testing.assert_close(weights, torch.tensor([[0.880797, 0.0, 0.119203]]), atol=1e-6, rtol=0)


def test_confidence_all_padding_row_is_zero_not_nan():
    for mode in ("topk_softmax", "code", "uniform"):
        weights = confidence_weights(-torch.ones(1, 2), mode, teacher_topk=torch.tensor([[0, -1]]))
        torch.testing.assert_close(weights, torch.zeros(1, 2))


def test_confidence_unknown_mode_lists_modes():
    with pytest.raises(ValueError) as error:
        confidence_weights(torch.zeros(1, 2), "softmax")
    for mode in CONFIDENCE_MODES:
        assert mode in str(error.value)


def test_confidence_bf16_input_gives_fp32():
    weights = confidence_weights(torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.bfloat16), "topk_softmax")
    assert weights.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------------
# consistency_weights, student ranks, overlap
# ----------------------------------------------------------------------------------------------------------------------

# n_items = 6 (PAD + items 1..5); PAD has the highest logit but is never in the student's top-k.
# Student order of items 1..5 by logit: item4 (0.9), item2 (0.5), item3 (0.3), item5 (0.2), item1 (0.1)
STUDENT_LOGITS = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.9, 0.2]])


def test_student_item_ranks_excludes_pad_and_breaks_ties_to_lower_id():
    ranks = student_item_ranks(STUDENT_LOGITS)
    # item:          PAD 1  2  3  4  5
    assert ranks.tolist() == [[6, 5, 2, 3, 1, 4]]
    tied = student_item_ranks(torch.tensor([[0.0, 1.0, 1.0, 2.0, 1.0]]))
    # item3 first, then the tie 1, 2, 4 in id order
    assert tied.tolist() == [[5, 2, 3, 1, 4]]


def test_consistency_weights_partial_full_and_no_overlap():
    # top-2 of the student = {4, 2}
    assert consistency_weights(torch.tensor([[2, 3, 4]]), STUDENT_LOGITS, k=2).tolist() == [[1.0, 0.0, 1.0]]
    assert consistency_weights(torch.tensor([[4, 2]]), STUDENT_LOGITS, k=2).tolist() == [[1.0, 1.0]]  # full overlap
    assert consistency_weights(torch.tensor([[1, 5]]), STUDENT_LOGITS, k=2).tolist() == [[0.0, 0.0]]  # no overlap
    assert consistency_weights(torch.tensor([[4]]), STUDENT_LOGITS, k=1).tolist() == [[1.0]]  # K = 1
    assert consistency_weights(torch.tensor([[2]]), STUDENT_LOGITS, k=1).tolist() == [[0.0]]  # K = 1, item2 is 2nd


def test_consistency_weights_change_when_student_logits_change():
    teacher_topk = torch.tensor([[2, 3, 4]])
    before = consistency_weights(teacher_topk, STUDENT_LOGITS, k=2)
    moved = STUDENT_LOGITS.clone()
    moved[0, 3] = 1.0  # item3 now first: top-2 = {3, 4}
    after = consistency_weights(teacher_topk, moved, k=2)
    assert before.tolist() == [[1.0, 0.0, 1.0]]
    assert after.tolist() == [[0.0, 1.0, 1.0]]


def test_consistency_weights_ties_and_padding():
    # all items tie: the student top-2 is {1, 2} (lower ids first)
    tied = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    assert consistency_weights(torch.tensor([[3, 1, 2]]), tied, k=2).tolist() == [[0.0, 1.0, 1.0]]
    # PAD (0) and negative ids never overlap even though PAD has the top logit
    assert consistency_weights(torch.tensor([[0, 4, -1]]), STUDENT_LOGITS, k=2).tolist() == [[0.0, 1.0, 0.0]]


def test_consistency_weights_carry_no_gradient():
    logits = STUDENT_LOGITS.clone().requires_grad_(True)
    weights = consistency_weights(torch.tensor([[2, 3]]), logits, k=2)
    assert not weights.requires_grad


@pytest.mark.parametrize("k", [0, 6, 10])
def test_consistency_weights_reject_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        consistency_weights(torch.tensor([[2, 3]]), STUDENT_LOGITS, k=k)


def test_consistency_weights_reject_out_of_range_item():
    with pytest.raises(ValueError, match="n_items=6"):
        consistency_weights(torch.tensor([[2, 6]]), STUDENT_LOGITS, k=2)


def test_overlap_ratio_and_mean_entropy():
    logits = STUDENT_LOGITS.expand(2, -1)
    # row 0: {4, 2} ∩ {4, 2} = 2 -> 2/2; row 1: {1, 5} ∩ {4, 2} = 0 -> 0; mean 0.5
    assert overlap_ratio(torch.tensor([[4, 2], [1, 5]]), logits, k=2) == pytest.approx(0.5)
    # only the first k = 1 teacher items count: row 0 {4} -> 1, row 1 {1} -> 0; mean 0.5
    assert overlap_ratio(torch.tensor([[4, 2], [1, 5]]), logits, k=1) == pytest.approx(0.5)
    # entropies: [0.5, 0.5] -> ln 2 = 0.693147; [1, 0] -> 0; mean 0.346574
    assert mean_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]])) == pytest.approx(LN2 / 2, abs=1e-6)
    # rows are normalised first ([2, 2] -> [0.5, 0.5]); all-zero rows are skipped
    assert mean_entropy(torch.tensor([[2.0, 2.0], [0.0, 0.0]])) == pytest.approx(LN2, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# combine_weights
# ----------------------------------------------------------------------------------------------------------------------


def test_combine_weights_row_and_none():
    # w^p (K=2, β=1) = [e^-1, e^-2]/(e^-1 + e^-2) = [0.731059, 0.268941]; w^c = [0.6, 0.4]; w^o = [1, 0]
    # w̃ = 0.3·w^p + 0.5·w^c + 0.1·w^o = [0.219318 + 0.3 + 0.1, 0.080682 + 0.2 + 0] = [0.619318, 0.280682]
    # row sum = 0.9 = 0.8 + 0.1·(1 overlap); row-normalised: [0.688131, 0.311869]
    w_p = position_weights(2)
    w_c = torch.tensor([[0.6, 0.4]])
    w_o = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(
        combine_weights(w_p, w_c, w_o, norm="none"), torch.tensor([[0.619318, 0.280682]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        combine_weights(w_p, w_c, w_o, norm="row"), torch.tensor([[0.688131, 0.311869]]), atol=1e-6, rtol=0
    )


def test_combine_weights_mask_and_all_masked_row():
    w_p = position_weights(2)
    w_c = torch.tensor([[0.6, 0.4], [0.6, 0.4]])
    w_o = torch.zeros(2, 2)
    mask = torch.tensor([[True, False], [False, False]])
    combined = combine_weights(w_p, w_c, w_o, candidate_mask=mask)
    # row 0: only candidate 1 left -> [1, 0]; row 1: everything masked -> stays zero (documented), no NaN
    torch.testing.assert_close(combined, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_combine_weights_rejects_bad_config():
    w_p, w_c, w_o = position_weights(2), torch.ones(1, 2) / 2, torch.zeros(1, 2)
    with pytest.raises(ValueError, match="all 0"):
        combine_weights(w_p, w_c, w_o, gamma_p=0.0, gamma_c=0.0, gamma_o=0.0)
    with pytest.raises(ValueError, match="gamma_c"):
        combine_weights(w_p, w_c, w_o, gamma_c=-0.1)
    with pytest.raises(ValueError, match="row"):
        combine_weights(w_p, w_c, w_o, norm="softmax")
    with pytest.raises(ValueError, match="w_p"):
        combine_weights(position_weights(3), w_c, w_o)


# ----------------------------------------------------------------------------------------------------------------------
# dllm2rec_rd_loss
# ----------------------------------------------------------------------------------------------------------------------

# n_items = 5. Row 0: item1 = ln 3, item2 = 0, item3 = -ln 3. Row 1: item2 = -ln 3, item3 = ln 3.
RD_LOGITS = torch.tensor([[0.0, LN3, 0.0, -LN3, 0.0], [0.0, 0.0, -LN3, LN3, 0.0]])
RD_TOPK = torch.tensor([[1, 2], [3, 0]])  # row 1, column 1 is PAD
RD_NEG = torch.tensor([3, 2])  # both negatives have logit -ln 3
RD_WEIGHTS = torch.tensor([[0.75, 0.25], [0.6, 0.4]])


def test_rd_loss_logsigmoid_by_hand():
    loss, pos_part, neg_part = dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, RD_WEIGHTS)
    # pos: (1/2)[0.75·0.287682 + 0.25·0.693147 + 0.6·0.287682 + 0.4·(PAD, masked)]
    #    = (1/2)[0.215762 + 0.173287 + 0.172609] = 0.280829
    # neg: -logσ(-(-ln 3)) = 0.287682 per example, times the valid weight sum (1.0 and 0.6):
    #    (1/2)[1.0·0.287682 + 0.6·0.287682] = 0.230146
    assert pos_part.item() == pytest.approx(0.280829, abs=1e-5)
    assert neg_part.item() == pytest.approx(0.230146, abs=1e-5)
    assert loss.item() == pytest.approx(0.510975, abs=1e-5)
    for value in (loss, pos_part, neg_part):
        assert value.dtype == torch.float32 and value.dim() == 0


def test_rd_loss_code_shifted_and_none():
    _, pos_part, neg_part = dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, RD_WEIGHTS, neg_term="code_shifted")
    # -logσ(1 - (-ln 3)) = ln(1 + e^{-1-ln 3}) = ln(1 + e^{-1}/3) = ln(1.122626) = 0.115671
    # neg = (1/2)(1.0 + 0.6)·0.115671 = 0.092537; pos part unchanged
    assert neg_part.item() == pytest.approx(0.092537, abs=1e-5)
    assert pos_part.item() == pytest.approx(0.280829, abs=1e-5)
    loss, pos_part, neg_part = dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, RD_WEIGHTS, neg_term="none")
    assert neg_part.item() == 0.0
    assert loss.item() == pytest.approx(0.280829, abs=1e-5)
    with pytest.raises(ValueError, match="logsigmoid"):
        dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, RD_WEIGHTS, neg_term="bce")


def test_rd_loss_is_stable_for_huge_logits():
    # float32 sigmoid(-200) = 0, so log(sigmoid()) would give inf; logsigmoid gives -logσ(-x) = x + log(1 + e^{-x}) ≈ x
    logits = torch.tensor([[0.0, -200.0, 300.0]])
    topk, neg, weights = torch.tensor([[1]]), torch.tensor([2]), torch.ones(1, 1)
    _, pos_part, neg_part = dllm2rec_rd_loss(logits, topk, neg, weights)
    assert pos_part.item() == pytest.approx(200.0, rel=1e-6)  # -logσ(-200) ≈ 200
    assert neg_part.item() == pytest.approx(300.0, rel=1e-6)  # -logσ(-300) ≈ 300
    _, _, neg_part = dllm2rec_rd_loss(logits, topk, neg, weights, neg_term="code_shifted")
    assert neg_part.item() == pytest.approx(299.0, rel=1e-6)  # -logσ(1 - 300) ≈ 299


def test_rd_loss_padding_and_candidate_mask():
    # negative ids are padding as well: same result as with 0
    _, pos_neg_id, _ = dllm2rec_rd_loss(RD_LOGITS, torch.tensor([[1, 2], [3, -1]]), RD_NEG, RD_WEIGHTS)
    assert pos_neg_id.item() == pytest.approx(0.280829, abs=1e-5)
    # mask row 0, column 1: pos = (1/2)[0.75·0.287682 + 0.6·0.287682] = 0.194185,
    # neg = (1/2)[(0.75)·0.287682 + (0.6)·0.287682] = 0.194185
    mask = torch.tensor([[True, False], [True, True]])
    loss, pos_part, neg_part = dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, RD_WEIGHTS, candidate_mask=mask)
    assert pos_part.item() == pytest.approx(0.194185, abs=1e-5)
    assert neg_part.item() == pytest.approx(0.194185, abs=1e-5)
    # a row made only of padding contributes 0 but still counts in B
    loss, _, _ = dllm2rec_rd_loss(RD_LOGITS, torch.tensor([[1, 2], [0, 0]]), RD_NEG, RD_WEIGHTS)
    # (1/2)[0.215762 + 0.173287 + 1.0·0.287682] = 0.338365
    assert loss.item() == pytest.approx(0.338365, abs=1e-5)


def test_rd_loss_k1():
    # B = 1, K = 1, w = 1: 0.287682 (pos, item1 = ln 3) + 0.287682 (neg, item3 = -ln 3) = 0.575364
    loss, _, _ = dllm2rec_rd_loss(RD_LOGITS[:1], torch.tensor([[1]]), torch.tensor([3]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.575364, abs=1e-5)


def test_rd_loss_gradient_by_hand_and_weights_detached():
    logits = RD_LOGITS.clone().requires_grad_(True)
    weights = RD_WEIGHTS.clone().requires_grad_(True)
    loss, _, _ = dllm2rec_rd_loss(logits, RD_TOPK, RD_NEG, weights)
    loss.backward()
    # ∂L/∂ŷ_{0,1} = -(1/B)·w·(1 - σ(ln 3)) = -(1/2)·0.75·0.25 = -0.09375
    assert logits.grad[0, 1].item() == pytest.approx(-0.09375, abs=1e-6)
    # ∂L/∂ŷ_{0,neg=3} = (1/B)·(Σ_k w)·σ(-ln 3) = (1/2)·1.0·0.25 = 0.125
    assert logits.grad[0, 3].item() == pytest.approx(0.125, abs=1e-6)
    # the PAD candidate of row 1 gets no gradient
    assert logits.grad[1, 0].item() == 0.0
    assert weights.grad is None


def test_rd_loss_bf16_gives_fp32():
    loss, pos_part, neg_part = dllm2rec_rd_loss(
        RD_LOGITS.to(torch.bfloat16), RD_TOPK, RD_NEG, RD_WEIGHTS.to(torch.bfloat16)
    )
    assert loss.dtype == pos_part.dtype == neg_part.dtype == torch.float32
    assert loss.item() == pytest.approx(0.510975, abs=5e-3)  # bf16 rounding of ln 3 and of the weights


def test_rd_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="n_items=5"):
        dllm2rec_rd_loss(RD_LOGITS, torch.tensor([[1, 5], [3, 0]]), RD_NEG, RD_WEIGHTS)
    with pytest.raises(ValueError, match="neg_items"):
        dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, torch.tensor([0, 2]), RD_WEIGHTS)
    with pytest.raises(ValueError, match="weights"):
        dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        dllm2rec_rd_loss(RD_LOGITS, RD_TOPK, RD_NEG, torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))


def test_rd_weight_changes_student_gradient():
    """A KD weight > 0 changes the gradient of a small student parameter compared with weight 0."""
    torch.manual_seed(0)
    user_state = torch.randn(2, 3)  # [B, d]
    item_embedding = torch.nn.Parameter(torch.randn(5, 3))  # [n_items, d]
    target = torch.tensor([1, 4])

    def gradient(rd_weight: float) -> torch.Tensor:
        item_embedding.grad = None
        logits = user_state @ item_embedding.t()  # [B, n_items]
        base_loss = torch.nn.functional.cross_entropy(logits, target)
        w_c = confidence_weights(torch.tensor([[1.0, 0.0], [2.0, 1.0]]), "topk_softmax")
        w_o = consistency_weights(RD_TOPK.clamp_min(2), logits, k=2)
        weights = combine_weights(position_weights(2), w_c, w_o)
        rd_loss, _, _ = dllm2rec_rd_loss(logits, RD_TOPK, RD_NEG, weights)
        (base_loss + rd_weight * rd_loss).backward()
        return item_embedding.grad.clone()

    without_kd = gradient(0.0)
    with_kd = gradient(0.8)
    assert not torch.allclose(without_kd, with_kd, rtol=1e-5, atol=1e-6)
    # the teacher candidates (items 1, 2, 3) and negatives receive the extra gradient
    assert not torch.allclose(without_kd[1:4], with_kd[1:4], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# logit_kd_loss
# ----------------------------------------------------------------------------------------------------------------------


def test_logit_kd_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 5.0]])  # candidates 1, 2 have student logits [0, 0] -> q = [0.5, 0.5]
    topk = torch.tensor([[1, 2]])
    scores = torch.tensor([[LN3, 0.0]])  # p = [3/4, 1/4]
    # KL(p‖q) = 0.75·ln(0.75/0.5) + 0.25·ln(0.25/0.5) = 0.75·0.405465 - 0.25·0.693147 = 0.130812
    assert logit_kd_loss(logits, topk, scores).item() == pytest.approx(0.130812, abs=1e-5)
    # T = 2: p = softmax([ln3/2, 0]) = [√3/(√3+1), 1/(√3+1)] = [0.633975, 0.366025], q = [0.5, 0.5]
    # KL = 0.633975·ln(1.267949) + 0.366025·ln(0.732051) = 0.150506 - 0.114165 = 0.036341; ·T² = 4·0.036341 = 0.145363
    assert logit_kd_loss(logits, topk, scores, temperature=2.0).item() == pytest.approx(0.145363, abs=1e-5)
    # identical distributions -> 0
    assert logit_kd_loss(logits, topk, torch.zeros(1, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_kd_loss_padding_and_batchmean():
    logits = torch.tensor([[0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 5.0]])
    # padding with a huge teacher score is ignored; row 1 is all padding and contributes 0 but counts in B:
    # (0.130812 + 0) / 2 = 0.065406
    topk = torch.tensor([[1, 2, 0], [0, -1, 0]])
    scores = torch.tensor([[LN3, 0.0, 100.0], [1.0, 2.0, 3.0]])
    loss = logit_kd_loss(logits.requires_grad_(True), topk, scores)
    assert loss.item() == pytest.approx(0.065406, abs=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1].abs().sum().item() == 0.0


def test_logit_kd_loss_bf16_gives_fp32():
    loss = logit_kd_loss(
        torch.zeros(1, 4, dtype=torch.bfloat16), torch.tensor([[1, 2]]), torch.tensor([[LN3, 0.0]]).bfloat16()
    )
    assert loss.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------------
# tang_wang_rd_loss
# ----------------------------------------------------------------------------------------------------------------------

# n_items = 5: item1 = 0, item2 = ln 3, item3 = -ln 3, item4 = 0. Student ranks (ties to lower id):
# item2 -> 1, item1 -> 2, item4 -> 3, item3 -> 4.
TW_LOGITS = torch.tensor([[0.0, 0.0, LN3, -LN3, 0.0]])


def test_tang_wang_position_weighting():
    # w^r (λ = 1, K = 2) = [0.731059, 0.268941]
    # L = 0.731059·(-logσ(-ln 3)) + 0.268941·(-logσ(0)) = 0.731059·1.386294 + 0.268941·0.693147 = 1.199878
    loss = tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 1]]), weighting="position")
    assert loss.item() == pytest.approx(1.199878, abs=1e-5)
    # padding: the second candidate is masked, weights are not renormalised: 0.731059·1.386294 = 1.013462
    loss = tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 0]]), weighting="position")
    assert loss.item() == pytest.approx(1.013462, abs=1e-5)


def test_tang_wang_hybrid_weighting():
    # candidates [3, 4]: teacher ranks [1, 2], student ranks [4, 3];
    # w^d = tanh(max(0.5·(4-1), 0)) = tanh(1.5) = 0.905148, tanh(0.5·(3-2)) = tanh(0.5) = 0.462117
    # w^r·w^d = [0.731059·0.905148, 0.268941·0.462117] = [0.661717, 0.124282], sum 0.785999
    # w = [0.841880, 0.158120]; L = 0.841880·1.386294 + 0.158120·0.693147 = 1.276694
    loss = tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 4]]), mu=0.5, weighting="hybrid")
    assert loss.item() == pytest.approx(1.276694, abs=1e-5)
    # candidates [3, 1]: item1 is ranked 2 by both -> w^d = 0, all weight on item3: L = 1.386294
    loss = tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 1]]), mu=0.5, weighting="hybrid")
    assert loss.item() == pytest.approx(1.386294, abs=1e-5)
    # student already agrees with the teacher (item2 rank 1, item1 rank 2): w^d = 0 everywhere -> L = 0
    loss = tang_wang_rd_loss(TW_LOGITS, torch.tensor([[2, 1]]), mu=0.5, weighting="hybrid")
    assert loss.item() == 0.0


def test_tang_wang_rejects_bad_arguments():
    with pytest.raises(ValueError, match="position"):
        tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 1]]), weighting="rank")
    with pytest.raises(ValueError, match="lam"):
        tang_wang_rd_loss(TW_LOGITS, torch.tensor([[3, 1]]), lam=0.0)


def test_tang_wang_bf16_gives_fp32():
    loss = tang_wang_rd_loss(TW_LOGITS.bfloat16(), torch.tensor([[3, 4]]))
    assert loss.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------------
# teacher_list_diagnostics
# ----------------------------------------------------------------------------------------------------------------------


def test_teacher_list_diagnostics_against_hand_counts():
    teacher_topk = torch.tensor([[5, 3, 2], [1, 4, 6], [7, 2, 9], [0, 0, 8]])  # [B=4, K=3]; row 3 padded
    target = torch.tensor([3, 7, 7, 0])  # row 3's target 0 (PAD) must not count as listed
    history = torch.tensor([[2, 0, 0], [0, 0, 0], [9, 2, 1], [8, 0, 0]])  # [B, L], 0-padded
    result = teacher_list_diagnostics(teacher_topk, target, history)
    # target listed: rows 0 (3) and 2 (7) -> 2/4; history listed: rows 0 (2), 2 (2, 9), 3 (8) -> 3/4
    # history items among the 12 listed: row 0: 1, row 2: 2, row 3: 1 (PAD slots never count) -> 4/12
    assert result == {"rows": 4, "target_in_list": 0.5, "history_in_list": 0.75,
                      "history_items_share": pytest.approx(4 / 12, abs=1e-7)}
    with pytest.raises(ValueError, match="must have the B=4 rows"):
        teacher_list_diagnostics(teacher_topk, target[:3], history)
