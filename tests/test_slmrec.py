"""SLMRec (issue 5): block alignment through the model, frozen offline teacher, online variant, set-up errors.

Tiny random Llama decoders on CPU over a 25-user slice of ml-100k (helpers shared with tests/test_llmrec.py).
D_cos / D_norm / L_ms against hand computations are in tests/test_distill_hidden.py; the SLMRec evaluation protocol
in tests/test_evaluation.py.
"""
import glob
import os

import pytest
import torch

from recbole_llmkd.distill import KDTermError, cosine_alignment, norm_alignment
from tests.test_llmrec import SLICE_NAME, make_ml_slice, slice_config

TEACHER_LAYERS = 4  # M of the trained teacher


def _config(data_root, model="SLMRec", **overrides):
    from recbole_llmkd.config import Config

    return Config(model, SLICE_NAME, config_dict=slice_config(data_root, **overrides))


def _data(config):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    return data_preparation(config, create_dataset(config))


def save_untrained_teacher(data_root, path, n_layers, **overrides):
    """A RecBole-style LLMRec checkpoint without training (enough for shape/index checks)."""
    from recbole_llmkd.run import build_model

    config = _config(data_root, model="LLMRec", llm_tiny_config={"num_hidden_layers": n_layers}, **overrides)
    train_data, _, _ = _data(config)
    torch.manual_seed(1)
    model = build_model(config, train_data._dataset)
    torch.save({"config": config, "state_dict": model.state_dict(), "other_parameter": model.other_parameter()}, path)
    return str(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_ml_slice(root)
    return root


@pytest.fixture(scope="module")
def teacher_run(data_root, tmp_path_factory):
    """A tiny LLMRec teacher (M = 4 layers) trained 1 epoch on one example per user; its run directory."""
    from recbole_llmkd.quick_start import run_recbole_llmkd

    run_dir = tmp_path_factory.mktemp("teacher")
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        result = run_recbole_llmkd(
            "LLMRec",
            SLICE_NAME,
            config_dict=slice_config(
                data_root,
                llm_tiny_config={"num_hidden_layers": TEACHER_LAYERS},
                llm_train_examples="last_per_user",
                epochs=2,
                run_dir=str(run_dir / "run"),
            ),
        )
    finally:
        os.chdir(cwd)
    return result["run_dir"]


def student_config(data_root, teacher, **overrides):
    base = {"llm_tiny_config": {"num_hidden_layers": TEACHER_LAYERS}, "llm_n_layers": 2, "slm_blocks": 2, "teacher": teacher}
    return _config(data_root, **{**base, **overrides})


def build_student(data_root, teacher, **overrides):
    from recbole_llmkd.run import build_model

    config = student_config(data_root, teacher, **overrides)
    train_data, valid_data, test_data = _data(config)
    torch.manual_seed(0)
    return build_model(config, train_data._dataset), config, train_data


# ----- block index mapping through the model ------------------------------------------------------------------


@pytest.mark.parametrize(
    "M,N,B,pairs",
    [
        (8, 4, 4, [(1, 2), (2, 4), (3, 6), (4, 8)]),
        (4, 2, 2, [(1, 2), (2, 4)]),
        (6, 3, 3, [(1, 2), (2, 4), (3, 6)]),
        (8, 2, 2, [(1, 4), (2, 8)]),
    ],
)
def test_block_pairs_through_the_model(data_root, tmp_path, M, N, B, pairs):
    teacher = save_untrained_teacher(data_root, tmp_path / "teacher.pth", M)
    model, _, train_data = build_student(
        data_root, teacher, llm_tiny_config={"num_hidden_layers": M}, llm_n_layers=N, slm_blocks=B
    )
    assert model.block_pairs == pairs
    assert (model.n_teacher_layers, model.n_student_layers) == (M, N)
    assert len(model.ms_adapters) == B - 1
    batch = train_data._dataset.inter_feat[:8]
    states = model.kd_states(batch)
    _, student_hidden = model.user_state(batch, output_hidden_states=True)
    _, teacher_hidden = model.teacher.user_state(batch, output_hidden_states=True)
    assert len(student_hidden) == N + 1 and len(teacher_hidden) == M + 1
    for k, (s, t) in enumerate(pairs):
        torch.testing.assert_close(states["student_taps"][k], student_hidden[s][:, -1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(states["teacher_taps"][k], teacher_hidden[t][:, -1], rtol=1e-5, atol=1e-6)
    # the last pair is the final-norm states that feed the heads
    torch.testing.assert_close(states["student_taps"][-1], states["student_state"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(states["teacher_taps"][-1], states["teacher_state"], rtol=1e-5, atol=1e-6)
    # the model's D_cos / D_norm are the distill functions of exactly these states (code scaling)
    d_cos, d_norm = model.calculate_loss(batch)[1:3]
    assert d_cos.item() == pytest.approx(cosine_alignment(states["student_taps"], states["teacher_taps"]).item(), rel=1e-5)
    assert d_norm.item() == pytest.approx(0.1 * norm_alignment(states["student_taps"], states["teacher_taps"]).item(), rel=1e-5)


@pytest.mark.parametrize(
    "M,N,B,message",
    [
        (4, 3, 2, r"B=2 must divide .* N=3"),
        (4, 2, 4, r"B=4 must divide .* N=2"),
        (6, 2, 2, None),  # valid: (1, 3), (2, 6)
        (6, 4, 4, r"B=4 must divide .* M=6 and student layers N=4; B does not divide M=6"),
    ],
)
def test_invalid_blocks_fail_before_any_backbone_is_loaded(data_root, tmp_path, monkeypatch, M, N, B, message):
    from recbole_llmkd.llm import backbone
    from recbole_llmkd.model.slmrec import SLMRecSetupError

    teacher = save_untrained_teacher(data_root, tmp_path / "teacher.pth", M)
    if message is None:
        model, _, _ = build_student(data_root, teacher, llm_tiny_config={"num_hidden_layers": M}, llm_n_layers=N, slm_blocks=B)
        assert model.block_pairs == [(1, 3), (2, 6)]
        return
    monkeypatch.setattr(backbone, "load_backbone", lambda *a, **k: pytest.fail("backbone loaded before the block check"))
    with pytest.raises(SLMRecSetupError, match=message):
        build_student(data_root, teacher, llm_tiny_config={"num_hidden_layers": M}, llm_n_layers=N, slm_blocks=B)


def test_invalid_blocks_stop_the_run_before_training(data_root, teacher_run, tmp_path):
    from recbole_llmkd.model.slmrec import SLMRecSetupError
    from recbole_llmkd.quick_start import run_recbole_llmkd

    run_dir = tmp_path / "bad"
    config = slice_config(data_root, llm_tiny_config={"num_hidden_layers": TEACHER_LAYERS}, llm_n_layers=3,
                          slm_blocks=2, teacher=teacher_run, run_dir=str(run_dir))
    with pytest.raises(SLMRecSetupError, match="B=2 must divide"):
        run_recbole_llmkd("SLMRec", SLICE_NAME, config_dict=config)
    assert not glob.glob(str(run_dir / "*.pth"))


def test_backbone_family_and_hidden_size_checked_unless_projected(data_root, tmp_path):
    from recbole_llmkd.model.slmrec import SLMRecSetupError

    teacher = save_untrained_teacher(data_root, tmp_path / "teacher.pth", 4)  # hidden 32
    wide = {"llm_tiny_config": {"num_hidden_layers": 4, "hidden_size": 48, "num_attention_heads": 4}}
    with pytest.raises(SLMRecSetupError, match=r"hidden_size 32 \(teacher\) vs 48 \(student\).*slm_state_projection"):
        build_student(data_root, teacher, **wide)
    model, _, train_data = build_student(data_root, teacher, slm_state_projection=True, **wide)
    assert [tuple(p.weight.shape) for p in model.state_projection] == [(32, 48), (32, 48)]
    batch = train_data._dataset.inter_feat[:8]
    losses = model.calculate_loss(batch)
    sum(losses).backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in model.state_projection)
    states = model.kd_states(batch)
    projected = [proj(tap) for proj, tap in zip(model.state_projection, states["student_taps"])]
    assert losses[1].item() == pytest.approx(cosine_alignment(projected, states["teacher_taps"]).item(), rel=1e-5)
    with pytest.raises(SLMRecSetupError, match="slm_student_init: teacher .* d_llm differs"):
        build_student(data_root, teacher, slm_state_projection=True, slm_student_init="teacher", **wide)


def test_teacher_from_another_dataset_is_rejected(data_root, tmp_path):
    from recbole_llmkd.model.slmrec import SLMRecSetupError

    other_root = tmp_path / "other"
    make_ml_slice(other_root, users_from=100)
    teacher = save_untrained_teacher(other_root, tmp_path / "teacher.pth", 4)
    with pytest.raises(SLMRecSetupError, match="was trained on dataset .* use the teacher's dataset"):
        build_student(data_root, teacher)


def test_option_errors(data_root, tmp_path):
    from recbole_llmkd.model.slmrec import SLMRecSetupError

    teacher = save_untrained_teacher(data_root, tmp_path / "teacher.pth", 4)
    with pytest.raises(SLMRecSetupError, match="needs teacher="):
        build_student(data_root, None)
    with pytest.raises(SLMRecSetupError, match="needs llm_n_layers"):
        build_student(data_root, teacher, llm_n_layers=None)
    with pytest.raises(SLMRecSetupError, match="kd_loss_type='logit' needs W_a adapters on the teacher"):
        build_student(data_root, teacher, kd_loss_type="logit")
    with pytest.raises(SLMRecSetupError, match="slm_teacher_n_layers=8 but the teacher checkpoint"):
        build_student(data_root, teacher, slm_teacher_n_layers=8)
    with pytest.raises(SLMRecSetupError, match="online needs slm_teacher_n_layers"):
        build_student(data_root, None, kd_mode="online")
    with pytest.raises(SLMRecSetupError, match="slm_online_lambda3_teacher = 0 leaves those adapters untrained"):
        build_student(data_root, None, kd_mode="online", slm_teacher_n_layers=4, kd_loss_type="logit",
                      slm_online_lambda3_teacher=0.0)
    with pytest.raises(SLMRecSetupError, match="slm_student_init: teacher copies a \\*trained\\* teacher"):
        build_student(data_root, None, kd_mode="online", slm_teacher_n_layers=4, slm_student_init="teacher")


# ----- offline: frozen teacher, KD gradients, initialisation ---------------------------------------------------


def test_offline_teacher_frozen_outside_the_module_tree(data_root, teacher_run):
    from recbole_llmkd.trainer.llm_trainer import SLMTrainer

    model, config, train_data = build_student(data_root, teacher_run)
    teacher = model.teacher
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert not any(key.startswith("teacher") for key in model.state_dict())
    assert "teacher" not in dict(model.named_children())
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    student_before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    trainer = SLMTrainer(config, model)
    assert not teacher_ids & {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainer._train_epoch(train_data, 0)  # several optimizer steps (all prefixes of 25 users)
    assert trainer.global_step > 1
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, before[name]) for name, p in teacher.named_parameters())
    assert not teacher.training and model.training
    changed = [name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, student_before[name])]
    assert any("lora_" in name for name in changed) and any(name.startswith("ms_adapters") for name in changed)
    terms = trainer.kd_epoch_terms[-1]
    assert set(terms) == {"ce", "d_cos", "d_norm", "l_ms"} and all(terms[name] > 0 for name in terms)


def test_kd_weight_changes_the_students_gradients(data_root, teacher_run):
    model, _, train_data = build_student(data_root, teacher_run, slm_lambda1=0.0, slm_lambda2=0.0, slm_lambda3=0.0)
    batch = train_data._dataset.inter_feat[:16]
    lora = [p for name, p in model.named_parameters() if "lora_B" in name and p.requires_grad]  # lora_A: 0 grad at B = 0

    def lora_grads():
        model.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        return [p.grad.clone() for p in lora]

    ce_only = lora_grads()
    model.lambda_cos = 1.0
    with_cos = lora_grads()
    assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ce_only, with_cos)), "λ1 > 0 did not change any gradient"
    model.lambda_cos, model.lambda_norm = 0.0, 0.1
    with_norm = lora_grads()
    assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ce_only, with_norm)), "λ2 > 0 did not change any gradient"
    model.lambda_norm, model.lambda_ms = 0.0, 1.0
    model.zero_grad()
    sum(model.calculate_loss(batch)).backward()
    assert model.ms_adapters[0].weight.grad.abs().sum() > 0


