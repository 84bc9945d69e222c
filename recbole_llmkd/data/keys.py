"""Example keys and dataset identity: the raw-token view of a RecBole dataset that artifacts are keyed by.

An artifact row is found by its example key, a stable int64 hash of the user, the last ``key_history`` history
items and the target, all as raw tokens. Keys never use RecBole's internal ids, which change with filtering, so an
artifact survives re-filtering and is matched back to the rows of the current dataset (``align.py``).
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import numpy as np

PAD_TOKEN = "[PAD]"
DEFAULT_KEY_HISTORY = 10

# Separators of the example-key payload: ASCII "record separator" between the three fields (user, history,
# target) and "unit separator" between history items. Tokens containing either are rejected, so the join is
# unambiguous.
_FIELD_SEP = "\x1e"
_ITEM_SEP = "\x1f"


def check_key_history(key_history: Any) -> int:
    """``key_history`` as an int; raises ``ValueError`` unless it is an integer >= 1."""
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
    key_history = check_key_history(key_history)
    history_tail = list(prefix_tokens)[-key_history:]
    return _hash_payload(_key_payload(user_token, history_tail, target_token))


def example_keys(
    user_tokens: Sequence[str],
    prefix_token_lists: Sequence[Sequence[str]],
    target_tokens: Sequence[str],
    key_history: int,
) -> np.ndarray:
    """``example_key`` for many examples at once. Returns int64 [N]."""
    key_history = check_key_history(key_history)
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


def check_dataset(dataset: Any) -> None:
    """Raise ``ValueError`` unless ``dataset`` is a built RecBole Dataset (has ``inter_feat`` and ``field2id_token``)."""
    if not hasattr(dataset, "inter_feat") or not hasattr(dataset, "field2id_token"):
        raise ValueError(
            f"expected a built RecBole Dataset (e.g. train_data._dataset), got {type(dataset).__name__}"
        )


def item_tokens(dataset: Any) -> list[str]:
    """Raw item tokens in internal-id order: ``result[internal_id] = raw token``; index 0 is ``"[PAD]"``."""
    check_dataset(dataset)
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


def item_tokens_fingerprint(dataset: Any) -> dict:
    """What a trained model's item ids mean: the dataset's name, its number of items and the sha256 of its item
    token list (``dataset_fingerprint`` without the users and rows, which differ between a dataset's splits)."""
    fingerprint = dataset_fingerprint(dataset)
    return {key: fingerprint[key] for key in ("dataset", "n_items", "item_tokens_sha256")}


def dataset_mismatch(saved: dict, current: dict) -> Optional[str]:
    """None when a checkpoint's item-token fingerprint ``saved`` (absent in old checkpoints: ``{}``) is ``current``
    (``item_tokens_fingerprint``); otherwise what differs, as ``"trained on dataset ... ; this run's dataset ... has
    ..."``."""
    if not saved or saved == current:
        return None
    return (
        f"trained on dataset {saved.get('dataset')!r} with {saved.get('n_items')} item ids (item tokens sha256 "
        f"{str(saved.get('item_tokens_sha256'))[:12]}…); this run's dataset {current['dataset']!r} has "
        f"{current['n_items']} (sha256 {current['item_tokens_sha256'][:12]}…)"
    )


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
    check_dataset(dataset)
    key_history = check_key_history(key_history)
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
    key_history = check_key_history(key_history)
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


def describe_dataset_row(dataset: Any, row: int, key_history: int) -> str:
    """One dataset row in raw tokens (user, last ``key_history`` prefix items, target), for error messages."""
    user_tok, history_tok, history_len, target_tok = _dataset_example_tokens(dataset, key_history)
    history_tail = list(history_tok[row, key_history - history_len[row]:])
    return f"row {row}: user {user_tok[row]!r}, prefix (last {key_history}) {history_tail}, target {target_tok[row]!r}"


def user_fold(user_token: str, folds: int) -> int:
    """The cross-fitting fold (``0 .. folds - 1``) of a user, from the raw token only.

    fold = uint64( blake2b_8( utf8("fold" + RS + user) ) ) mod folds

    Stable across runs, machines and re-filtering (no internal ids), and about ``1 / folds`` of the users per fold.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if not isinstance(user_token, str) or user_token == "":
        raise ValueError(f"user_fold needs a non-empty str user token, got {user_token!r}")
    digest = hashlib.blake2b(("fold" + _FIELD_SEP + user_token).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=False) % int(folds)
