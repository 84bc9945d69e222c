"""What a valid teacher artifact is: the format's constants, its error class and the checks that enforce them.

The writer checks what it is given and the reader checks what it loads with the same functions, so a file the
writer accepts is a file the reader accepts. Each check names where the problem is (``where``: file, chunk or
split) and what was expected.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch

from recbole_llmkd.data.keys import PAD_TOKEN, check_key_history
from recbole_llmkd.errors import FIRST_FEW, RecboleLLMKDError

FORMAT_VERSION = 1
# Key of the one JSON string in the safetensors header metadata that holds all artifact metadata.
METADATA_KEY = "recbole_llmkd"
SPLITS = ("train", "valid", "test")
SCORE_KINDS = ("logit", "neg_l2")
REQUIRED_ROW_TENSORS = ("key", "topk_ids", "topk_scores")
OPTIONAL_ROW_TENSORS = ("confidence", "target_score", "user_state")
GLOBAL_TENSORS = ("item_text_emb",)
# Metadata keys the caller provides to ArtifactWriter; the writer adds format_version, created, splits and has.
USER_METADATA_REQUIRED = ("dataset", "item_tokens", "key_history", "score_kind")
USER_METADATA_OPTIONAL = ("fingerprint", "teacher")
WRITER_METADATA_KEYS = ("format_version", "created", "splits", "has")


class ArtifactError(RecboleLLMKDError, ValueError):
    """A teacher artifact (file, partial export or input to the writer) is malformed."""


def validate_user_metadata(metadata: Mapping[str, Any], where: str) -> None:
    """Check the caller part of the metadata (``USER_METADATA_REQUIRED`` / ``_OPTIONAL``): present, typed, item
    tokens unique and starting with [PAD], a known ``score_kind``, a valid ``key_history``."""
    missing = [key for key in USER_METADATA_REQUIRED if key not in metadata]
    if missing:
        raise ArtifactError(f"{where}: metadata lacks {missing}; required keys are {list(USER_METADATA_REQUIRED)}")
    tokens = metadata["item_tokens"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ArtifactError(f"{where}: metadata 'item_tokens' must be a non-empty list of str")
    if tokens[0] != PAD_TOKEN:
        raise ArtifactError(f"{where}: item_tokens[0] must be {PAD_TOKEN!r}, got {tokens[0]!r}")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        duplicates = [t for t in tokens if t in seen or seen.add(t)]
        raise ArtifactError(f"{where}: item_tokens has duplicates, first few: {duplicates[:FIRST_FEW]}")
    if len(tokens) < 2:
        raise ArtifactError(f"{where}: item_tokens holds only {PAD_TOKEN!r}; an artifact needs at least one item")
    if metadata["score_kind"] not in SCORE_KINDS:
        raise ArtifactError(f"{where}: score_kind must be one of {list(SCORE_KINDS)}, got {metadata['score_kind']!r}")
    try:
        check_key_history(metadata["key_history"])
    except ValueError as error:
        raise ArtifactError(f"{where}: {error}") from error
    if not isinstance(metadata["dataset"], str) or not metadata["dataset"]:
        raise ArtifactError(f"{where}: metadata 'dataset' must be a non-empty str, got {metadata['dataset']!r}")
    for key in USER_METADATA_OPTIONAL:
        if key in metadata and not isinstance(metadata[key], dict):
            raise ArtifactError(f"{where}: metadata {key!r} must be a dict, got {type(metadata[key]).__name__}")


def check_K(K: Any, n_items: int, where: str) -> int:
    """``K`` (teacher items per row) as an int in [1, n_items - 1]; raises ``ArtifactError`` otherwise."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ArtifactError(f"{where}: K must be an integer >= 1, got {K!r}")
    if K > n_items - 1:
        raise ArtifactError(
            f"{where}: K={K} is larger than the number of items ({n_items - 1:,}, {PAD_TOKEN} excluded)"
        )
    return int(K)