def test_kd_terms_are_float32_under_bf16_autocast(data_root, teacher_run):
    model, _, train_data = build_student(data_root, teacher_run)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.calculate_loss(train_data._dataset.inter_feat[:8])
    assert all(loss.dtype == torch.float32 for loss in losses[1:])


def test_student_init_teacher_copies_the_first_layers_adapters(data_root, teacher_run):
    copied, _, _ = build_student(data_root, teacher_run, slm_student_init="teacher")
    fresh, _, _ = build_student(data_root, teacher_run, slm_student_init="base")
    teacher_state = copied.teacher.state_dict()
    copied_state, fresh_state = copied.state_dict(), fresh.state_dict()
    lora_keys = [k for k in copied_state if "lora_B" in k]
    assert lora_keys and all(".layers.0." in k or ".layers.1." in k for k in lora_keys)
    for key in lora_keys + ["input_proj.weight", "input_proj.bias", "head.weight"]:
        assert torch.equal(copied_state[key], teacher_state[key]), key
        assert not torch.equal(fresh_state[key], teacher_state[key]), key  # base: fresh (lora_B = 0, new proj/head)
    # the item table is the teacher's in both (the paper's shared table; slm_copy_item_table)
    assert torch.equal(copied_state["item_embedding.weight"], teacher_state["item_embedding.weight"])
    assert torch.equal(fresh_state["item_embedding.weight"], teacher_state["item_embedding.weight"])


