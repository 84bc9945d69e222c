"""SLMRec block alignment and multi-supervision (recbole_llmkd/distill/hidden.py) against hand-computed numbers.

ln 2 = 0.693147, -ln(3/4) = 0.287682, -ln(1/4) = ln 4 = 1.386294.
"""
import math

import pytest
import torch

from recbole_llmkd.distill import (
    alignment_reductions,
    block_layer_pairs,
    block_logit_kd,
    cosine_alignment,
    multi_supervision_loss,
    norm_alignment,
)

LN3 = math.log(3.0)

# ----------------------------------------------------------------------------------------------------------------------
# block_layer_pairs
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "teacher_layers, student_layers, n_blocks, expected",
    [
        (8, 4, 4, [(1, 2), (2, 4), (3, 6), (4, 8)]),  # SLMRec_4<-8 (official scripts)
        (32, 8, 4, [(2, 8), (4, 16), (6, 24), (8, 32)]),  # code defaults: n = 2, m = 8
        (8, 4, 2, [(2, 4), (4, 8)]),
        (6, 3, 3, [(1, 2), (2, 4), (3, 6)]),
        (4, 4, 1, [(4, 4)]),
        (30, 6, 6, [(1, 5), (2, 10), (3, 15), (4, 20), (5, 25), (6, 30)]),
    ],
)
def test_block_layer_pairs(teacher_layers, student_layers, n_blocks, expected):
    assert block_layer_pairs(teacher_layers, student_layers, n_blocks) == expected


@pytest.mark.parametrize(
    "teacher_layers, student_layers, n_blocks, message",
    [
        (8, 4, 0, "B must be an int >= 1"),
        (8, 4, -2, "B must be an int >= 1"),
        (8, 6, 4, "does not divide N=6"),
        (6, 4, 4, "does not divide M=6"),
        (6, 6, 4, "does not divide M=6 and N=6"),
        (0, 4, 4, "teacher_layers M"),
    ],
)
def test_block_layer_pairs_rejects_invalid(teacher_layers, student_layers, n_blocks, message):
    with pytest.raises(ValueError, match=message):
        block_layer_pairs(teacher_layers, student_layers, n_blocks)


def test_block_layer_pairs_message_names_m_n_b():
    with pytest.raises(ValueError) as error:
        block_layer_pairs(8, 6, 4)
    assert "B=4" in str(error.value) and "M=8" in str(error.value) and "N=6" in str(error.value)


# ----------------------------------------------------------------------------------------------------------------------
# D_cos, D_norm
# ----------------------------------------------------------------------------------------------------------------------

# Two blocks, batch 2, d = 2.
STUDENT_STATES = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [2.0, 0.0]])]
TEACHER_STATES = [torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [-1.0, 0.0]])]


def test_cosine_alignment_code_and_paper():
    # block 1: cos = [1, 0] -> 1 - mean = 0.5;  block 2: cos = [1, -1] -> 1 - 0 = 1
    # code (sum) = 0.5 + 1 = 1.5;  paper (mean) = 1.5 / 2 = 0.75
    assert cosine_alignment(STUDENT_STATES, TEACHER_STATES, reduction="sum").item() == pytest.approx(1.5, abs=1e-6)
    assert cosine_alignment(STUDENT_STATES, TEACHER_STATES, reduction="mean").item() == pytest.approx(0.75, abs=1e-6)


def test_norm_alignment_code_and_paper():
    # block 1: s - t = [[0, 0], [-1, 1]] -> ‖·‖ = [0, √2] mean 0.707107; squared [0, 2] mean 1
    # block 2: s - t = [[0, 0], [3, 0]]  -> ‖·‖ = [0, 3]  mean 1.5;      squared [0, 9] mean 4.5
    # code: 0.707107 + 1.5 = 2.207107;  paper: (1 + 4.5) / 2 = 2.75
    code = norm_alignment(STUDENT_STATES, TEACHER_STATES, squared=False, reduction="sum")
    paper = norm_alignment(STUDENT_STATES, TEACHER_STATES, squared=True, reduction="mean")
    assert code.item() == pytest.approx(2.207107, abs=1e-6)
    assert paper.item() == pytest.approx(2.75, abs=1e-6)


