"""DLLM2Rec students: teacher loading and errors, state_dict hygiene, w^o from the student's current top-K, gradients,
and the fold step (issue 4 points 1-3). End-to-end training runs are in test_kd_trainer.py."""
import copy
import os

import pytest
import torch
import yaml

import recbole_llmkd  # noqa: F401  (numpy shims before RecBole)
from recbole_llmkd.data.artifacts import (
    ArtifactMismatchError,
    ArtifactWriter,
    dataset_example_keys,
    dataset_metadata,
    resolve_teacher_artifacts,
)
from recbole_llmkd.distill import consistency_weights
from recbole_llmkd.config import Config
from recbole_llmkd.config_schema import read_config
from recbole_llmkd.jobs.fold import save_folded
from recbole_llmkd.model.distiller import (
    TEACHER_SCORE_FIELD,
    TEACHER_TOPK_FIELD,
    TeacherConfigError,
    student_topk_membership,
)
from recbole_llmkd.run import build_model
from tests.conftest import REPO_ROOT, TINY_SEQ_CONFIG

# Tiny ml-100k: users with 20-24 ratings only (a few thousand training examples), history 10, hidden 16.
KD_TEST_CONFIG = {
    **TINY_SEQ_CONFIG,
    "train_batch_size": 2048,
    "eval_batch_size": 4096,
    "user_inter_num_interval": "[20,24]",
    "kd_method": "none",
    "teacher": None,
}
KD_MODELS = ("KDSASRec", "KDGRU4Rec", "KDBERT4Rec")


def build_split(model_name: str, workdir, **overrides):
    """(config, train_data, valid_data, test_data) of the tiny ml-100k for ``model_name``."""
    from recbole.data import create_dataset, data_preparation

    from recbole_llmkd.config import Config

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        config = Config(model_name, "ml-100k", config_dict={**KD_TEST_CONFIG, **overrides})
        train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, train_data, valid_data, test_data


def write_synthetic_artifact(dataset, path, K=20, d=24, seed=0, dataset_name=None, drop_rows=0, target_first=True):
    """A synthetic teacher for ``dataset`` (a built train split): column 0 = the true target (when ``target_first``),
    then popular items with noise, scores descending; random item text embeddings of size ``d``."""
    generator = torch.Generator().manual_seed(seed)
    n_rows, n_items = len(dataset.inter_feat), dataset.item_num
    targets = dataset.inter_feat[dataset.iid_field]  # [N]
    counts = torch.bincount(targets, minlength=n_items).float()  # [n_items]
    noisy = torch.log1p(counts)[None, :] + torch.randn(n_rows, n_items, generator=generator)  # [N, n_items]
    noisy[:, 0] = -1e9
    if target_first:
        noisy[torch.arange(n_rows), targets] = 1e9
    scores, topk = noisy.topk(K, dim=1)  # [N, K]
    scores = torch.where(scores > 1e8, scores.new_full((), 20.0), scores)
    keys = torch.from_numpy(dataset_example_keys(dataset, 10))
    keep = slice(drop_rows, None)
    metadata = dataset_metadata(dataset, key_history=10, score_kind="logit", teacher={"name": "synthetic"})
    if dataset_name is not None:
        metadata["dataset"] = dataset_name
    writer = ArtifactWriter(path, metadata, splits={"train": n_rows - drop_rows}, K=K, overwrite=True)
    writer.write_chunk("train", 0, {"key": keys[keep], "topk_ids": topk[keep], "topk_scores": scores[keep]})
    if d:
        text_emb = torch.randn(n_items, d, generator=generator)  # [n_items, d]
        text_emb[0] = 0.0
        writer.write_global("item_text_emb", text_emb)
    return writer.finalize()