def test_copied_student_matches_teacher_block_states(data_root, teacher_run):
    model, _, train_data = build_student(data_root, teacher_run, slm_student_init="teacher")
    model.eval()
    batch = train_data._dataset.inter_feat[:8]
    states = model.kd_states(batch)
    _, teacher_hidden = model.teacher.user_state(batch, output_hidden_states=True)
    # same base layers + copied adapters, input_proj and item table: the student's layer-1 residual stream is the
    # teacher's layer-1 stream (pair (1, 2) then compares it with the teacher's layer 2)
    _, student_hidden = model.user_state(batch, output_hidden_states=True)
    assert torch.allclose(student_hidden[1][:, -1], teacher_hidden[1][:, -1], atol=1e-5)
    assert states["student_taps"][0].shape == states["teacher_taps"][0].shape


# ----- KD terms never fail silently -----------------------------------------------------------------------------


def test_zero_or_nan_kd_term_stops_training(data_root, teacher_run, monkeypatch):
    from recbole_llmkd.model import slmrec
    from recbole_llmkd.trainer.llm_trainer import SLMTrainer

    model, config, train_data = build_student(data_root, teacher_run)
    monkeypatch.setattr(slmrec, "cosine_alignment", lambda s, t, **kw: s[0].sum() * 0.0)  # attached, but always 0
    with pytest.raises(KDTermError, match="'d_cos' was exactly 0 for all .* slm_lambda1=1"):
        SLMTrainer(config, model)._train_epoch(train_data, 0)
    monkeypatch.setattr(slmrec, "cosine_alignment", lambda s, t, **kw: s[0].sum() * float("nan"))
    with pytest.raises(KDTermError, match="'d_cos' .* not finite"):
        SLMTrainer(config, model)._train_epoch(train_data, 0)