def _as_tensor(value: Any, name: str, where: str) -> torch.Tensor:
    """A detached CPU tensor from a tensor or numpy array."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ArtifactError(f"{where}: {name!r} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.detach().cpu()


def _as_int64(value: torch.Tensor, name: str, where: str) -> torch.Tensor:
    """An integer tensor as contiguous int64; float, complex and bool are refused."""
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ArtifactError(f"{where}: {name!r} must have an integer dtype, got {value.dtype}")
    return value.to(torch.int64).contiguous()


def _as_float32(value: torch.Tensor, name: str, where: str) -> torch.Tensor:
    """A floating tensor as contiguous float32 with finite values only."""
    if not value.is_floating_point():
        raise ArtifactError(f"{where}: {name!r} must have a floating dtype, got {value.dtype}")
    value = value.to(torch.float32).contiguous()
    if value.numel() and not bool(torch.isfinite(value).all()):
        n_bad = int((~torch.isfinite(value)).sum())
        raise ArtifactError(f"{where}: {name!r} holds {n_bad:,} non-finite values (NaN or inf)")
    return value


def validate_row_tensors(
    tensors: Mapping[str, Any], K: int, n_items: int, where: str, n_rows: Optional[int] = None
) -> dict[str, torch.Tensor]:
    """Check and normalise the per-row tensors of one split (or one chunk of it); names without the split prefix.

    Returns int64 ``key`` [N], ``topk_ids`` [N, K] and float32 ``topk_scores`` [N, K], ``confidence`` [N, K],
    ``target_score`` [N], ``user_state`` [N, d].
    """
    unknown = sorted(set(tensors) - set(REQUIRED_ROW_TENSORS) - set(OPTIONAL_ROW_TENSORS))
    if unknown:
        raise ArtifactError(
            f"{where}: unknown tensors {unknown}; expected {list(REQUIRED_ROW_TENSORS)} and optionally "
            f"{list(OPTIONAL_ROW_TENSORS)}"
        )
    missing = [name for name in REQUIRED_ROW_TENSORS if name not in tensors]
    if missing:
        raise ArtifactError(f"{where}: missing required tensors {missing}")

    out: dict[str, torch.Tensor] = {}
    out["key"] = _as_int64(_as_tensor(tensors["key"], "key", where), "key", where)  # [N]
    if out["key"].dim() != 1:
        raise ArtifactError(f"{where}: 'key' must have shape [N], got {list(out['key'].shape)}")
    rows = out["key"].shape[0]
    if n_rows is not None and rows != n_rows:
        raise ArtifactError(f"{where}: 'key' has {rows:,} rows, the metadata says {n_rows:,}")

    expected_shapes = {
        "topk_ids": [rows, K],
        "topk_scores": [rows, K],
        "confidence": [rows, K],
        "target_score": [rows],
    }
    for name in ("topk_ids", "topk_scores", "confidence", "target_score", "user_state"):
        if name not in tensors:
            continue
        value = _as_tensor(tensors[name], name, where)
        value = _as_int64(value, name, where) if name == "topk_ids" else _as_float32(value, name, where)
        if name == "user_state":
            if value.dim() != 2 or value.shape[0] != rows:
                raise ArtifactError(f"{where}: 'user_state' must have shape [{rows}, d], got {list(value.shape)}")
        elif list(value.shape) != expected_shapes[name]:
            raise ArtifactError(
                f"{where}: {name!r} must have shape {expected_shapes[name]} (rows of 'key', K={K}), "
                f"got {list(value.shape)}"
            )
        out[name] = value

    topk_ids = out["topk_ids"]  # [N, K]
    if topk_ids.numel():
        low, high = int(topk_ids.min()), int(topk_ids.max())
        if low < 0 or high >= n_items:
            raise ArtifactError(
                f"{where}: 'topk_ids' must lie in [0, {n_items}) (artifact item indices), got values in [{low}, {high}]"
            )
    return out


def validate_global(name: str, value: Any, n_items: int, where: str) -> torch.Tensor:
    """Check and normalise a global tensor: float32 [n_items, d], row = artifact item index, row 0 zeros."""
    if name not in GLOBAL_TENSORS:
        raise ArtifactError(f"{where}: unknown global tensor {name!r}; expected one of {list(GLOBAL_TENSORS)}")
    value = _as_float32(_as_tensor(value, name, where), name, where)  # [n_items, d]
    if value.dim() != 2 or value.shape[0] != n_items:
        raise ArtifactError(
            f"{where}: {name!r} must have shape [n_items={n_items}, d] (row = artifact item index), "
            f"got {list(value.shape)}"
        )
    if bool(value[0].any()):
        raise ArtifactError(f"{where}: {name!r} row 0 ({PAD_TOKEN}) must be zeros")
    return value


def check_unique_keys(keys: torch.Tensor, split: str, key_history: int, where: str) -> None:
    """Raise ``ArtifactError`` when two rows of a split share an example key (they could not be told apart)."""
    unique_keys, counts = torch.unique(keys, return_counts=True)
    if unique_keys.shape[0] != keys.shape[0]:
        duplicate_key = int(unique_keys[counts > 1][0])
        duplicate_rows = torch.nonzero(keys == duplicate_key).flatten().tolist()[:FIRST_FEW]
        raise ArtifactError(
            f"{where}: split {split!r} has {keys.shape[0] - unique_keys.shape[0]:,} duplicate example keys "
            f"(e.g. key {duplicate_key} at rows {duplicate_rows}); two examples with the same user, last "
            f"{key_history} history items and target cannot be told apart: export with a larger key_history"
        )