@pytest.fixture(scope="module")
def sasrec_data(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kd_sasrec")
    config, train_data, valid_data, test_data = build_split("KDSASRec", workdir)
    artifact = write_synthetic_artifact(train_data._dataset, workdir / "teacher.safetensors")
    return config, train_data, valid_data, test_data, artifact


def make_model(config, train_data, **overrides):
    saved = {key: config[key] for key in overrides}
    for key, value in overrides.items():
        config[key] = value
    try:
        torch.manual_seed(0)
        return build_model(config, train_data._dataset)
    finally:
        for key, value in saved.items():
            config[key] = value


def first_batch(trainer_or_model, train_data):
    """The first training batch with the teacher fields attached."""
    model = trainer_or_model
    dataset = train_data._dataset
    fields = model.teacher_batch_fields(dataset)
    from recbole.data.interaction import Interaction

    if fields:
        dataset.inter_feat.update(Interaction(fields))
    return next(iter(train_data))


# ----------------------------------------------------------------------------------------------------------------------
# Property files
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", KD_MODELS)
def test_property_files_hold_every_kd_key_with_its_default(model_name):
    with open(os.path.join(REPO_ROOT, "properties", "model", "Distiller.yaml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    config = Config(model_name, "ml-100k")
    for key, default in defaults.items():
        assert read_config(defaults, key) == default  # every default is allowed by the schema
        assert config[key] == default, f"{model_name}: {key}={config[key]!r}, Distiller.yaml default {default!r}"
    if model_name == "KDBERT4Rec":
        assert config["transform"] == "mask_itemseq"


def test_config_resolves_parent_defaults_and_kd_keys(sasrec_data):
    config = sasrec_data[0]
    assert config["n_layers"] == 1 and config["loss_type"] == "CE"  # SASRec's yaml + test overrides
    assert config["rd_topk"] == 10 and config["gamma_c"] == 0.5 and config["rd_neg_term"] == "logsigmoid"


# ----------------------------------------------------------------------------------------------------------------------
# Teacher resolution and errors
# ----------------------------------------------------------------------------------------------------------------------


def test_kd_method_without_teacher_is_a_clear_error(sasrec_data):
    config, train_data = sasrec_data[0], sasrec_data[1]
    with pytest.raises(TeacherConfigError, match="needs a teacher: pass --teacher"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=None)
    assert make_model(config, train_data, kd_method="none", teacher=None).teacher is None


def test_missing_artifact_and_run_dir_resolution(sasrec_data, tmp_path):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    with pytest.raises(FileNotFoundError, match="teacher artifact not found"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="holds no teacher_artifacts.safetensors"):
        resolve_teacher_artifacts(tmp_path)
    run_dir = tmp_path / "teacher_run"
    run_dir.mkdir()
    os.symlink(artifact, run_dir / "teacher_artifacts.safetensors")
    assert resolve_teacher_artifacts(run_dir) == run_dir / "teacher_artifacts.safetensors"
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(run_dir))
    assert model.teacher.topk.shape == (len(train_data._dataset.inter_feat), 10)


def test_artifact_of_another_dataset_or_with_fewer_rows_is_refused(sasrec_data, tmp_path):
    config, train_data = sasrec_data[0], sasrec_data[1]
    other = write_synthetic_artifact(train_data._dataset, tmp_path / "other.safetensors", dataset_name="ml-1m")
    with pytest.raises(ArtifactMismatchError, match="built for dataset 'ml-1m'"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(other))
    fewer = write_synthetic_artifact(train_data._dataset, tmp_path / "fewer.safetensors", drop_rows=5)
    with pytest.raises(ArtifactMismatchError, match="5 of .* rows of this dataset have no teacher row"):
        make_model(config, train_data, kd_method="rd", teacher=str(fewer))


def test_artifact_without_text_embeddings_or_too_small_k(sasrec_data, tmp_path):
    config, train_data = sasrec_data[0], sasrec_data[1]
    no_text = write_synthetic_artifact(train_data._dataset, tmp_path / "notext.safetensors", d=0)
    with pytest.raises(TeacherConfigError, match="needs item_text_emb"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(no_text))
    no_ed = make_model(config, train_data, kd_method="dllm2rec", teacher=str(no_text), ed_weight=0.0)
    assert type(no_ed.item_embedding) is torch.nn.Embedding  # ED off: the host's plain item table, no projector
    with pytest.raises(TeacherConfigError, match="stores only K=20"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(no_text), rd_topk=30)
    with pytest.raises(TeacherConfigError, match="kd_method='distill' is not supported"):
        make_model(config, train_data, kd_method="distill", teacher=str(no_text))


def test_confidence_modes_need_what_they_use(sasrec_data):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    with pytest.raises(TeacherConfigError, match="confidence_mode: code needs distances"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), confidence_mode="code")
    with pytest.raises(TeacherConfigError, match="paper_target needs train.target_score"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), confidence_mode="paper_target")


