"""Teacher artifacts: the file that carries an LLM teacher's knowledge to the cheap students.

One file per (teacher run, dataset), ``<name>.safetensors``. Tensors are stored with
``safetensors.torch.save_file``; all metadata is ONE JSON string in the safetensors header metadata under the
key ``"recbole_llmkd"``. No pickle anywhere. The format is documented in ``docs/ARTIFACTS.md``.

Tensors (``s`` in train / valid / test; only train is required)::

    {s}.key           int64   [N]          example key (see ``example_key``)
    {s}.topk_ids      int64   [N, K]       artifact item indices, best first
    {s}.topk_scores   float32 [N, K]       teacher score of each listed item (higher is better)
    {s}.confidence    float32 [N, K]       optional, per-candidate confidence
    {s}.target_score  float32 [N]          optional, teacher score of the ground-truth target
    {s}.user_state    float32 [N, d]       optional, teacher user vector
    item_text_emb     float32 [n_items, d] optional, row = artifact item index, row 0 ([PAD]) zeros

Artifact item index ``j`` is the position of the raw item token in ``metadata["item_tokens"]`` (index 0 =
``"[PAD]"``). Rows are keyed by raw tokens, never by RecBole internal ids, which change with filtering;
``TeacherArtifacts.align`` maps both back onto the current dataset.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from recbole_llmkd.errors import RecboleLLMKDError

FORMAT_VERSION = 1
METADATA_KEY = "recbole_llmkd"
PAD_TOKEN = "[PAD]"
SPLITS = ("train", "valid", "test")
SCORE_KINDS = ("logit", "neg_l2")
DEFAULT_KEY_HISTORY = 10
REQUIRED_ROW_TENSORS = ("key", "topk_ids", "topk_scores")
OPTIONAL_ROW_TENSORS = ("confidence", "target_score", "user_state")
GLOBAL_TENSORS = ("item_text_emb",)
# Metadata keys the caller provides to ArtifactWriter; the writer adds format_version, created, splits and has.
USER_METADATA_REQUIRED = ("dataset", "item_tokens", "key_history", "score_kind")
USER_METADATA_OPTIONAL = ("fingerprint", "teacher")
WRITER_METADATA_KEYS = ("format_version", "created", "splits", "has")

# Separators of the example-key payload: ASCII "record separator" between the three fields (user, history,
# target) and "unit separator" between history items. Tokens containing either are rejected, so the join is
# unambiguous.
_FIELD_SEP = "\x1e"
_ITEM_SEP = "\x1f"
_FIRST_FEW = 5


class ArtifactError(RecboleLLMKDError, ValueError):
    """A teacher artifact (file, partial export or input to the writer) is malformed."""


class ArtifactMismatchError(ArtifactError):
    """A valid teacher artifact does not belong to the dataset it is being aligned with."""


# ----------------------------------------------------------------------------------------------------------
# Example keys
# ----------------------------------------------------------------------------------------------------------


def _check_key_history(key_history: Any) -> int:
    if isinstance(key_history, bool) or not isinstance(key_history, (int, np.integer)) or key_history < 1:
        raise ValueError(f"key_history must be an integer >= 1, got {key_history!r}")
    return int(key_history)


def _key_payload(user_token: str, history_tail: Sequence[str], target_token: str) -> str:
    """``user <RS> i_1 <US> i_2 ... <US> i_h <RS> target``; raises if a token would make the join ambiguous."""
    for token in (user_token, target_token, *history_tail):
        if not isinstance(token, str):
            raise ValueError(f"example-key tokens must be str, got {type(token).__name__} {token!r}")
    if "" in history_tail or user_token == "" or target_token == "":
        raise ValueError(
            f"example-key tokens must be non-empty; got user {user_token!r}, history {list(history_tail)!r}, "
            f"target {target_token!r}"
        )
    payload = _FIELD_SEP.join((user_token, _ITEM_SEP.join(history_tail), target_token))
    if payload.count(_FIELD_SEP) != 2 or payload.count(_ITEM_SEP) != max(len(history_tail) - 1, 0):
        raise ValueError(
            "example-key tokens must not contain the separator characters '\\x1e' or '\\x1f'; got user "
            f"{user_token!r}, history {list(history_tail)!r}, target {target_token!r}"
        )
    return payload


def _hash_payload(payload: str) -> int:
    """Signed int64 from the 8-byte blake2b digest (little endian) of the UTF-8 payload."""
    digest = hashlib.blake2b(payload.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def example_key(user_token: str, prefix_tokens: Sequence[str], target_token: str, key_history: int) -> int:
    """Stable int64 key of one next-item example, built from raw tokens only.

    key = int64( blake2b_8( utf8( user + RS + US.join(prefix[-key_history:]) + RS + target ) ) )

    with RS = ``"\\x1e"``, US = ``"\\x1f"``, the digest read little endian as a signed integer. The prefix is the
    user's history before the target, oldest first; only its last ``key_history`` items enter the key (all of
    them when it is shorter). The key is independent of RecBole's internal ids, so it survives re-filtering.
    """
    key_history = _check_key_history(key_history)
    history_tail = list(prefix_tokens)[-key_history:]
    return _hash_payload(_key_payload(user_token, history_tail, target_token))


def example_keys(
    user_tokens: Sequence[str],
    prefix_token_lists: Sequence[Sequence[str]],
    target_tokens: Sequence[str],
    key_history: int,
) -> np.ndarray:
    """``example_key`` for many examples at once. Returns int64 [N]."""
    key_history = _check_key_history(key_history)
    if not (len(user_tokens) == len(prefix_token_lists) == len(target_tokens)):
        raise ValueError(
            f"example_keys needs one user, prefix and target per example; got {len(user_tokens)} users, "
            f"{len(prefix_token_lists)} prefixes, {len(target_tokens)} targets"
        )
    keys = np.empty(len(user_tokens), dtype=np.int64)  # [N]
    for row, (user_token, prefix_tokens, target_token) in enumerate(
        zip(user_tokens, prefix_token_lists, target_tokens)
    ):
        history_tail = list(prefix_tokens)[-key_history:]
        keys[row] = _hash_payload(_key_payload(user_token, history_tail, target_token))
    return keys


# ----------------------------------------------------------------------------------------------------------
# RecBole glue (pure functions on a built RecBole Dataset)
# ----------------------------------------------------------------------------------------------------------


def _check_dataset(dataset: Any) -> None:
    if not hasattr(dataset, "inter_feat") or not hasattr(dataset, "field2id_token"):
        raise ValueError(
            f"expected a built RecBole Dataset (e.g. train_data._dataset), got {type(dataset).__name__}"
        )


def item_tokens(dataset: Any) -> list[str]:
    """Raw item tokens in internal-id order: ``result[internal_id] = raw token``; index 0 is ``"[PAD]"``."""
    _check_dataset(dataset)
    tokens = [str(token) for token in dataset.field2id_token[dataset.iid_field]]
    if not tokens or tokens[0] != PAD_TOKEN:
        raise ValueError(
            f"dataset {dataset.dataset_name!r}: item id 0 should be {PAD_TOKEN!r}, got "
            f"{tokens[0] if tokens else 'no items'!r}"
        )
    return tokens


def _sha256_of_tokens(tokens: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def dataset_fingerprint(dataset: Any) -> dict:
    """Identity of a RecBole dataset: name, users and items (both without [PAD]), sha256 of the item token
    list (newline-joined, internal-id order) and the number of interaction rows of the dataset passed."""
    tokens = item_tokens(dataset)
    return {
        "dataset": str(dataset.dataset_name),
        "n_users": int(dataset.user_num) - 1,
        "n_items": len(tokens) - 1,
        "item_tokens_sha256": _sha256_of_tokens(tokens),
        "n_interactions": int(len(dataset.inter_feat)),
    }


def dataset_metadata(
    dataset: Any,
    key_history: int = DEFAULT_KEY_HISTORY,
    score_kind: str = "logit",
    teacher: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The caller part of the artifact metadata for ``ArtifactWriter``, taken from a RecBole dataset."""
    return {
        "dataset": str(dataset.dataset_name),
        "fingerprint": dataset_fingerprint(dataset),
        "item_tokens": item_tokens(dataset),
        "key_history": _check_key_history(key_history),
        "score_kind": score_kind,
        "teacher": dict(teacher or {}),
    }


