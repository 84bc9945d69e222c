"""KD terms fail loudly (recbole_llmkd/distill/guards.py, docs/METHODS.md §2.7)."""
import pytest
import torch

from recbole_llmkd.distill import KDTermError, KDTermMonitor, check_kd_term, cosine_alignment


def _attached(value: float) -> torch.Tensor:
    parameter = torch.nn.Parameter(torch.tensor(1.0))
    return parameter * value


# ----------------------------------------------------------------------------------------------------------------------
# check_kd_term
# ----------------------------------------------------------------------------------------------------------------------


def test_check_kd_term_accepts_attached_finite_scalar():
    value = _attached(0.5)
    assert check_kd_term("rd", value, 0.8) is value


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "is None"),
        (0, "is a int"),  # the official SLMRec failure: the KD loss stayed the integer 0
        (0.3, "not a torch.Tensor"),
        (torch.tensor(float("nan"), requires_grad=True), "not finite"),
        (torch.tensor(float("inf"), requires_grad=True), "not finite"),
        (torch.tensor(0.7), "does not require grad"),  # detached from the graph
        (torch.ones(3, requires_grad=True), "scalar"),
    ],
)
def test_check_kd_term_raises_when_weight_positive(value, message):
    with pytest.raises(KDTermError, match=message) as error:
        check_kd_term("cos", value, 1.0)
    assert "'cos'" in str(error.value) and "weight 1" in str(error.value)


@pytest.mark.parametrize("value", [None, 0, torch.tensor(float("nan")), torch.tensor(0.7)])
def test_check_kd_term_silent_when_weight_zero(value):
    assert check_kd_term("cos", value, 0.0) is value


def test_check_kd_term_detached_is_fine_without_grad_mode():
    with torch.no_grad():
        value = torch.tensor(0.7)
        assert check_kd_term("rd", value, 0.8) is value


def test_check_kd_term_rejects_bad_weight():
    with pytest.raises(ValueError, match="'rd'"):
        check_kd_term("rd", _attached(1.0), -0.1)


def test_real_detached_teacher_only_term_is_caught():
    # a KD term computed from teacher states only (both sides detached) cannot train the student
    teacher_state = [torch.randn(2, 4)]
    detached_term = cosine_alignment([teacher_state[0].clone()], teacher_state)
    with pytest.raises(KDTermError, match="does not require grad"):
        check_kd_term("cos", detached_term, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# KDTermMonitor
# ----------------------------------------------------------------------------------------------------------------------


def test_monitor_epoch_means():
    monitor = KDTermMonitor({"rd": 0.8, "base": 0.0})
    for rd, base in ((1.0, 0.5), (2.0, 0.5), (3.0, 0.5)):
        monitor.update({"rd": torch.tensor(rd), "base": base})
    means = monitor.end_epoch(1)
    # rd: (1 + 2 + 3)/3 = 2; base: 0.5
    assert means == {"rd": pytest.approx(2.0), "base": pytest.approx(0.5)}


def test_monitor_raises_on_epoch_of_zeros():
    monitor = KDTermMonitor({"rd": 0.8})
    for _ in range(3):
        monitor.update({"rd": torch.tensor(0.0)})
    with pytest.raises(KDTermError) as error:
        monitor.end_epoch(2)
    message = str(error.value)
    assert message == (
        "KD term 'rd' was exactly 0 for all 3 batches of epoch 2 while its weight rd_weight=0.8 > 0: "
        "the teacher signal is not reaching the loss"
    )
    # the monitor was reset: a healthy next epoch passes
    monitor.update({"rd": torch.tensor(0.1)})
    assert monitor.end_epoch(3) == {"rd": pytest.approx(0.1)}


def test_monitor_one_nonzero_batch_is_enough():
    monitor = KDTermMonitor({"rd": 0.8})
    for value in (0.0, 0.0, 0.25):
        monitor.update({"rd": value})
    assert monitor.end_epoch(1) == {"rd": pytest.approx(0.25 / 3)}


def test_monitor_raises_when_weighted_term_never_reported():
    monitor = KDTermMonitor({"cos": 1.0, "ms": 0.1}, weight_names={"cos": "lambda1"})
    monitor.update({"ms": torch.tensor(0.3)})
    with pytest.raises(KDTermError, match=r"'cos' was never reported .* epoch 0 .* lambda1=1"):
        monitor.end_epoch(0)


def test_monitor_silent_for_zero_weight_terms():
    monitor = KDTermMonitor({"rd": 0.0, "ed": 0.0})
    monitor.update({"rd": torch.tensor(0.0)})
    assert monitor.end_epoch(1) == {"rd": 0.0}  # 'ed' never reported, weight 0: fine


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor(float("-inf"))])
def test_monitor_raises_immediately_on_non_finite(bad):
    monitor = KDTermMonitor({"rd": 0.8})
    monitor.update({"rd": 0.5})
    with pytest.raises(KDTermError, match=r"'rd' \(weight rd_weight=0.8\) is .* in batch 2"):
        monitor.update({"rd": bad})


def test_monitor_rejects_non_scalar_and_bad_weights():
    monitor = KDTermMonitor({"rd": 0.8})
    with pytest.raises(KDTermError, match="scalar"):
        monitor.update({"rd": torch.ones(2)})
    with pytest.raises(ValueError, match="'rd'"):
        KDTermMonitor({"rd": float("nan")})