# ----------------------------------------------------------------------------------------------------------------------
# Teacher data stays out of the module tree
# ----------------------------------------------------------------------------------------------------------------------


def test_teacher_data_not_in_state_dict_nor_optimizer(sasrec_data):
    from recbole_llmkd.registry import get_trainer

    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact))
    plain = make_model(config, train_data, kd_method="none", teacher=None)
    # The ID table b moves inside the ED item table; the projector is the only new parameter.
    assert set(plain.state_dict()) - set(model.state_dict()) == {"item_embedding.weight"}
    extra_keys = set(model.state_dict()) - set(plain.state_dict())
    assert extra_keys == {
        "item_embedding.id_embedding.weight", "item_embedding.ed_projector.weight", "item_embedding.ed_projector.bias"
    }
    assert "item_embedding.item_text_emb" in dict(model.named_buffers())  # moves with .to(device) ...
    assert not any("teacher" in key or "text" in key for key in model.state_dict())  # ... but is never saved
    n_rows = len(train_data._dataset.inter_feat)
    for tensor in list(model.state_dict().values()) + list(model.parameters()):
        assert tensor.shape[0] != n_rows  # nothing per-example
    assert "teacher" not in dict(model.named_modules()) and model.teacher is not None
    trainer = get_trainer(config["MODEL_TYPE"], "KDSASRec")(config, model)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters()}
    assert id(model.item_embedding.item_text_emb) not in optimised


# ----------------------------------------------------------------------------------------------------------------------
# Consistency weight w^o: the student's current top-K
# ----------------------------------------------------------------------------------------------------------------------


def test_fast_topk_membership_equals_consistency_weights_with_ties():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randint(0, 4, (64, 30), generator=generator).float()  # many ties
    teacher_topk = torch.randint(0, 30, (64, 6), generator=generator)  # includes padding 0
    for k in (1, 3, 10):
        assert torch.equal(student_topk_membership(teacher_topk, logits, k), consistency_weights(teacher_topk, logits, k))
    logits = torch.randn(64, 30, generator=generator)  # no ties
    assert torch.equal(student_topk_membership(teacher_topk, logits, 5), consistency_weights(teacher_topk, logits, 5))


