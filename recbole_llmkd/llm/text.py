"""Text embeddings and prompt tokenisation with an LLM backbone.

BIGRec recipe for item text embeddings (docs/METHODS.md §1.3, ``item_text_emb``): tokenize with left padding, run the
decoder, take the last layer at the last position:

    z = hidden_states[-1][:, -1, :] == last_hidden_state[:, -1, :]      # [B, d_llm]

With left padding the last position is the last real token of every text, so a text's vector does not depend
on which other texts share its batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _model_device(model: nn.Module) -> torch.device:
    first_parameter = next(model.parameters(), None)
    return first_parameter.device if first_parameter is not None else torch.device("cpu")


def _same_device(left: torch.device, right: torch.device) -> bool:
    if left.type != right.type:
        return False
    if left.type == "cpu" or left.index is None or right.index is None:
        return True
    return left.index == right.index


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single string")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] is a {type(text).__name__}, expected str")
    return texts


@torch.no_grad()
def encode_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 64,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> torch.Tensor:
    """Embed each text as the backbone's last-layer state of its last token (BIGRec recipe).

    ``z_t = last_hidden_state[t, -1, :]`` with left padding and the tokenizer's default special tokens, texts
    truncated to ``max_length`` tokens, under ``torch.no_grad()`` in eval mode (the previous train/eval mode is
    restored afterwards). The model must already be on ``device``.

    Returns:
        ``[len(texts), hidden_size]`` float32 tensor on the CPU.
    """
    from tqdm.auto import tqdm

    texts = _check_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    device = torch.device(device)
    model_device = _model_device(model)
    if not _same_device(model_device, device):
        raise ValueError(f"the model is on {model_device} but device={device}; move the model first")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; expected one (load_backbone sets it)")
    hidden_size = model.config.hidden_size
    if not texts:
        return torch.zeros(0, hidden_size, dtype=torch.float32)

    was_training = model.training
    model.eval()
    text_embeddings = []
    batch_starts = range(0, len(texts), batch_size)
    for start in tqdm(batch_starts, desc="encode_texts", unit="batch", disable=not show_progress):
        batch_texts = texts[start : start + batch_size]
        encoded = tokenizer(
            batch_texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            padding_side="left",
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"].to(device)  # [b, T]
        attention_mask = encoded["attention_mask"].to(device)  # [b, T]
        empty_rows = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty_rows:
            raise ValueError(f"texts at indices {[start + row for row in empty_rows]} tokenize to no tokens")
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        last_token_state = outputs.last_hidden_state[:, -1, :]  # [b, hidden]
        text_embeddings.append(last_token_state.float().cpu())
    model.train(was_training)
    return torch.cat(text_embeddings, dim=0)  # [N, hidden]


def tokenize_prompt(tokenizer, text: str) -> torch.Tensor:
    """Token ids of a prompt fragment, ``add_special_tokens=False`` (no BOS/EOS): LongTensor ``[T]``."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    input_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]  # [T]
    if input_ids.numel() == 0:
        raise ValueError(f"prompt text {text!r} tokenizes to no tokens; expected a non-empty prompt")
    return input_ids.long()