def test_alignment_reductions_drive_both_scalings():
    code, paper = alignment_reductions("code"), alignment_reductions("paper")
    assert cosine_alignment(STUDENT_STATES, TEACHER_STATES, **code["cosine"]).item() == pytest.approx(1.5, abs=1e-6)
    assert cosine_alignment(STUDENT_STATES, TEACHER_STATES, **paper["cosine"]).item() == pytest.approx(0.75, abs=1e-6)
    assert norm_alignment(STUDENT_STATES, TEACHER_STATES, **code["norm"]).item() == pytest.approx(2.207107, abs=1e-6)
    assert norm_alignment(STUDENT_STATES, TEACHER_STATES, **paper["norm"]).item() == pytest.approx(2.75, abs=1e-6)
    assert code["multi_supervision"] == {"reduction": "sum"}
    assert paper["multi_supervision"] == {"reduction": "mean"}
    with pytest.raises(ValueError, match="code, paper"):
        alignment_reductions("official")


def test_alignment_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="empty"):
        cosine_alignment([], [])
    with pytest.raises(ValueError, match="2 student states but 1 teacher"):
        norm_alignment(STUDENT_STATES, TEACHER_STATES[:1])
    with pytest.raises(ValueError, match="differ"):
        cosine_alignment([torch.zeros(2, 3)], [torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="last-token"):
        cosine_alignment([torch.zeros(2, 5, 3)], [torch.zeros(2, 5, 3)])
    with pytest.raises(ValueError, match="reduction"):
        cosine_alignment(STUDENT_STATES, TEACHER_STATES, reduction="max")


def test_alignment_low_precision_inputs_give_fp32():
    student_bf16 = [state.bfloat16() for state in STUDENT_STATES]
    teacher_bf16 = [state.bfloat16() for state in TEACHER_STATES]
    cosine = cosine_alignment(student_bf16, teacher_bf16)
    distance = norm_alignment(student_bf16, teacher_bf16)
    assert cosine.dtype == torch.float32 and distance.dtype == torch.float32
    assert cosine.item() == pytest.approx(1.5, abs=1e-6)  # these values are exact in bf16
    # fp16 residual streams with large norms: ‖(400, 400, 400, 400)‖² = 4·160000 = 640000 > fp16 max 65504
    student_fp16 = [torch.full((1, 4), 200.0, dtype=torch.float16)]
    teacher_fp16 = [torch.full((1, 4), -200.0, dtype=torch.float16)]
    squared = norm_alignment(student_fp16, teacher_fp16, squared=True)
    assert squared.dtype == torch.float32
    assert squared.item() == pytest.approx(640000.0)


def test_alignment_weight_changes_student_gradient():
    """A KD weight > 0 changes the gradient of a small student parameter compared with weight 0."""
    torch.manual_seed(0)
    student_layer = torch.nn.Linear(3, 3)
    user_input = torch.randn(4, 3)  # [B, d]
    teacher_states = [torch.randn(4, 3), torch.randn(4, 3)]
    target = torch.tensor([1, 2, 3, 4])
    item_table = torch.randn(5, 3)

    def gradient(kd_weight: float) -> torch.Tensor:
        student_layer.zero_grad()
        hidden_1 = student_layer(user_input)  # [B, d]
        hidden_2 = torch.tanh(hidden_1)  # [B, d]
        logits = hidden_2 @ item_table.t()  # [B, n_items]
        ce_loss = torch.nn.functional.cross_entropy(logits, target)
        kd_loss = cosine_alignment([hidden_1, hidden_2], teacher_states) + 0.1 * norm_alignment(
            [hidden_1, hidden_2], teacher_states
        )
        (ce_loss + kd_weight * kd_loss).backward()
        return student_layer.weight.grad.clone()

    assert not torch.allclose(gradient(0.0), gradient(1.0), rtol=1e-5, atol=1e-6)


def test_norm_alignment_gradient_finite_when_states_equal():
    student = torch.zeros(2, 3, requires_grad=True)
    norm_alignment([student], [torch.zeros(2, 3)]).backward()
    assert torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------------------------------------------------
# L_ms
# ----------------------------------------------------------------------------------------------------------------------

# n_items = 3 (PAD + 2 items); PAD logits are huge and must be ignored.
TAP_1 = torch.tensor([[5.0, 0.0, LN3], [0.0, 0.0, 0.0]])
TAP_2 = torch.tensor([[100.0, 0.0, 0.0], [-100.0, 0.0, LN3]])
MS_TARGET = torch.tensor([2, 1])


def test_multi_supervision_loss_code_and_paper():
    # tap 1: row 0 softmax over items (1, 2) = (1, 3)/4, target 2 -> -ln(3/4) = 0.287682
    #        row 1 uniform, target 1 -> ln 2 = 0.693147;                 CE_1 = (0.287682 + 0.693147)/2 = 0.490415
    # tap 2: row 0 uniform, target 2 -> 0.693147; row 1 (1, 3)/4, target 1 -> ln 4 = 1.386294
    #                                                                       CE_2 = (0.693147 + 1.386294)/2 = 1.039721
    # code (sum) = 1.530136;  paper (mean over B-1 = 2 taps) = 0.765068
    code = multi_supervision_loss([TAP_1, TAP_2], MS_TARGET, reduction="sum")
    paper = multi_supervision_loss([TAP_1, TAP_2], MS_TARGET, reduction="mean")
    assert code.item() == pytest.approx(1.530136, abs=1e-5)
    assert paper.item() == pytest.approx(0.765068, abs=1e-5)
    assert code.dtype == torch.float32
    # one tap: sum == mean == CE_1
    assert multi_supervision_loss([TAP_1], MS_TARGET).item() == pytest.approx(0.490415, abs=1e-5)


def test_multi_supervision_loss_bf16_and_gradient():
    logits = TAP_1.clone().bfloat16().requires_grad_(True)
    loss = multi_supervision_loss([logits], MS_TARGET)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[:, 0].abs().sum().item() == 0.0  # PAD column gets no gradient


def test_multi_supervision_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        multi_supervision_loss([], MS_TARGET)
    with pytest.raises(ValueError, match="PAD"):
        multi_supervision_loss([TAP_1], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        multi_supervision_loss([TAP_1], torch.tensor([1, 2, 1]))
    with pytest.raises(ValueError, match="like tap 0"):
        multi_supervision_loss([TAP_1, torch.zeros(2, 4)], MS_TARGET)


# ----------------------------------------------------------------------------------------------------------------------
# block_logit_kd
# ----------------------------------------------------------------------------------------------------------------------


def test_block_logit_kd_by_hand():
    # block 1: teacher over items (1, 2) = softmax(ln 3, 0) = (3/4, 1/4) (PAD 50 ignored); student (1/2, 1/2)
    #   KL = 0.75·ln(1.5) + 0.25·ln(0.5) = 0.304099 - 0.173287 = 0.130812
    # block 2: identical -> 0.   sum = 0.130812, mean = 0.065406
    teacher = [torch.tensor([[50.0, LN3, 0.0]]), torch.zeros(1, 3)]
    student = [torch.tensor([[-7.0, 0.0, 0.0]]), torch.zeros(1, 3)]
    assert block_logit_kd(student, teacher, reduction="sum").item() == pytest.approx(0.130812, abs=1e-5)
    assert block_logit_kd(student, teacher, reduction="mean").item() == pytest.approx(0.065406, abs=1e-5)


def test_block_logit_kd_batchmean_detaches_teacher_and_fp32():
    # two rows: row 0 as above (0.130812), row 1 identical (0): batchmean = 0.065406
    teacher = torch.tensor([[0.0, LN3, 0.0], [0.0, 1.0, 2.0]]).requires_grad_(True)
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]).bfloat16().requires_grad_(True)
    loss = block_logit_kd([student], [teacher])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.065406, abs=1e-5)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad[:, 1:].abs().sum().item() > 0


def test_block_logit_kd_rejects_mismatch():
    with pytest.raises(ValueError, match="W_a"):
        block_logit_kd([torch.zeros(1, 3)], [torch.zeros(1, 3), torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="empty"):
        block_logit_kd([], [])