def test_consistency_weight_uses_the_students_current_topk(sasrec_data):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact))
    batch = first_batch(model, train_data)
    model.eval()
    item_seq, item_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    teacher_topk, teacher_scores = batch[TEACHER_TOPK_FIELD], batch[TEACHER_SCORE_FIELD]

    def weights_now():
        with torch.no_grad():
            logits = model.forward(item_seq, item_len) @ model.item_embedding.weight.T  # [B, n_items]
        return logits, model.rd_weights(logits, teacher_topk, teacher_scores, batch)

    logits, before = weights_now()
    student_top = logits[:, 1:].topk(model.rd_topk, dim=1).indices + 1  # [B, K]
    expected = (teacher_topk[:, :, None] == student_top[:, None, :]).any(-1).float()  # [B, K]
    assert torch.equal(before["w_o"], expected)
    # Make the student rank the teacher's candidates of row 0 first: w^o of row 0 becomes all ones.
    with torch.no_grad():
        user_state = model.forward(item_seq[:1], item_len[:1])[0]  # [H]
        model.item_embedding.weight[teacher_topk[0]] = 50.0 * user_state / user_state.norm()
    _, after = weights_now()
    assert torch.equal(after["w_o"][0], torch.ones(model.rd_topk))
    assert not torch.equal(after["w_o"][0], before["w_o"][0])
    # The combined weights follow: row-normalised, and rows with more overlaps weigh the candidates differently.
    torch.testing.assert_close(after["w"].sum(dim=1), torch.ones(len(teacher_topk)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after["w"][0], before["w"][0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------------


def _gradients(model, batch):
    model.train()
    model.zero_grad()
    torch.manual_seed(7)  # same dropout and same sampled negative
    losses = model.calculate_loss(batch)
    sum(losses).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, losses


def test_kd_weight_changes_gradients_and_ed_trains_the_projector(sasrec_data):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    with_kd = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), rd_weight=0.8)
    no_kd = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), rd_weight=0.0)
    assert torch.equal(with_kd.item_embedding.weight, no_kd.item_embedding.weight)  # same initial weights
    batch = first_batch(with_kd, train_data)
    grads_kd, losses_kd = _gradients(with_kd, batch)
    grads_plain, losses_plain = _gradients(no_kd, batch)
    torch.testing.assert_close(losses_kd[0], losses_plain[0], rtol=1e-5, atol=1e-6)  # same base loss (two models)
    assert float(losses_kd[1].detach()) > 0 and float(losses_plain[1].detach()) == 0.0
    id_table = "item_embedding.id_embedding.weight"  # b inside the ED item table
    assert not torch.allclose(grads_kd[id_table], grads_plain[id_table], rtol=1e-5, atol=1e-6)
    assert grads_kd["item_embedding.ed_projector.weight"].abs().sum() > 0  # ED is trained through the input embeddings
    assert set(with_kd.kd_terms) >= {"base", "rd", "rd_pos", "rd_neg", "wc_entropy", "overlap", "ed_ratio"}


@pytest.mark.parametrize("kd_method, kd_loss_name", [("dllm2rec", "rd"), ("rd", "rd_tw")])
def test_logit_weight_adds_logit_kd_beside_the_ranking_loss(sasrec_data, kd_method, kd_loss_name):
    from recbole_llmkd.distill import ranking
    from recbole_llmkd.model.distiller import TEACHER_SCORE_FIELD, TEACHER_TOPK_FIELD

    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    both = make_model(config, train_data, kd_method=kd_method, teacher=str(artifact), logit_weight=0.3)
    ranking_only = make_model(config, train_data, kd_method=kd_method, teacher=str(artifact))
    assert both.loss_names() == ("base", kd_loss_name, "logit_aux")
    assert ranking_only.loss_names() == ("base", kd_loss_name)
    assert both.kd_term_weights()["logit_aux"] == 0.3  # guarded like any KD term (NaN / stuck at 0 stop the run)
    both.eval(), ranking_only.eval()  # no dropout: full_sort_predict below gives calculate_loss's logits
    batch = first_batch(both, train_data)
    torch.manual_seed(1)  # the same negatives in both models (dllm2rec samples one per example)
    losses = both.calculate_loss(batch)
    torch.manual_seed(1)
    reference = ranking_only.calculate_loss(batch)
    assert len(losses) == 3
    for part, expected in zip(losses[:2], reference):  # the same initial weights: base and ranking terms unchanged
        torch.testing.assert_close(part, expected, rtol=1e-5, atol=1e-6)
    logits = both.full_sort_predict(batch)  # [B, n_items]
    expected_logit = ranking.logit_kd_loss(logits, batch[TEACHER_TOPK_FIELD], batch[TEACHER_SCORE_FIELD])
    torch.testing.assert_close(losses[2], 0.3 * expected_logit, rtol=1e-5, atol=1e-6)
    assert losses[2].item() > 0 and both.kd_terms["logit_aux"] == pytest.approx(expected_logit.item(), rel=1e-5)


@pytest.mark.parametrize("kd_method, reason", [("logit", "is that loss already"), ("none", "has no teacher")])
def test_logit_weight_needs_a_ranking_kd_method(sasrec_data, kd_method, reason):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    with pytest.raises(TeacherConfigError, match=f"logit_weight=0.5 adds logit KD .*{reason}"):
        make_model(config, train_data, kd_method=kd_method, teacher=str(artifact), logit_weight=0.5)