# ----- end to end ------------------------------------------------------------------------------------------------


def _epoch_terms(run_dir):
    lines = [line for line in open(os.path.join(run_dir, "run.log"), encoding="utf-8") if "SLMRec terms epoch" in line]
    assert lines, "no per-epoch KD term line in run.log"
    return {name: float(value) for name, value in (item.split("=") for item in lines[-1].split(": ", 2)[-1].split())}


def test_end_to_end_offline(data_root, teacher_run, tmp_path):
    from recbole_llmkd import compat
    from recbole_llmkd.quick_start import run_recbole_llmkd

    config = slice_config(
        data_root, llm_tiny_config={"num_hidden_layers": TEACHER_LAYERS}, llm_n_layers=2, slm_blocks=2,
        teacher=teacher_run, run_dir=str(tmp_path / "slm"), slm_eval_sampled="valid_and_test", slm_eval_negatives=50,
        valid_metric="sampled_mrr", epochs=2,
    )
    result = run_recbole_llmkd("SLMRec", SLICE_NAME, config_dict=config)
    terms = _epoch_terms(result["run_dir"])
    assert set(terms) == {"ce", "d_cos", "d_norm", "l_ms"} and all(value > 0 for value in terms.values())
    test = result["test_result"]
    assert {"hit@10", "ndcg@10", "sampled_hit@1", "sampled_hit@5", "sampled_ndcg@5", "sampled_mrr"} <= set(test)
    assert result["best_valid_score"] == result["best_valid_result"]["sampled_mrr"]  # selection on the SLMRec protocol
    state = compat.load_checkpoint(result["checkpoint"])["state_dict"]
    assert any(key.startswith("ms_adapters.") for key in state)
    assert not any(key.startswith(("teacher", "online_teacher")) for key in state)
    assert not any(key.startswith("llm.") and "lora_" not in key for key in state)  # frozen base not saved


