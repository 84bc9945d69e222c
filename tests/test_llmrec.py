"""LLMRec, the LLM teacher (issue 3): prompt layout, training, LoRA, trained-only checkpoints, predict dedup.

Everything runs a tiny random Llama decoder on CPU over a small slice of ml-100k (25 users); one end-to-end run
uses the whole ml-100k (one example per user), and one test (marked ``gguf``) runs the embedded SmolLM2.
"""
import csv
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SEQ_CONFIG

ML100K_DIR = Path(__import__("recbole").__file__).parent / "dataset_example" / "ml-100k"
SLICE_NAME = "ml-slice"
METHODS_INSTRUCTION = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n### Instruction:\nGiven the user\u2019s purchase history, "
    "predict next possible item to be purchased.\n\n### Input:\n"
)

# A tiny LLMRec: 2-layer random decoder (hidden 32), short prompt texts, rank-4 LoRA, 16-d item table.
TINY_LLMREC = {
    **{k: TINY_SEQ_CONFIG[k] for k in ("MAX_ITEM_LIST_LENGTH", "gpu_id", "show_progress", "metrics", "topk", "valid_metric", "seed")},
    "epochs": 1,
    "train_batch_size": 256,
    "eval_batch_size": 256,
    "llm_backbone": "tiny",
    "llm_tiny_config": {"num_hidden_layers": 2},
    "llm_instruction": "History:",
    "llm_response": "\nNext:",
    "item_dim": 16,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "warmup_steps": 1,
    "learning_rate": 0.01,
}