def test_negatives_avoid_history_and_target(sasrec_data):
    config, train_data = sasrec_data[0], sasrec_data[1]
    model = make_model(config, train_data, kd_method="none")
    batch = next(iter(train_data))
    item_seq, pos_items = batch[model.ITEM_SEQ], batch[model.POS_ITEM_ID]
    negatives = model.sample_negatives(item_seq, pos_items)
    assert negatives.shape == pos_items.shape
    assert bool(((negatives >= 1) & (negatives < model.n_items)).all())
    assert not bool((negatives[:, None] == item_seq).any()) and not bool((negatives == pos_items).any())


def test_training_without_kd_trainer_fields_is_a_clear_error(sasrec_data):
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    model = make_model(config, train_data, kd_method="logit", teacher=str(artifact))
    from recbole.data.interaction import Interaction

    batch = next(iter(train_data))
    stripped = Interaction({k: v for k, v in batch.interaction.items() if not k.startswith("teacher_")})
    with pytest.raises(KeyError, match="must be trained with recbole_llmkd.trainer.kd_trainer.KDTrainer"):
        model.calculate_loss(stripped)


# ----------------------------------------------------------------------------------------------------------------------
# Fold step
# ----------------------------------------------------------------------------------------------------------------------


def _eval_batch(test_data):
    return next(iter(test_data))[0]


def _load_plain(path, dataset):
    from recbole_llmkd.compat import load_checkpoint
    from recbole_llmkd.registry import get_model

    checkpoint = load_checkpoint(path)
    model_class = get_model(checkpoint["config"]["model"])
    model = model_class(checkpoint["config"], dataset)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


@pytest.mark.parametrize("ed_apply_to, ed_scale",
                         [("input_and_output", "fixed"), ("input", "fixed"), ("input_and_output", "learned"),
                          ("input", "learned")])
def test_fold_gives_identical_scores_with_and_without_the_teacher_file(sasrec_data, tmp_path, ed_apply_to, ed_scale):
    config, train_data, test_data = sasrec_data[0], sasrec_data[1], sasrec_data[3]
    artifact = write_synthetic_artifact(train_data._dataset, tmp_path / "t.safetensors", seed=5)
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_apply_to=ed_apply_to,
                       ed_weight=0.5, ed_scale=ed_scale)
    with torch.no_grad():  # a trained-looking projector (and gate), not the init
        model.item_embedding.ed_projector.bias.normal_()
        if ed_scale == "learned":
            model.item_embedding.ed_gate.fill_(0.7)
    model.eval()
    batch = _eval_batch(test_data)
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        before_pred = model.predict(batch)
        model.fold_teacher()
        folded = model.full_sort_predict(batch)
    assert torch.allclose(folded, before, atol=1e-5)
    assert torch.allclose(model.predict(batch), before_pred, atol=1e-5)
    assert not any("ed_projector" in name for name, _ in model.named_parameters())
    assert not any("item_text_emb" in name for name, _ in model.named_buffers())

    saved = save_folded(model, tmp_path / "folded.pth", config)
    os.remove(artifact)  # served models never see the teacher file
    reloaded, checkpoint = _load_plain(saved["path"], train_data._dataset)
    if ed_apply_to == "input_and_output":
        assert saved["model"] == "SASRec" and type(reloaded).__name__ == "SASRec"
        assert type(checkpoint["config"]).__module__.startswith("recbole.")  # plain RecBole checkpoint
    else:  # input items use b + ed·g(z), scoring uses b: RecBole's tied SASRec cannot hold that
        assert saved["model"] == "KDSASRec" and checkpoint["config"]["ed_folded"] is True
        assert checkpoint["config"]["teacher"] is None
        with pytest.raises(TeacherConfigError, match="not a plain RecBole model"):
            save_folded(model, tmp_path / "plain.pth", config, plain=True)
    with torch.no_grad():
        assert torch.allclose(reloaded.full_sort_predict(batch), before, atol=1e-5)