@pytest.mark.parametrize("kd_loss_type", ["cosine", "logit"])
def test_end_to_end_online(data_root, tmp_path, kd_loss_type):
    from recbole_llmkd import compat
    from recbole_llmkd.quick_start import run_recbole_llmkd

    config = slice_config(
        data_root, llm_tiny_config={"num_hidden_layers": TEACHER_LAYERS}, llm_n_layers=2, slm_blocks=2,
        kd_mode="online", slm_teacher_n_layers=TEACHER_LAYERS, kd_loss_type=kd_loss_type, run_dir=str(tmp_path / "on"),
    )
    result = run_recbole_llmkd("SLMRec", SLICE_NAME, config_dict=config)
    terms = _epoch_terms(result["run_dir"])
    kd = {"d_cos", "d_norm"} if kd_loss_type == "cosine" else {"kd_logit"}
    assert set(terms) == {"ce", "l_ms", "ce_teacher", "l_ms_teacher"} | kd
    assert all(value > 0 for value in terms.values())
    state = compat.load_checkpoint(result["checkpoint"])["state_dict"]
    # the online teacher is trained: its LoRA and adapters are saved, its frozen base is not
    assert any(key.startswith("online_teacher.") and "lora_" in key for key in state)
    assert any(key.startswith("teacher_ms_adapters.") for key in state)
    assert not any(key.startswith("online_teacher.llm.") and "lora_" not in key for key in state)


def test_online_teacher_is_trained_and_detach_switch(data_root):
    from recbole_llmkd.trainer.llm_trainer import SLMTrainer

    model, config, train_data = build_student(data_root, None, kd_mode="online", slm_teacher_n_layers=4,
                                              slm_lambda3=0.0, slm_online_lambda3_teacher=0.0)
    assert model.online_teacher is model.teacher
    assert model.teacher.item_embedding is model.item_embedding  # one shared item table
    teacher_lora = [p for name, p in model.online_teacher.named_parameters() if "lora_B" in name]
    batch = train_data._dataset.inter_feat[:16]

    def teacher_kd_grad(detach):
        model.detach_online_teacher = detach
        model.zero_grad()
        losses = model.calculate_loss(batch)
        (losses[1] + losses[2]).backward()  # the KD terms only
        return sum(float(p.grad.abs().sum()) for p in teacher_lora if p.grad is not None)

    assert teacher_kd_grad(False) > 0  # code: KD also moves the teacher
    assert teacher_kd_grad(True) == 0.0
    SLMTrainer(config, model)._train_epoch(train_data, 0)


def test_predict_runs_the_student_once_per_unique_history(data_root, teacher_run):
    model, _, train_data = build_student(data_root, teacher_run)
    model.eval()
    rows = train_data._dataset.inter_feat[:3]
    repeated = rows[torch.tensor([0, 0, 0, 1, 1, 2])]
    repeated["item_id"] = torch.tensor([5, 6, 7, 5, 6, 7])
    teacher_rows = model.teacher.llm_forward_rows
    model.llm_forward_rows = 0
    with torch.no_grad():
        scores = model.predict(repeated)
    assert model.llm_forward_rows == 3 and model.teacher.llm_forward_rows == teacher_rows  # no teacher at inference
    with torch.no_grad():
        full = model.full_sort_predict(rows)
    assert torch.allclose(scores, full[torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([5, 6, 7, 5, 6, 7])], atol=1e-5)