def make_ml_slice(root, n_users=25, users_from=0, drop_titles=3, name=SLICE_NAME) -> Path:
    """Atomic files of the first ``n_users`` ml-100k users (by raw id, from ``users_from``) under ``root/name``.

    The ``.item`` file holds the slice's items, the first ``drop_titles`` of them without a title.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    keep_users = {str(u) for u in range(users_from + 1, users_from + n_users + 1)}
    items = []
    with open(ML100K_DIR / "ml-100k.inter", encoding="utf-8") as src, open(folder / f"{name}.inter", "w", encoding="utf-8") as dst:
        dst.write(src.readline())
        for line in src:
            user, item = line.split("\t", 2)[:2]
            if user in keep_users:
                dst.write(line)
                items.append(item)
    kept_items = sorted(set(items), key=int)
    dropped = set(kept_items[:drop_titles])
    with open(ML100K_DIR / "ml-100k.item", encoding="utf-8") as src, open(folder / f"{name}.item", "w", encoding="utf-8") as dst:
        reader = csv.reader(src, delimiter="\t")
        dst.write("item_id:token\tmovie_title:token_seq\n")
        next(reader)
        for row in reader:
            if row[0] in kept_items:
                dst.write(f"{row[0]}\t{'' if row[0] in dropped else row[1]}\n")
    return folder


def slice_config(data_root, **overrides) -> dict:
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    return {**TINY_LLMREC, "data_path": str(data_root), "load_col": load_col, **overrides}


def build(data_root, model="LLMRec", **overrides):
    """(config, train_data, valid_data, test_data) for the slice."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_llmkd.config import Config

    config = Config(model, SLICE_NAME, config_dict=slice_config(data_root, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return (config, *data_preparation(config, dataset))


def first_batch(train_data, n=64):
    return train_data._dataset.inter_feat[:n]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_ml_slice(root)
    return root


@pytest.fixture(scope="module")
def slice_data(data_root):
    return build(data_root)


def new_model(config, train_data, **overrides):
    from recbole_llmkd.run import build_model

    for key, value in overrides.items():
        config[key] = value
    torch.manual_seed(0)
    return build_model(config, train_data._dataset)


# ----- configuration and prompt -------------------------------------------------------------------------


def test_defaults_follow_methods():
    from recbole_llmkd.config import Config

    config = Config("LLMRec", "ml-100k", config_dict={"gpu_id": ""})
    assert config["llm_instruction"] == METHODS_INSTRUCTION
    assert config["llm_response"] == "\n### Response:\n"
    assert config["llm_backbone"] == "smollm2"
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (16, 16, 0.05)
    assert list(config["lora_target_modules"]) == ["gate_proj", "up_proj", "down_proj"]
    assert config["head"] == "dot" and config["item_table"] == "trainable"
    assert config["MAX_ITEM_LIST_LENGTH"] == 30
    assert config["train_neg_sample_args"]["distribution"] == "none" and config["loss_type"] == "CE"
    assert config["clip_grad_norm"] == {"max_norm": 1.0, "norm_type": 2}


def test_left_pad_moves_items_to_the_end():
    from recbole_llmkd.model.llmrec import LLMRec

    item_seq = torch.tensor([[5, 6, 7, 0, 0], [1, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    item_seq_len = torch.tensor([3, 1, 5])
    expected = torch.tensor([[0, 0, 5, 6, 7], [0, 0, 0, 0, 1], [1, 2, 3, 4, 5]])
    assert torch.equal(LLMRec.left_pad(item_seq, item_seq_len), expected)


def test_prompt_layout_and_mask(slice_data):
    config, train_data, _, _ = slice_data
    model = new_model(config, train_data)
    model.eval()
    batch = first_batch(train_data, 8)
    item_seq, item_seq_len = batch["item_id_list"], batch["item_length"]
    inputs_embeds, attention_mask = model.encode(item_seq, item_seq_len)
    n_instruction, n_response = model.instruction_ids.numel(), model.response_ids.numel()
    L = item_seq.shape[1]
    assert n_instruction == len("History:") and n_response == len("\nNext:")  # byte tokenizer, no BOS
    assert inputs_embeds.shape == (8, n_instruction + L + n_response, model.d_llm)
    left = model.left_pad(item_seq, item_seq_len)
    expected_mask = torch.cat([torch.ones(8, n_instruction), (left > 0).float(), torch.ones(8, n_response)], dim=1)
    assert torch.equal(attention_mask.float(), expected_mask)
    embed_tokens = model.llm.get_input_embeddings()
    torch.testing.assert_close(inputs_embeds[0, :n_instruction], embed_tokens(model.instruction_ids))
    torch.testing.assert_close(inputs_embeds[0, -n_response:], embed_tokens(model.response_ids))
    # the most recent history item sits in the last item slot, right before the response
    last_item = item_seq[3, item_seq_len[3] - 1]
    torch.testing.assert_close(
        inputs_embeds[3, n_instruction + L - 1], model.input_proj(model.item_embedding.weight[last_item])
    )


def test_item_titles_in_prompt(slice_data):
    config, train_data, _, _ = slice_data
    model = new_model(config, train_data, use_item_titles=True, llm_title_max_tokens=6)
    model.eval()
    batch = first_batch(train_data, 4)
    inputs_embeds, attention_mask = model.encode(batch["item_id_list"], batch["item_length"])
    L, T = batch["item_id_list"].shape[1], 6
    assert inputs_embeds.shape[1] == model.instruction_ids.numel() + L * (T + 1) + model.response_ids.numel()
    # every real history item contributes its soft token plus min(len(title), T) title tokens
    n_items = batch["item_length"].clamp(max=L)
    title_tokens = model.title_token_mask[model.left_pad(batch["item_id_list"], batch["item_length"])].sum(dim=(1, 2))
    n_text = model.instruction_ids.numel() + model.response_ids.numel()
    assert torch.equal(attention_mask.sum(dim=1), n_text + n_items + title_tokens)
    assert not model.title_token_mask[0].any()  # PAD has no title
    assert model.full_sort_predict(batch).shape == (4, model.n_items)


def test_cached_title_view_keeps_the_id_prompt_and_adds_each_titles_base_state(slice_data):
    config, train_data, _, _ = slice_data
    try:
        model = new_model(config, train_data, use_item_titles=True, llm_title_max_tokens=6, llm_title_view="cached")
    finally:  # new_model writes into the module's config
        config["use_item_titles"], config["llm_title_view"] = False, "tokens"
    model.eval()
    batch = first_batch(train_data, 4)
    L = batch["item_id_list"].shape[1]
    inputs_embeds, _ = model.encode(batch["item_id_list"], batch["item_length"])
    # one position per item, as without titles: the cost does not grow with the title length
    assert inputs_embeds.shape[1] == model.instruction_ids.numel() + L + model.response_ids.numel()
    assert not hasattr(model, "title_token_ids")
    # t_i: the mean final state of the title alone, unpadded, through the base decoder (LoRA off)
    titled = [i for i in range(1, model.n_items) if model.title_states[i].abs().sum() > 0]
    assert len(titled) == model.n_items - 1  # items without a title read 'item <token>' (item_text's fallback)
    assert not model.title_states[0].any()  # PAD
    from recbole_llmkd.data.item_text import item_titles_for_dataset

    title = item_titles_for_dataset(train_data._dataset, config)[titled[0]]
    ids = model.tokenizer(title, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :6]  # [1, T']
    with torch.no_grad(), model.llm.disable_adapter():
        expected = model.llm(input_ids=ids).last_hidden_state.mean(dim=1)[0]  # [d_llm]
    torch.testing.assert_close(model.title_states[titled[0]], expected, rtol=1e-4, atol=1e-5)
    # the slot is input_proj(E[i]) + title_proj(t_i); title_proj starts at 0 (the ID slot) and is trained and saved
    assert not model.title_proj.weight.any()
    with torch.no_grad():
        model.title_proj.weight.copy_(torch.eye(model.d_llm))
        inputs_embeds, _ = model.encode(batch["item_id_list"], batch["item_length"])
    last_item = batch["item_id_list"][0, batch["item_length"][0] - 1]
    torch.testing.assert_close(
        inputs_embeds[0, model.instruction_ids.numel() + L - 1],
        model.input_proj(model.item_embedding.weight[last_item]) + model.title_states[last_item],
        rtol=1e-5, atol=1e-5,
    )
    assert {"title_proj.weight", "title_proj.bias"} <= set(model.state_dict()) and "title_states" not in model.state_dict()
    model.train()
    model.calculate_loss(batch).backward()
    assert model.title_proj.weight.grad.abs().sum() > 0  # the title view is learned


@pytest.mark.text_encoder
def test_text_encoder_item_table_is_frozen_titles_beside_a_learned_id_view(slice_data):
    from recbole_llmkd.llm.text_encoder import item_text_embeddings

    config, train_data, _, _ = slice_data
    try:
        model = new_model(config, train_data, item_table="text_encoder", item_dim=8)
    finally:  # new_model writes into the module's config
        config["item_table"], config["item_dim"] = "trainable", 64
    semantic = item_text_embeddings(train_data._dataset, "minilm")  # [n_items, 384]
    table = model.item_embedding.weight  # [n_items, 384 + 8]
    assert table.shape == (model.n_items, semantic.shape[1] + 8) and model.item_dim == semantic.shape[1] + 8
    torch.testing.assert_close(table[:, :-8], semantic, rtol=1e-5, atol=1e-6)
    assert not table[0].any()  # PAD
    model.train()
    model.calculate_loss(first_batch(train_data, 8)).backward()
    assert model.item_embedding.id_embedding.weight.grad.abs().sum() > 0  # the ID view is trained
    assert not model.item_embedding.semantic.requires_grad  # the semantic view is not
    saved = model.state_dict()  # both views are in the checkpoint: a reload restores the semantic view exactly
    assert {"item_embedding.semantic", "item_embedding.id_embedding.weight"} <= set(saved)


# ----- scoring, training, LoRA ----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["dot", "linear"])
def test_full_sort_predict_shape_and_pad(slice_data, head):
    config, train_data, _, _ = slice_data
    model = new_model(config, train_data, head=head)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(first_batch(train_data, 5))
    assert scores.shape == (5, train_data._dataset.item_num)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_training_steps_lower_loss_and_leave_base_weights(slice_data):
    from recbole_llmkd.trainer.llm_trainer import LLMTrainer

    config, train_data, _, _ = slice_data
    model = new_model(config, train_data)
    base_before = {k: v.clone() for k, v in model.llm.named_parameters() if "lora_" not in k}
    lora_before = {k: v.clone() for k, v in model.llm.named_parameters() if "lora_" in k}
    assert base_before and lora_before
    assert not any(p.requires_grad for k, p in model.llm.named_parameters() if "lora_" not in k)

    trainer = LLMTrainer(config, model)
    trainer.scheduler = trainer._build_scheduler(steps_per_epoch=20)
    batch = first_batch(train_data, 32)
    model.eval()
    with torch.no_grad():
        loss_before = model.calculate_loss(batch).item()
    model.train()
    for _ in range(10):
        trainer.optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        trainer.optimizer.step()
        trainer.scheduler.step()
    model.eval()
    with torch.no_grad():
        loss_after = model.calculate_loss(batch).item()
    assert loss_after < loss_before - 0.5, (loss_before, loss_after)

    for name, parameter in model.llm.named_parameters():
        if name in base_before:
            assert torch.equal(parameter, base_before[name]), f"base weight {name} changed"
    assert any(not torch.equal(p, lora_before[k]) for k, p in model.llm.named_parameters() if k in lora_before)


@pytest.mark.parametrize("use_item_titles", [False, True])
def test_instruction_prefix_cache_gives_the_same_outputs_and_gradients(slice_data, use_item_titles):
    """The instruction run once and broadcast (llm_prefix_cache) == the whole prompt per row: scores, loss, grads."""
    config, train_data, _, _ = slice_data
    model = new_model(config, train_data, use_item_titles=use_item_titles, llm_title_max_tokens=4,
                      llm_instruction=METHODS_INSTRUCTION)
    batch = first_batch(train_data, 6)
    results = {}
    for cached in (True, False):
        model.llm_prefix_cache = cached
        model.eval()
        with torch.no_grad():
            scores = model.full_sort_predict(batch)
        model.train()
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        results[cached] = (scores, loss.detach(), grads)
    assert model.instruction_ids.numel() > 30  # the METHODS instruction: the cache saves most of the prompt
    (scores_c, loss_c, grads_c), (scores_f, loss_f, grads_f) = results[True], results[False]
    torch.testing.assert_close(scores_c[:, 1:], scores_f[:, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_f.keys() and any("lora_" in k for k in grads_c)
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_f[name], rtol=1e-3, atol=1e-6, msg=name)


def test_optimizer_and_schedule(slice_data):
    from recbole_llmkd.trainer.llm_trainer import LLMTrainer, cosine_with_warmup

    config, train_data, _, _ = slice_data
    model = new_model(config, train_data)
    trainer = LLMTrainer(config, model)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(optimized) < len(list(model.parameters()))  # frozen base left out

    assert cosine_with_warmup(0, 10, 110) == 0.0
    assert cosine_with_warmup(5, 10, 110) == 0.5
    assert cosine_with_warmup(10, 10, 110) == 1.0
    assert abs(cosine_with_warmup(60, 10, 110) - 0.5) < 1e-12
    assert cosine_with_warmup(110, 10, 110) == 0.0

    config["learner"] = "adam"
    with pytest.raises(ValueError, match="AdamW"):
        LLMTrainer(config, model)
    config["learner"] = "adamw"


def test_last_per_user_keeps_each_users_last_prefix(slice_data):
    from recbole_llmkd.trainer.llm_trainer import LLMTrainer

    config, train_data, _, _ = slice_data
    trainer = LLMTrainer(config, new_model(config, train_data))
    config["llm_train_examples"] = "last_per_user"
    try:
        selected = trainer.select_training_examples(train_data)
    finally:
        config["llm_train_examples"] = "all_prefixes"
    full = train_data._dataset.inter_feat
    chosen = selected._dataset.inter_feat
    users = full["user_id"]
    assert len(chosen) == len(torch.unique(users)) == 25
    for row in range(len(chosen)):
        user = chosen["user_id"][row]
        user_rows = (users == user).nonzero().flatten()
        last = user_rows.max()
        assert chosen["item_id"][row] == full["item_id"][last]  # the latest target of that user
        assert torch.equal(chosen["item_id_list"][row], full["item_id_list"][last])
    assert trainer.select_training_examples(train_data) is train_data  # all_prefixes: untouched


def test_predict_runs_the_llm_once_per_unique_history(slice_data):
    config, train_data, _, _ = slice_data
    model = new_model(config, train_data)
    model.eval()
    histories = first_batch(train_data, 5)
    n_candidates = 40
    rows = torch.arange(5).repeat_interleave(n_candidates)  # 5 histories x 40 candidate items, uni999-like
    interaction = histories[rows]
    interaction.update(type(interaction)({"item_id": torch.randint(1, model.n_items, (5 * n_candidates,))}))
    with torch.no_grad():
        model.llm_forward_rows = 0
        scores = model.predict(interaction)
        assert model.llm_forward_rows == 5
        full = model.full_sort_predict(histories)  # [5, n_items]
    assert scores.shape == (5 * n_candidates,)
    torch.testing.assert_close(scores, full[rows, interaction["item_id"]], atol=1e-5, rtol=1e-5)


# ----- checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_teacher(slice_data, tmp_path_factory):
    """A tiny teacher trained one epoch (one example per user) on the slice by LLMTrainer.fit: (model, checkpoint)."""
    from recbole_llmkd.registry import get_trainer

    config, train_data, valid_data, _ = slice_data
    workdir = tmp_path_factory.mktemp("teacher")
    config["checkpoint_dir"] = str(workdir)
    config["llm_train_examples"] = "last_per_user"  # 25 examples: fast
    model = new_model(config, train_data)
    with pytest.MonkeyPatch.context() as patch:  # a module fixture runs in the repository: RecBole's log_tensorboard/
        patch.chdir(workdir)
        trainer = get_trainer(config["MODEL_TYPE"], "LLMRec")(config, model)
        trainer.fit(train_data, valid_data, saved=True)
    config["llm_train_examples"] = "all_prefixes"
    model.eval()
    return model, trainer.saved_model_file


def test_teacher_reports_the_slmrec_sampled_protocol(slice_data, tmp_path):
    """LLMTrainer (not only SLMTrainer) adds sampled_* metrics to the test result with slm_eval_sampled: test."""
    from recbole_llmkd.registry import get_trainer

    config, train_data, valid_data, test_data = slice_data
    config["checkpoint_dir"] = str(tmp_path)
    config["llm_train_examples"] = "last_per_user"
    config["slm_eval_sampled"], config["slm_eval_negatives"] = "test", 50
    try:
        model = new_model(config, train_data)
        trainer = get_trainer(config["MODEL_TYPE"], "LLMRec")(config, model)
        trainer.fit(train_data, valid_data, saved=True)
        valid_result = trainer.evaluate(valid_data, load_best_model=False)
        test_result = trainer.evaluate(test_data, load_best_model=False)
    finally:
        config["llm_train_examples"], config["slm_eval_sampled"], config["slm_eval_negatives"] = "all_prefixes", None, 999
    assert not any(key.startswith("sampled_") for key in valid_result)  # 'test' mode: validation stays full ranking
    assert {"sampled_hit@1", "sampled_hit@5", "sampled_ndcg@5", "sampled_mrr"} <= set(test_result)
    assert 0.0 <= test_result["sampled_hit@1"] <= test_result["sampled_hit@5"] <= 1.0
    assert trainer.sampled_test_result["n_rows"] == len(test_data._dataset.inter_feat)


def test_valid_smoothing_selects_the_teachers_epoch_on_the_mean_of_the_last_scores(slice_data, monkeypatch):
    """LLMTrainer (so LLMRec, BIGRec and SLMRec) honours valid_smoothing as the KD students do: with N = 2 and
    stopping_step 2 the scripted validation curve's plateau (epochs 4-5) wins over its epoch-1 spike."""
    from recbole.trainer import Trainer

    from recbole_llmkd.registry import get_trainer

    scores = [0.10, 0.30, 0.12, 0.14, 0.26, 0.27, 0.05, 0.05, 0.05, 0.05]
    script = iter(scores)

    def scripted_valid_epoch(self, valid_data, show_progress=False):
        score = next(script)
        return score, {"ndcg@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", scripted_valid_epoch)
    config, train_data, valid_data, _ = slice_data
    settings = {"valid_smoothing": 2, "epochs": len(scores), "stopping_step": 2, "llm_train_examples": "last_per_user"}
    monkeypatch.setattr(config, "final_config_dict", {**config.final_config_dict, **settings})
    trainer_class = get_trainer(config["MODEL_TYPE"], "LLMRec")
    saved_epochs = []
    monkeypatch.setattr(trainer_class, "_save_checkpoint", lambda self, epoch, verbose=True, **kw: saved_epochs.append(epoch))
    trainer = trainer_class(config, new_model(config, train_data))
    trainer.fit(train_data, valid_data, saved=True)
    assert trainer.evaluation_scores == scores[:9]  # means 0.10 0.20 0.21 0.13 0.20 0.265 0.16 0.05 0.05
    assert saved_epochs[-1] == 5
    assert trainer.best_valid_score == pytest.approx((0.26 + 0.27) / 2)
    assert trainer.best_valid_result == {"ndcg@10": 0.27}  # that epoch's own result


def test_resumed_teacher_goes_on_with_its_learning_rate_schedule(slice_data, tmp_path, monkeypatch):
    """After ``resume_checkpoint`` the warmup + cosine schedule goes on at the checkpoint's step (the whole run's
    schedule, not a new warmup over the epochs left): a 2-epoch run whose checkpoint is its epoch 0 (scripted
    validation 0.3, 0.1), resumed from it, trains its epoch 1 at the learning rates the uninterrupted run had."""
    from recbole.trainer import Trainer

    from recbole_llmkd import compat
    from recbole_llmkd.registry import get_trainer

    scores = iter([0.3, 0.1, 0.1])
    monkeypatch.setattr(Trainer, "_valid_epoch", lambda self, data, show_progress=False: (next(scores), {}))
    config, train_data, valid_data, _ = slice_data
    settings = {"epochs": 2, "llm_train_examples": "last_per_user", "train_batch_size": 8, "warmup_steps": 1,
                "checkpoint_dir": str(tmp_path)}
    monkeypatch.setattr(config, "final_config_dict", {**config.final_config_dict, **settings})
    trainer_class = get_trainer(config["MODEL_TYPE"], "LLMRec")

    def fit_recording_lrs(trainer):
        lrs = []  # the learning rate of each optimizer step (_check_nan runs once per batch, before the step)
        trainer._check_nan = lambda loss: lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.fit(train_data, valid_data, saved=True)
        return lrs

    first = trainer_class(config, new_model(config, train_data))
    first_lrs = fit_recording_lrs(first)
    steps_per_epoch = first.global_step // 2
    assert steps_per_epoch >= 2 and len(first_lrs) == 2 * steps_per_epoch
    assert compat.load_checkpoint(first.saved_model_file)["epoch"] == 0

    resumed = trainer_class(config, new_model(config, train_data))
    resumed.resume_checkpoint(first.saved_model_file)
    resumed_lrs = fit_recording_lrs(resumed)
    assert resumed_lrs == pytest.approx(first_lrs[steps_per_epoch:], rel=1e-9)
    assert resumed.global_step == 2 * steps_per_epoch
    assert resumed_lrs[0] > 0.5 * max(first_lrs)  # not a new warmup from 0

    first.sampled_valid_evaluations = 3  # the seed of the next sampled validation goes on from the count saved
    resumed.load_trainer_state(first.trainer_state())
    assert resumed.sampled_valid_evaluations == 3


def test_checkpoint_holds_only_trained_tensors(trained_teacher):
    from recbole_llmkd import compat

    model, checkpoint_file = trained_teacher
    checkpoint = compat.load_checkpoint(checkpoint_file)
    keys = set(checkpoint["state_dict"])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert keys == trainable
    assert all("lora_" in k or k.split(".")[0] in {"input_proj", "head", "item_embedding"} for k in keys)
    assert not any("embed_tokens" in k or k.endswith("q_proj.weight") for k in keys)
    identity = checkpoint["other_parameter"]["backbone_identity"]
    assert identity["spec"] == "tiny" and identity["n_layers"] == 2 and len(identity["sha256"]) == 64
    assert len(checkpoint["optimizer"]["state"]) == len(keys)  # optimizer state of trained tensors only


def test_checkpoint_round_trip_gives_same_predictions(trained_teacher, slice_data):
    from recbole_llmkd.run import load

    model, checkpoint_file = trained_teacher
    _, train_data, _, _ = slice_data
    batch = first_batch(train_data, 16)
    loaded = load(checkpoint_file, dataset=train_data._dataset)
    reloaded, config, dataset = loaded.model, loaded.config, loaded.dataset
    assert dataset is train_data._dataset and config["model"] == "LLMRec"
    assert not reloaded.training
    with torch.no_grad():
        torch.testing.assert_close(reloaded.full_sort_predict(batch), model.full_sort_predict(batch))


def test_checkpoint_of_other_backbone_weights_is_refused(trained_teacher, tmp_path):
    from recbole_llmkd import compat
    from recbole_llmkd.model.llmrec import CheckpointMismatchError
    from recbole_llmkd.run import load

    _, checkpoint_file = trained_teacher
    checkpoint = compat.load_checkpoint(checkpoint_file)
    # a different random init = a different weights file for the same spec
    checkpoint["config"]["llm_tiny_config"] = {"num_hidden_layers": 2, "seed": 1}
    other = tmp_path / "other.pth"
    torch.save(checkpoint, other)
    saved_sha = checkpoint["other_parameter"]["backbone_identity"]["sha256"]
    with pytest.raises(CheckpointMismatchError, match="a different weights file") as error:
        load(str(other))
    assert saved_sha in str(error.value) and str(error.value).count("sha256") == 2


def test_pretrained_sasrec_item_table_is_frozen(data_root, slice_data, tmp_path):
    from recbole_llmkd import compat
    from recbole_llmkd.quick_start import run_recbole_llmkd

    sasrec_config = {**slice_config(data_root), "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1}
    result = run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=sasrec_config, cmd_args={"run_dir": str(tmp_path / "sasrec")})
    sasrec_table = compat.load_checkpoint(result["checkpoint"])["state_dict"]["item_embedding.weight"]

    config, train_data, _, _ = slice_data
    model = new_model(config, train_data, item_table=result["checkpoint"])
    config["item_table"] = "trainable"
    assert torch.equal(model.item_embedding.weight, sasrec_table) and not model.item_embedding.weight.requires_grad
    assert model.item_dim == 16 and model.input_proj.in_features == 16
    assert not any(k.startswith("item_embedding") for k in model.state_dict())
    assert model.other_parameter()["item_table"]["sha256"] is not None


def test_pretrained_item_table_of_another_dataset_is_refused(data_root, tmp_path):
    from recbole_llmkd.quick_start import run_recbole_llmkd

    other_root = tmp_path / "other"
    make_ml_slice(other_root, n_users=10, users_from=100)
    sasrec_config = {**slice_config(other_root), "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1}
    result = run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=sasrec_config, cmd_args={"run_dir": str(tmp_path / "s")})
    config, train_data, _, _ = build(data_root, item_table=result["checkpoint"])
    with pytest.raises(ValueError, match="this dataset has .* item ids incl. PAD"):
        new_model(config, train_data)


# ----- end to end -----------------------------------------------------------------------------------------


def test_end_to_end_on_ml100k(tmp_path):
    from recbole_llmkd.quick_start import run_recbole_llmkd

    config = {**TINY_LLMREC, "llm_train_examples": "last_per_user", "epochs": 2, "topk": [10, 50], "eval_batch_size": 512}
    result = run_recbole_llmkd("LLMRec", "ml-100k", config_dict=config, cmd_args={"run_dir": str(tmp_path / "run")})
    test = result["test_result"]
    assert set(test) >= {"hit@10", "ndcg@10", "hit@50"}
    assert 0.0 < test["hit@50"] <= 1.0 and 0.0 < test["ndcg@50"] <= 1.0
    assert 0.0 <= test["hit@10"] <= 1.0
    assert result["params_trainable"] < result["params_total"]
    assert os.path.isfile(result["checkpoint"]) and result["checkpoint"].startswith(result["run_dir"])
    log = open(os.path.join(result["run_dir"], "run.log"), encoding="utf-8").read()
    assert "checkpoint size:" in log and "training on 943 examples (one per user)" in log


@pytest.mark.gguf
def test_smollm2_llmrec_forward(data_root):
    """The embedded SmolLM2 (2 of 30 layers) as LLMRec backbone: the METHODS prompt, one forward, one loss."""
    config, train_data, _, _ = build(
        data_root, llm_backbone="smollm2", llm_n_layers=2, llm_tiny_config=None,
        llm_instruction=METHODS_INSTRUCTION, llm_response="\n### Response:\n",
    )
    model = new_model(config, train_data)
    assert model.d_llm == 576 and model.backbone_identity["kind"] == "smollm2"
    assert model.tokenizer.decode(model.instruction_ids) == METHODS_INSTRUCTION
    batch = first_batch(train_data, 4)
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        loss = model.calculate_loss(batch)
        model.llm_prefix_cache = False
        scores_uncached = model.full_sort_predict(batch)
    assert scores.shape == (4, model.n_items) and torch.isfinite(scores[:, 1:]).all()
    assert torch.isfinite(loss) and loss.item() > 0
    torch.testing.assert_close(scores[:, 1:], scores_uncached[:, 1:], rtol=1e-3, atol=1e-4)