def test_ed_replace_mode_and_mlp_projector(sasrec_data, tmp_path):
    config, train_data, test_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[3], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_mode="replace",
                       ed_projector="mlp")
    ed_table = model.item_embedding
    assert isinstance(ed_table.ed_projector, torch.nn.Sequential)
    model.eval()
    item_seq = torch.tensor([[3, 5, 0]])
    with torch.no_grad():
        embedded = ed_table(item_seq)  # [1, 3, H]
        projected = ed_table.ed_projector(ed_table.item_text_emb[item_seq])  # [1, 3, H]
    # e_i = g(z_i); the MLP on the whole table, then indexed, vs on the indexed rows: BLAS picks kernels by shape
    torch.testing.assert_close(embedded[0, :2], projected[0, :2], rtol=1e-5, atol=1e-6)
    assert torch.equal(embedded[0, 2], model.item_embedding.weight[0])  # [PAD] keeps its ID row, no text
    batch = _eval_batch(test_data)
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        model.fold_teacher()
        assert torch.allclose(model.full_sort_predict(batch), before, atol=1e-5)


@torch.no_grad()
def _assert_folding_keeps_scores(model, test_data):
    """``fold_teacher`` leaves the full-ranking scores of an eval batch as they were (float noise aside)."""
    batch = _eval_batch(test_data)
    model.eval()
    before = model.full_sort_predict(batch)
    model.fold_teacher()
    torch.testing.assert_close(model.full_sort_predict(batch), before, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def _offset_ratio(ed, ed_weight):
    """mean ‖ed_weight·g(z_i)‖ / mean ‖b_i‖ over the rows with text of an ``EDItemEmbedding``."""
    text_rows = ed.has_text.squeeze(-1).bool()
    offset = ed_weight * ed.projected_table()[text_rows]  # [n_text, H]
    return offset.norm(dim=-1).mean() / ed.weight[text_rows].norm(dim=-1).mean()


def test_ed_scale_id_norm_sizes_the_offset_by_the_id_table(sasrec_data):
    """ed_scale: id_norm -> mean ‖ed_weight·g(z_i)‖ = ed_weight · mean ‖b_i‖ over the text rows, from the start;
    fixed leaves g(z) as the projector makes it. Folding keeps the predictions either way."""
    config, train_data, test_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[3], sasrec_data[4]
    scaled = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_scale="id_norm",
                        ed_weight=0.2)
    fixed = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_weight=0.2)
    ratio, fixed_ratio = _offset_ratio(scaled.item_embedding, 0.2), _offset_ratio(fixed.item_embedding, 0.2)
    assert float(ratio) == pytest.approx(0.2, abs=1e-5)
    assert abs(float(fixed_ratio) - 0.2) > 0.01  # the official scaling is not calibrated to the ID table
    with pytest.raises(TeacherConfigError, match="ed_scale"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_scale="huge")
    _assert_folding_keeps_scores(scaled, test_data)


def test_ed_scale_learned_starts_small_learns_and_folds_away(sasrec_data):
    """ed_scale: learned -> the offset starts at ed_weight · ed_scale_init × the ID rows' mean norm; its scalar
    gate is a parameter the loss trains; folding bakes it in (same predictions) and leaves no gate behind."""
    config, train_data, test_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[3], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_scale="learned",
                       ed_scale_init=0.05, ed_weight=0.2)
    ed = model.item_embedding
    assert float(_offset_ratio(ed, 0.2)) == pytest.approx(0.2 * 0.05, rel=1e-4)
    assert float(ed.ed_gate.detach()) == pytest.approx(0.05)
    gradients, losses = _gradients(model, first_batch(model, train_data))
    assert all(torch.isfinite(loss) for loss in losses)
    gate_grad = gradients["item_embedding.ed_gate"]
    assert torch.isfinite(gate_grad) and float(gate_grad.abs()) > 0
    assert model.kd_terms["ed_ratio"] > 0
    with pytest.raises(TeacherConfigError, match="ed_scale_init"):
        make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_scale="learned",
                   ed_scale_init=0.0)
    _assert_folding_keeps_scores(model, test_data)
    assert not any("ed_gate" in key for key in model.state_dict())


# ----------------------------------------------------------------------------------------------------------------------
# ED as the item table: the students run RecBole's own forward and scoring
# ----------------------------------------------------------------------------------------------------------------------