def _sequence_fields(dataset: Any) -> tuple[str, str]:
    item_seq_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
    item_seq_len_field = dataset.config["ITEM_LIST_LENGTH_FIELD"]
    columns = set(dataset.inter_feat.columns)
    if item_seq_field not in columns or item_seq_len_field not in columns:
        raise ValueError(
            f"dataset {dataset.dataset_name!r} has no {item_seq_field!r} / {item_seq_len_field!r} fields: "
            "pass a built sequential split (train_data._dataset after data_preparation)"
        )
    return item_seq_field, item_seq_len_field


def _dataset_example_tokens(dataset: Any, key_history: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw tokens of every row of ``dataset.inter_feat``.

    Returns ``user_tok`` object [N], ``history_tok`` object [N, h] (the last ``h = key_history`` prefix items,
    right-aligned, so the ``history_len[n]`` valid tokens of row n are ``history_tok[n, h - history_len[n]:]``),
    ``history_len`` int64 [N] and ``target_tok`` object [N].
    """
    _check_dataset(dataset)
    key_history = _check_key_history(key_history)
    max_len = int(dataset.config["MAX_ITEM_LIST_LENGTH"])
    if max_len < key_history:
        raise ValueError(
            f"dataset {dataset.dataset_name!r} keeps MAX_ITEM_LIST_LENGTH={max_len} history items, fewer than the "
            f"key_history={key_history} items the example keys use; set MAX_ITEM_LIST_LENGTH >= {key_history}"
        )
    item_seq_field, item_seq_len_field = _sequence_fields(dataset)
    item_seq = dataset.inter_feat[item_seq_field].numpy()  # [N, L], right-padded with 0
    item_seq_len = dataset.inter_feat[item_seq_len_field].numpy().astype(np.int64)  # [N]
    target_ids = dataset.inter_feat[dataset.iid_field].numpy()  # [N]
    user_ids = dataset.inter_feat[dataset.uid_field].numpy()  # [N]
    n_rows, seq_width = item_seq.shape
    if n_rows and (item_seq_len.min() < 0 or item_seq_len.max() > seq_width):
        raise ValueError(
            f"dataset {dataset.dataset_name!r}: {item_seq_len_field!r} must lie in [0, {seq_width}], got values in "
            f"[{item_seq_len.min()}, {item_seq_len.max()}]"
        )

    item_vocab = np.asarray(dataset.field2id_token[dataset.iid_field], dtype=object)  # [n_items]
    user_vocab = np.asarray(dataset.field2id_token[dataset.uid_field], dtype=object)  # [n_users]

    # Position of the h-th-from-last history item of each row; negative where the prefix is shorter than h.
    history_pos = item_seq_len[:, None] - key_history + np.arange(key_history)[None, :]  # [N, h]
    history_valid = history_pos >= 0  # [N, h]
    history_ids = np.take_along_axis(item_seq, np.clip(history_pos, 0, None), axis=1)  # [N, h]
    history_tok = item_vocab[history_ids]  # [N, h]
    history_tok[~history_valid] = None
    history_len = np.minimum(item_seq_len, key_history)  # [N]
    return user_vocab[user_ids], history_tok, history_len, item_vocab[target_ids]


def dataset_example_keys(dataset: Any, key_history: int = DEFAULT_KEY_HISTORY) -> np.ndarray:
    """``example_key`` of every row of ``dataset.inter_feat`` (a built sequential split). Returns int64 [N].

    Uses ``field2id_token`` for the raw user/item tokens, ``item_id_list`` (right-padded) and ``item_length``
    for the prefix and ``item_id`` for the target. Raises if MAX_ITEM_LIST_LENGTH < key_history, since the
    dataset then no longer holds the items the key needs.
    """
    key_history = _check_key_history(key_history)
    user_tok, history_tok, history_len, target_tok = _dataset_example_tokens(dataset, key_history)
    item_vocab = dataset.field2id_token[dataset.iid_field]
    user_vocab = dataset.field2id_token[dataset.uid_field]
    # Validate every vocabulary token once, then hash without per-token checks.
    _key_payload(PAD_TOKEN, [str(t) for t in item_vocab[1:]], PAD_TOKEN)
    _key_payload(PAD_TOKEN, [str(t) for t in user_vocab[1:]], PAD_TOKEN)

    keys = np.empty(len(user_tok), dtype=np.int64)  # [N]
    for row in range(len(user_tok)):
        history_tail = history_tok[row, key_history - history_len[row]:]
        payload = _FIELD_SEP.join((user_tok[row], _ITEM_SEP.join(history_tail), target_tok[row]))
        keys[row] = _hash_payload(payload)
    return keys


def _describe_dataset_row(dataset: Any, row: int, key_history: int) -> str:
    user_tok, history_tok, history_len, target_tok = _dataset_example_tokens(dataset, key_history)
    history_tail = list(history_tok[row, key_history - history_len[row]:])
    return f"row {row}: user {user_tok[row]!r}, prefix (last {key_history}) {history_tail}, target {target_tok[row]!r}"


# ----------------------------------------------------------------------------------------------------------
# Validation shared by the writer and the loader
# ----------------------------------------------------------------------------------------------------------


def _to_jsonable(metadata: Mapping[str, Any], where: str) -> dict:
    try:
        return json.loads(json.dumps(metadata, sort_keys=True))
    except TypeError as error:
        raise ArtifactError(f"{where}: metadata must be JSON-serialisable: {error}") from error


def _validate_user_metadata(metadata: Mapping[str, Any], where: str) -> None:
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
        raise ArtifactError(f"{where}: item_tokens has duplicates, first few: {duplicates[:_FIRST_FEW]}")
    if len(tokens) < 2:
        raise ArtifactError(f"{where}: item_tokens holds only {PAD_TOKEN!r}; an artifact needs at least one item")
    if metadata["score_kind"] not in SCORE_KINDS:
        raise ArtifactError(f"{where}: score_kind must be one of {list(SCORE_KINDS)}, got {metadata['score_kind']!r}")
    try:
        _check_key_history(metadata["key_history"])
    except ValueError as error:
        raise ArtifactError(f"{where}: {error}") from error
    if not isinstance(metadata["dataset"], str) or not metadata["dataset"]:
        raise ArtifactError(f"{where}: metadata 'dataset' must be a non-empty str, got {metadata['dataset']!r}")
    for key in USER_METADATA_OPTIONAL:
        if key in metadata and not isinstance(metadata[key], dict):
            raise ArtifactError(f"{where}: metadata {key!r} must be a dict, got {type(metadata[key]).__name__}")


def _check_K(K: Any, n_items: int, where: str) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ArtifactError(f"{where}: K must be an integer >= 1, got {K!r}")
    if K > n_items - 1:
        raise ArtifactError(
            f"{where}: K={K} is larger than the number of items ({n_items - 1:,}, {PAD_TOKEN} excluded)"
        )
    return int(K)


def _as_tensor(value: Any, name: str, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ArtifactError(f"{where}: {name!r} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.detach().cpu()


def _as_int64(value: torch.Tensor, name: str, where: str) -> torch.Tensor:
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ArtifactError(f"{where}: {name!r} must have an integer dtype, got {value.dtype}")
    return value.to(torch.int64).contiguous()


def _as_float32(value: torch.Tensor, name: str, where: str) -> torch.Tensor:
    if not value.is_floating_point():
        raise ArtifactError(f"{where}: {name!r} must have a floating dtype, got {value.dtype}")
    value = value.to(torch.float32).contiguous()
    if value.numel() and not bool(torch.isfinite(value).all()):
        n_bad = int((~torch.isfinite(value)).sum())
        raise ArtifactError(f"{where}: {name!r} holds {n_bad:,} non-finite values (NaN or inf)")
    return value


def _validate_row_tensors(
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


def _validate_global(name: str, value: Any, n_items: int, where: str) -> torch.Tensor:
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


def _check_unique_keys(keys: torch.Tensor, split: str, key_history: int, where: str) -> None:
    unique_keys, counts = torch.unique(keys, return_counts=True)
    if unique_keys.shape[0] != keys.shape[0]:
        duplicate_key = int(unique_keys[counts > 1][0])
        duplicate_rows = torch.nonzero(keys == duplicate_key).flatten().tolist()[:_FIRST_FEW]
        raise ArtifactError(
            f"{where}: split {split!r} has {keys.shape[0] - unique_keys.shape[0]:,} duplicate example keys "
            f"(e.g. key {duplicate_key} at rows {duplicate_rows}); two examples with the same user, last "
            f"{key_history} history items and target cannot be told apart: export with a larger key_history"
        )


# ----------------------------------------------------------------------------------------------------------
# Resumable writer
# ----------------------------------------------------------------------------------------------------------


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict[str, str]] = None) -> None:
    """Write a safetensors file to a temporary sibling and ``os.replace`` it, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def _ranges_gaps_overlaps(ranges: list[tuple[int, int]], n_rows: int) -> tuple[list, list]:
    """Gaps ``[(start, end), ...]`` in [0, n_rows) and overlapping pairs of sorted half-open ranges."""
    gaps, overlaps = [], []
    covered_until = 0
    previous = None
    for start, end in ranges:
        if start > covered_until:
            gaps.append((covered_until, start))
        elif start < covered_until and previous is not None:
            overlaps.append((previous, (start, end)))
        if end > covered_until:
            covered_until, previous = end, (start, end)
    if covered_until < n_rows:
        gaps.append((covered_until, n_rows))
    return gaps, overlaps


class ArtifactWriter:
    """Resumable export of one artifact file.

    Rows arrive in chunks; each chunk is its own small safetensors file ``<split>.<start>-<end>.safetensors``
    (``end`` exclusive) in the sibling folder ``<path>.partial/``, written to a temporary name and then
    ``os.replace``d, so an interruption never leaves half a chunk. ``<path>.partial/meta.json`` holds the
    metadata; a writer created on an existing folder resumes it, and refuses to when its metadata differ.
    ``finalize()`` checks that every row of every split is present exactly once, concatenates the chunks,
    writes ``<path>`` atomically and removes the folder.

    Args:
        path: the final ``.safetensors`` file.
        metadata: ``dataset``, ``item_tokens``, ``key_history``, ``score_kind`` and optionally ``fingerprint``,
            ``teacher`` (see ``dataset_metadata``). ``format_version``, ``created``, ``splits`` and ``has`` are
            added by the writer.
        splits: number of rows per split, e.g. ``{"train": 97171, "valid": 943}``; ``train`` is required.
        K: number of teacher items per row.
        chunk_rows: rows per chunk proposed by ``pending_ranges`` (``write_chunk`` accepts any size).
        overwrite: replace ``path`` if it already exists (otherwise that is an error).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Mapping[str, Any],
        splits: Mapping[str, int],
        K: int,
        chunk_rows: int = 4096,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.partial_dir = Path(f"{self.path}.partial")
        where = f"ArtifactWriter({self.path})"
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{where}: the artifact file already exists; delete it or pass overwrite=True")

        reserved = [key for key in WRITER_METADATA_KEYS if key in metadata]
        if reserved:
            raise ArtifactError(f"{where}: metadata keys {reserved} are set by the writer; leave them out")
        unknown = sorted(set(metadata) - set(USER_METADATA_REQUIRED) - set(USER_METADATA_OPTIONAL))
        if unknown:
            raise ArtifactError(
                f"{where}: unknown metadata keys {unknown}; put free-form information under 'teacher'"
            )
        self.metadata = _to_jsonable(metadata, where)
        _validate_user_metadata(self.metadata, where)
        self.n_items = len(self.metadata["item_tokens"])
        self.key_history = int(self.metadata["key_history"])

        unknown_splits = sorted(set(splits) - set(SPLITS))
        if unknown_splits or "train" not in splits:
            raise ArtifactError(f"{where}: splits must include 'train' and be among {list(SPLITS)}, got {list(splits)}")
        for split, n_rows in splits.items():
            if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
                raise ArtifactError(
                    f"{where}: split {split!r} must have an integer number of rows >= 1, got {n_rows!r}"
                )
        self.splits = {split: int(splits[split]) for split in SPLITS if split in splits}
        self.K = _check_K(K, self.n_items, where)
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ArtifactError(f"{where}: chunk_rows must be an integer >= 1, got {chunk_rows!r}")
        self.chunk_rows = chunk_rows
        self._open_partial_dir()

    # -- partial folder ------------------------------------------------------------------------------------

    def _partial_meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "metadata": self.metadata, "splits": self.splits, "K": self.K}

    def _open_partial_dir(self) -> None:
        meta_path = self.partial_dir / "meta.json"
        expected = self._partial_meta()
        if meta_path.exists():
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
            if stored != expected:
                differing = [key for key in ("format_version", "splits", "K") if stored.get(key) != expected[key]]
                stored_metadata = stored.get("metadata", {})
                differing += [
                    f"metadata.{key}"
                    for key in sorted(set(stored_metadata) | set(self.metadata))
                    if stored_metadata.get(key) != self.metadata.get(key)
                ]
                raise ArtifactError(
                    f"{self.partial_dir} holds an unfinished export with different metadata (differs in: "
                    f"{', '.join(differing)}); resume it with the same teacher, dataset and splits, or delete the "
                    "folder to start over"
                )
            return
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        temporary = meta_path.with_name(f".meta.json.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(expected, sort_keys=True), encoding="utf-8")
        os.replace(temporary, meta_path)

    def _chunk_path(self, split: str, start: int, end: int) -> Path:
        return self.partial_dir / f"{split}.{start}-{end}.safetensors"

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ArtifactError(f"{self.partial_dir}: unknown split {split!r}; this export has {list(self.splits)}")

    # -- progress ------------------------------------------------------------------------------------------

    def done_ranges(self, split: str) -> list[tuple[int, int]]:
        """Sorted half-open row ranges ``(start, end)`` of ``split`` already written."""
        self._check_split(split)
        pattern = re.compile(rf"^{re.escape(split)}\.(\d+)-(\d+)\.safetensors$")
        ranges = []
        for entry in os.listdir(self.partial_dir):
            match = pattern.match(entry)
            if match:
                ranges.append((int(match.group(1)), int(match.group(2))))
        return sorted(ranges)

    def next_start(self, split: str) -> int:
        """First row of ``split`` not yet written: the end of the contiguous run of done rows from row 0."""
        gaps, _ = _ranges_gaps_overlaps(self.done_ranges(split), self.splits[split])
        return gaps[0][0] if gaps else self.splits[split]

    def pending_ranges(self, split: str) -> list[tuple[int, int]]:
        """Row ranges of ``split`` still to write, cut into pieces of at most ``chunk_rows`` rows."""
        gaps, _ = _ranges_gaps_overlaps(self.done_ranges(split), self.splits[split])
        pending = []
        for gap_start, gap_end in gaps:
            for start in range(gap_start, gap_end, self.chunk_rows):
                pending.append((start, min(start + self.chunk_rows, gap_end)))
        return pending

    def done_globals(self) -> list[str]:
        """Names of the global tensors already written."""
        return sorted(name for name in GLOBAL_TENSORS if (self.partial_dir / f"global.{name}.safetensors").exists())

    def is_complete(self) -> bool:
        """Whether every split is fully covered (``finalize`` still checks overlaps)."""
        return all(not self.pending_ranges(split) for split in self.splits)

    # -- writing -------------------------------------------------------------------------------------------

    def write_chunk(self, split: str, start: int, tensors: Mapping[str, Any]) -> tuple[int, int]:
        """Write rows ``[start, start + N)`` of ``split``. ``tensors``: ``key`` [N], ``topk_ids`` [N, K],
        ``topk_scores`` [N, K] and optionally ``confidence`` [N, K], ``target_score`` [N], ``user_state`` [N, d].
        Rewriting exactly the same range replaces it; overlapping another range is an error. Returns
        ``(start, end)``."""
        self._check_split(split)
        n_split_rows = self.splits[split]
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < n_split_rows:
            raise ArtifactError(
                f"{self.partial_dir}: chunk start must be an integer in [0, {n_split_rows}), got {start!r}"
            )
        start = int(start)
        where = f"{self.partial_dir}: chunk of split {split!r} at row {start}"
        chunk = _validate_row_tensors(tensors, self.K, self.n_items, where)
        end = start + chunk["key"].shape[0]
        if end == start:
            raise ArtifactError(f"{where}: the chunk has no rows")
        if end > n_split_rows:
            raise ArtifactError(f"{where}: rows {start}-{end} run past the split's {n_split_rows:,} rows")
        done = self.done_ranges(split)
        for done_start, done_end in done:
            if (done_start, done_end) != (start, end) and done_start < end and start < done_end:
                raise ArtifactError(
                    f"{where}: rows {start}-{end} overlap the chunk already written for rows {done_start}-{done_end}"
                )
        others = [r for r in done if r != (start, end)]
        if others:
            self._check_same_layout(chunk, self._chunk_path(split, *others[0]), where)
        _atomic_save({name: tensor for name, tensor in chunk.items()}, self._chunk_path(split, start, end))
        return start, end

    def _check_same_layout(self, chunk: dict[str, torch.Tensor], other_path: Path, where: str) -> None:
        with safe_open(str(other_path), framework="pt") as other:
            other_shapes = {name: other.get_slice(name).get_shape()[1:] for name in other.keys()}
        shapes = {name: list(tensor.shape[1:]) for name, tensor in chunk.items()}
        if shapes != other_shapes:
            raise ArtifactError(
                f"{where}: tensors {sorted(shapes)} (trailing shapes {shapes}) differ from those of "
                f"{other_path.name} ({other_shapes}); every chunk of a split needs the same tensors"
            )

    def write_global(self, name: str, tensor: Any) -> None:
        """Write a global tensor (``item_text_emb`` float32 [n_items, d], row = artifact item index, row 0 zeros)."""
        value = _validate_global(name, tensor, self.n_items, f"{self.partial_dir}: global {name!r}")
        _atomic_save({name: value}, self.partial_dir / f"global.{name}.safetensors")

    # -- finishing -----------------------------------------------------------------------------------------

    def _collect_split(self, split: str) -> dict[str, torch.Tensor]:
        n_rows = self.splits[split]
        ranges = self.done_ranges(split)
        gaps, overlaps = _ranges_gaps_overlaps(ranges, n_rows)
        if overlaps:
            first, second = overlaps[0]
            raise ArtifactError(
                f"{self.partial_dir}: split {split!r} has overlapping chunks, e.g. rows {first[0]}-{first[1]} and "
                f"{second[0]}-{second[1]}; every row must be written exactly once"
            )
        if gaps:
            n_missing = sum(end - start for start, end in gaps)
            listed = ", ".join(f"{start}-{end}" for start, end in gaps[:_FIRST_FEW])
            raise ArtifactError(
                f"{self.partial_dir}: split {split!r} is missing {n_missing:,} of {n_rows:,} rows (ranges, end "
                f"exclusive: {listed}{', ...' if len(gaps) > _FIRST_FEW else ''}); write them before finalize()"
            )
        parts = [load_file(str(self._chunk_path(split, start, end))) for start, end in ranges]
        names = sorted(parts[0])
        for (start, end), part in zip(ranges, parts):
            if sorted(part) != names:
                raise ArtifactError(
                    f"{self.partial_dir}: split {split!r} chunk {start}-{end} has tensors {sorted(part)}, the first "
                    f"chunk has {names}; every chunk of a split needs the same tensors"
                )
        where = f"{self.partial_dir}: split {split!r}"
        merged = {name: torch.cat([part[name] for part in parts]) for name in names}
        merged = _validate_row_tensors(merged, self.K, self.n_items, where, n_rows=n_rows)
        _check_unique_keys(merged["key"], split, self.key_history, where)
        return merged

    def finalize(self) -> Path:
        """Check coverage, concatenate the chunks, write ``path`` atomically, remove the partial folder."""
        tensors: dict[str, torch.Tensor] = {}
        has: list[str] = []
        for split in self.splits:
            for name, tensor in self._collect_split(split).items():
                tensors[f"{split}.{name}"] = tensor
                if name in OPTIONAL_ROW_TENSORS:
                    has.append(f"{split}.{name}")
        for name in self.done_globals():
            tensors[name] = load_file(str(self.partial_dir / f"global.{name}.safetensors"))[name]
            has.append(name)
        metadata = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.metadata,
            "splits": {split: {"n_rows": n_rows, "K": self.K} for split, n_rows in self.splits.items()},
            "has": sorted(has),
        }
        metadata.setdefault("fingerprint", {})
        metadata.setdefault("teacher", {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(tensors, self.path, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        shutil.rmtree(self.partial_dir)
        return self.path


# ----------------------------------------------------------------------------------------------------------
# Loader and alignment
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AlignedTeacher:
    """Teacher tensors in the row order of one split of the current dataset, item ids = RecBole internal ids.

    ``topk`` [N, K] int64, ``scores`` [N, K] float32, optional ``confidence`` [N, K], ``target_score`` [N],
    ``user_state`` [N, d]; ``item_text_emb`` [dataset.item_num, d] in internal-id order (row 0 zeros) or None;
    ``present`` [N] bool, False for rows without a teacher row (only with ``align(..., required=False)``;
    such rows hold topk 0 ([PAD]) and zero scores).
    """

    topk: torch.Tensor
    scores: torch.Tensor
    present: torch.Tensor
    score_kind: str
    split: str
    confidence: Optional[torch.Tensor] = None
    target_score: Optional[torch.Tensor] = None
    user_state: Optional[torch.Tensor] = None
    item_text_emb: Optional[torch.Tensor] = None

    @property
    def K(self) -> int:
        return int(self.topk.shape[1])

    def truncate(self, k: int) -> "AlignedTeacher":
        """The first ``k`` teacher items of every row (``confidence`` is sliced as stored, not renormalised)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.K:
            raise ValueError(f"truncate(k) needs 1 <= k <= K={self.K} (the artifact's K), got {k!r}")
        return replace(
            self,
            topk=self.topk[:, :k].contiguous(),
            scores=self.scores[:, :k].contiguous(),
            confidence=None if self.confidence is None else self.confidence[:, :k].contiguous(),
        )


@dataclass
class TeacherArtifacts:
    """A loaded, validated artifact file: ``metadata`` (the JSON header) and ``tensors`` by file name."""

    path: Path
    metadata: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def dataset_name(self) -> str:
        return self.metadata["dataset"]

    @property
    def item_tokens(self) -> list[str]:
        return self.metadata["item_tokens"]

    @property
    def n_items(self) -> int:
        """Number of artifact item indices, [PAD] included."""
        return len(self.metadata["item_tokens"])

    @property
    def key_history(self) -> int:
        return int(self.metadata["key_history"])

    @property
    def score_kind(self) -> str:
        return self.metadata["score_kind"]

    @property
    def teacher(self) -> dict:
        return self.metadata["teacher"]

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["splits"])

    @property
    def K(self) -> int:
        """K of the train split."""
        return int(self.metadata["splits"]["train"]["K"])

    @property
    def item_text_emb(self) -> Optional[torch.Tensor]:
        """float32 [n_items, d] in artifact item order, or None."""
        return self.tensors.get("item_text_emb")

    def split_tensors(self, split: str) -> dict[str, torch.Tensor]:
        """The tensors of one split, names without the ``<split>.`` prefix, artifact row and item order."""
        if split not in self.metadata["splits"]:
            raise ArtifactError(f"{self.path}: no split {split!r} in the artifact; it has {self.splits}")
        prefix = f"{split}."
        return {name[len(prefix):]: tensor for name, tensor in self.tensors.items() if name.startswith(prefix)}

    def _item_map(self, dataset: Any) -> torch.Tensor:
        """Artifact item index -> current internal item id, int64 [n_items]; raises when the items differ."""
        current_tokens = item_tokens(dataset)
        current_name = str(dataset.dataset_name)
        header = (
            f"artifact {self.path.name} was built for dataset {self.dataset_name!r} with {self.n_items - 1:,} "
            f"items; this dataset {current_name!r} has {len(current_tokens) - 1:,} items"
        )
        if current_name != self.dataset_name:
            raise ArtifactMismatchError(header)
        artifact_set, current_set = set(self.item_tokens), set(current_tokens)
        if artifact_set != current_set:
            only_artifact = [t for t in self.item_tokens if t not in current_set]
            only_current = [t for t in current_tokens if t not in artifact_set]
            raise ArtifactMismatchError(
                f"{header}, and the item tokens differ: {len(only_artifact):,} only in the artifact (first few: "
                f"{only_artifact[:_FIRST_FEW]}), {len(only_current):,} only in this dataset (first few: "
                f"{only_current[:_FIRST_FEW]}); export the artifact with this dataset's filtering config"
            )
        token2id = dataset.field2token_id[dataset.iid_field]
        return torch.tensor([token2id[token] for token in self.item_tokens], dtype=torch.int64)  # [n_items]

    def align(self, dataset: Any, split: str = "train", required: bool = True) -> AlignedTeacher:
        """Map the artifact's ``split`` onto the rows and internal item ids of a built RecBole split dataset.

        Row n of the result belongs to ``dataset.inter_feat`` row n, found by its example key. With
        ``required=True`` every row must have a teacher row; with ``required=False`` missing rows are flagged in
        ``present``. Raises ``ArtifactMismatchError`` naming what differs (dataset name, item tokens, rows), and
        ``ArtifactError`` when the artifact has no such split (whatever ``required`` says). Artifact rows that
        no dataset row uses are ignored.
        """
        _check_dataset(dataset)
        split_tensors = self.split_tensors(split)
        item_map = self._item_map(dataset)  # [n_items]

        dataset_keys = dataset_example_keys(dataset, self.key_history)  # [N]
        artifact_keys = split_tensors["key"].numpy()  # [M]
        key_order = np.argsort(artifact_keys, kind="stable")  # [M]
        sorted_keys = artifact_keys[key_order]  # [M]
        position = np.clip(np.searchsorted(sorted_keys, dataset_keys), 0, max(len(sorted_keys) - 1, 0))  # [N]
        found = sorted_keys[position] == dataset_keys if len(sorted_keys) else np.zeros(len(dataset_keys), bool)
        artifact_rows = key_order[position]  # [N]
        n_missing = int((~found).sum())
        if required and n_missing:
            first_missing = int(np.flatnonzero(~found)[0])
            raise ArtifactMismatchError(
                f"{n_missing:,} of {len(dataset_keys):,} rows of this dataset have no teacher row in split {split!r} "
                f"of artifact {self.path.name} ({len(artifact_keys):,} rows); first missing example "
                f"{_describe_dataset_row(dataset, first_missing, self.key_history)}. Was the artifact exported with "
                "the same dataset, filtering and split config?"
            )
        present = torch.from_numpy(found)  # [N]
        rows = torch.from_numpy(np.where(found, artifact_rows, 0))  # [N]

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            gathered = tensor[rows].clone()  # [N, ...]
            gathered[~present] = 0
            return gathered

        topk = item_map[split_tensors["topk_ids"][rows]]  # [N, K] internal ids
        topk[~present] = 0
        item_text_emb = None
        if self.item_text_emb is not None:
            item_text_emb = torch.zeros(int(dataset.item_num), self.item_text_emb.shape[1])  # [item_num, d]
            item_text_emb[item_map] = self.item_text_emb
        optional = {name: gather(split_tensors[name]) for name in OPTIONAL_ROW_TENSORS if name in split_tensors}
        return AlignedTeacher(
            topk=topk,
            scores=gather(split_tensors["topk_scores"]),
            present=present,
            score_kind=self.score_kind,
            split=split,
            item_text_emb=item_text_emb,
            **optional,
        )