def test_kd_students_define_no_forward_nor_scoring():
    from recbole_llmkd.model.distiller import Distiller
    from recbole_llmkd.registry import get_model

    for klass in [Distiller] + [get_model(name) for name in KD_MODELS]:
        assert "forward" not in vars(klass), f"{klass.__name__} copies its RecBole model's forward"
        assert "full_sort_predict" not in vars(klass), f"{klass.__name__} copies its RecBole model's full_sort_predict"
    for name in KD_MODELS:
        student = get_model(name)
        assert student.forward is student.recbole_parent().forward


@pytest.mark.parametrize("model_name", KD_MODELS)
def test_student_without_ed_scores_exactly_as_its_recbole_model(model_name, tmp_path):
    config, train_data, _, test_data = build_split(model_name, tmp_path)
    student = make_model(config, train_data, kd_method="none").eval()
    assert type(student.item_embedding) is torch.nn.Embedding
    plain = student.recbole_parent()(config, train_data._dataset).eval()
    plain.load_state_dict(student.state_dict())
    batch = _eval_batch(test_data)
    with torch.no_grad():
        assert torch.equal(student.full_sort_predict(batch), plain.full_sort_predict(batch))
        assert torch.equal(student.predict(batch), plain.predict(batch))


def _tiny_ed_table(apply_to="input", mode="offset"):
    """4 items + a mask token (BERT4Rec's layout): b [5, 3], z [4, 2], a linear g set by hand."""
    from recbole_llmkd.model.ed_item_embedding import EDItemEmbedding

    ids = torch.nn.Embedding(5, 3, padding_idx=0)
    with torch.no_grad():
        ids.weight.copy_(torch.arange(15.0).view(5, 3))
    text = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])  # [n_items, d], row 0 = [PAD]
    table = EDItemEmbedding(ids, 4, text, {}, ed_weight=0.5, projector="linear", mode=mode, scale="fixed",
                            apply_to=apply_to)
    with torch.no_grad():
        table.ed_projector.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # g(z) = Wz + c
        table.ed_projector.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    return table


def test_ed_item_table_by_hand():
    table = _tiny_ed_table().eval()
    b = torch.arange(15.0).view(5, 3)
    g = {1: torch.tensor([1.1, 2.2, 3.3]), 2: torch.tensor([3.1, -0.8, 2.3]), 3: torch.tensor([0.6, 0.7, 1.3])}
    with torch.no_grad():
        embedded = table(torch.tensor([[1, 2, 3, 4, 0]]))  # [1, 5, 3]: items 1-3, the mask token, [PAD]
    expected = torch.stack([b[1] + 0.5 * g[1], b[2] + 0.5 * g[2], b[3] + 0.5 * g[3], b[4], b[0]])  # no text: b only
    torch.testing.assert_close(embedded[0], expected)
    assert table.weight is table.id_embedding.weight  # ed_apply_to input: scoring uses b
    both = _tiny_ed_table(apply_to="input_and_output")
    with torch.no_grad():
        torch.testing.assert_close(both.weight, expected[[4, 0, 1, 2, 3]])  # every row (mask row included) enriched
    replace = _tiny_ed_table(mode="replace").eval()
    with torch.no_grad():
        torch.testing.assert_close(replace(torch.tensor([2, 4])), torch.stack([g[2], b[4]]))
    table.train()  # a training forward reports ‖offset‖ / ‖ID rows‖ over the real items
    table.terms.clear()
    table(torch.tensor([[1, 2, 0]]))
    ratio = (0.5 * torch.stack([g[1], g[2]])).norm() / b[1:3].norm()
    torch.testing.assert_close(table.terms["ed_ratio"], ratio)