def _read_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata()
    except SafetensorError as error:
        raise ArtifactError(f"{path} is not a safetensors file ({error})") from error
    if not header or METADATA_KEY not in header:
        raise ArtifactError(
            f"{path} is a safetensors file without {METADATA_KEY!r} metadata: not a teacher artifact "
            "(write artifacts with ArtifactWriter or recbole_llmkd.data.importer)"
        )
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: the {METADATA_KEY!r} metadata must be a JSON object")
    return metadata


def load_artifacts(path: str | os.PathLike) -> TeacherArtifacts:
    """Read and validate an artifact file: header metadata, tensor names, shapes, dtypes, K and item ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher artifact file not found: {path}")
    metadata = _read_metadata(path)
    where = str(path)
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: unsupported format_version {version!r}; this recbole_llmkd reads format_version {FORMAT_VERSION}"
        )
    _validate_user_metadata(metadata, where)
    for key in ("splits", "has", "fingerprint", "teacher", "created"):
        if key not in metadata:
            raise ArtifactError(f"{where}: metadata lacks {key!r}")
    splits = metadata["splits"]
    if not isinstance(splits, dict) or "train" not in splits or set(splits) - set(SPLITS):
        raise ArtifactError(
            f"{where}: metadata 'splits' must include 'train' and be among {list(SPLITS)}, got {splits!r}"
        )
    n_items = len(metadata["item_tokens"])

    tensors = load_file(str(path))
    expected_names = set(GLOBAL_TENSORS)
    for split in splits:
        expected_names |= {f"{split}.{name}" for name in REQUIRED_ROW_TENSORS + OPTIONAL_ROW_TENSORS}
    unknown = sorted(set(tensors) - expected_names)
    if unknown:
        raise ArtifactError(f"{where}: unexpected tensors {unknown} (splits in the metadata: {list(splits)})")
    optional_present = sorted(
        name for name in tensors if name in GLOBAL_TENSORS or name.split(".", 1)[-1] in OPTIONAL_ROW_TENSORS
    )
    if sorted(metadata["has"]) != optional_present:
        raise ArtifactError(
            f"{where}: metadata 'has' lists {sorted(metadata['has'])}, the file holds {optional_present}"
        )

    for split, info in splits.items():
        if not isinstance(info, dict) or "n_rows" not in info or "K" not in info:
            raise ArtifactError(
                f"{where}: metadata splits[{split!r}] must be {{'n_rows': int, 'K': int}}, got {info!r}"
            )
        K = _check_K(info["K"], n_items, f"{where}: split {split!r}")
        prefix = f"{split}."
        split_tensors = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
        checked = _validate_row_tensors(split_tensors, K, n_items, f"{where}: split {split!r}", n_rows=info["n_rows"])
        _check_unique_keys(checked["key"], split, int(metadata["key_history"]), where)
        tensors.update({f"{split}.{name}": tensor for name, tensor in checked.items()})
    for name in GLOBAL_TENSORS:
        if name in tensors:
            tensors[name] = _validate_global(name, tensors[name], n_items, where)
    return TeacherArtifacts(path=path, metadata=metadata, tensors=tensors)


TEACHER_RUN_ARTIFACT = "teacher_artifacts.safetensors"


def resolve_teacher_artifacts(path: str | os.PathLike | None) -> Path:
    """The artifact file behind ``--teacher``: an artifact file itself, or a teacher run directory holding
    ``teacher_artifacts.safetensors``. Raises ``FileNotFoundError`` naming what was looked for."""
    if path is None or str(path).strip() in ("", "None", "~"):
        raise FileNotFoundError(
            "no teacher given: pass --teacher=<artifact file or teacher run dir holding "
            f"{TEACHER_RUN_ARTIFACT}>"
        )
    candidate = Path(os.path.expanduser(str(path)))
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        inside = candidate / TEACHER_RUN_ARTIFACT
        if inside.is_file():
            return inside
        found = sorted(p.name for p in candidate.glob("*.safetensors"))
        raise FileNotFoundError(
            f"teacher run directory {candidate} holds no {TEACHER_RUN_ARTIFACT}"
            + (f" (it has: {', '.join(found[:_FIRST_FEW])}); pass the artifact file itself" if found else
               "; export the teacher's artifacts first or pass the artifact file")
        )
    raise FileNotFoundError(f"teacher artifact not found: {candidate} is neither a file nor a directory")