def test_any_recbole_model_distils_by_the_mixin_alone(sasrec_data):
    """NARM, with nothing of its own but ``__init__``: RecBole's forward and scoring run on the ED item table."""
    from recbole.model.sequential_recommender.narm import NARM

    from recbole_llmkd.model.distiller import Distiller

    class KDNARM(Distiller, NARM):
        def __init__(self, config, dataset, teacher=None, item_text_vectors=None):
            NARM.__init__(self, config, dataset)
            self.init_distiller(config, dataset, teacher, item_text_vectors)

    train_data, test_data, artifact = sasrec_data[1], sasrec_data[3], sasrec_data[4]
    config_dict = {**KD_TEST_CONFIG, "kd_method": "dllm2rec", "teacher": str(artifact)}
    config = Config(KDNARM, "ml-100k", config_dict=config_dict)
    model = make_model(config, train_data)
    _, losses = _gradients(model, first_batch(model, train_data))
    assert len(losses) == 2 and all(torch.isfinite(loss) for loss in losses) and model.kd_terms["ed_ratio"] > 0
    assert model.item_embedding.ed_projector.weight.grad.abs().sum() > 0  # NARM's forward embeds through ED

    plain = NARM(config, train_data._dataset).eval()
    plain.load_state_dict({key.replace("id_embedding.", ""): value for key, value in model.state_dict().items()
                           if ".ed_projector." not in key})
    model.eval()
    batch = _eval_batch(test_data)
    with torch.no_grad():
        with_ed = model.full_sort_predict(batch)
        for parameter in model.item_embedding.ed_projector.parameters():
            parameter.zero_()  # offset 0: the student is NARM with its ID table
        assert torch.equal(model.full_sort_predict(batch), plain.full_sort_predict(batch))
        assert torch.equal(model.predict(batch), plain.predict(batch))
    assert not torch.allclose(with_ed, plain.full_sort_predict(batch))


def test_kd_checkpoint_with_pre_module_ed_names_still_loads(sasrec_data):
    """A KD state dict in the names ED had before ``EDItemEmbedding`` (``item_embedding.weight``, ``ed_projector.*``)
    loads strictly into today's student and scores the same."""
    config, train_data, test_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[3], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_weight=0.5)
    with torch.no_grad():
        model.item_embedding.ed_projector.bias.normal_()
    model.eval()
    old_names = {}
    for key, value in model.state_dict().items():
        key = key.replace("item_embedding.id_embedding.weight", "item_embedding.weight")
        old_names[key.replace("item_embedding.ed_projector.", "ed_projector.")] = value
    assert "ed_projector.weight" in old_names and "item_embedding.weight" in old_names
    fresh = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_weight=0.5)
    fresh.load_state_dict(old_names)  # strict
    fresh.eval()
    batch = _eval_batch(test_data)
    with torch.no_grad():
        assert torch.equal(fresh.full_sort_predict(batch), model.full_sort_predict(batch))


def test_checkpoint_saved_before_a_kd_key_existed_still_loads(sasrec_data, tmp_path):
    """A checkpoint whose config lacks a key the property files define today (``logit_weight``, added later) loads
    with that key's default, which keeps the behaviour it was trained with, and scores as saved."""
    from recbole_llmkd.run import load

    config, train_data, test_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[3], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact)).eval()
    old_config = copy.deepcopy(config)
    old_config["kd_method"], old_config["teacher"] = "dllm2rec", str(artifact)  # make_model's overrides
    del old_config.final_config_dict["logit_weight"]  # as a config saved before the key existed
    assert "logit_weight" not in old_config
    path = tmp_path / "old.pth"
    torch.save({"config": old_config, "state_dict": model.state_dict(), "other_parameter": None}, path)

    loaded = load(path, dataset=train_data._dataset)
    assert loaded.config["logit_weight"] == 0.0 and loaded.model.loss_names() == ("base", "rd")
    batch = _eval_batch(test_data)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.full_sort_predict(batch), model.full_sort_predict(batch))


def test_folded_plain_student_reloads_its_own_state_dict(sasrec_data):
    """After folding into a plain nn.Embedding, the old-name pre-hook leaves ``item_embedding.weight`` alone."""
    config, train_data, artifact = sasrec_data[0], sasrec_data[1], sasrec_data[4]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact), ed_weight=0.5,
                       ed_apply_to="input_and_output")
    model.fold_teacher()
    assert type(model.item_embedding) is torch.nn.Embedding
    model.load_state_dict(model.state_dict())  # strict
