"""Import an external teacher's outputs (e.g. a BIGRec-style generative LLM) into a teacher artifact file.

Inputs (documented in ``docs/ARTIFACTS.md``):

- a rankings file, CSV or JSONL, one row per example: ``user``, ``prefix`` and ``target`` (raw tokens) or a
  ``key`` string ``"user|i1 i2 i3|target"``; ``items`` (ranked raw item tokens, best first); optional
  ``scores`` (higher is better) or ``distances`` (lower is better, stored as ``-distance`` with
  ``score_kind: neg_l2``); optional ``target_score`` / ``target_distance``; ``split`` (default ``train``);
- optionally item embeddings: a ``.npy`` [n, d] plus a ``.txt`` token list (one raw item token per line), or a
  CSV with an ``item_id`` column and one column per dimension.

The artifact is written through ``ArtifactWriter``, so it is validated exactly like an exported one.
Command line::

    python -m recbole_llmkd.jobs.importer --rankings F [--item-emb F --item-tokens F] --dataset NAME \\
        [--config_files "a.yaml b.yaml"] --output F
    run_recbole_llmkd.py import ...          (the same job, the same options)
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from recbole_llmkd.data.keys import DEFAULT_KEY_HISTORY, PAD_TOKEN, example_keys, item_tokens
from recbole_llmkd.data.validate import SPLITS
from recbole_llmkd.data.writer import ArtifactWriter, dataset_metadata
from recbole_llmkd.errors import RecboleLLMKDError

RANKING_COLUMNS = (
    "user", "prefix", "target", "key", "items", "scores", "distances", "target_score", "target_distance", "split",
)
KEY_SEPARATOR = "|"


class ImportFormatError(RecboleLLMKDError, ValueError):
    """A row of an external teacher's file is malformed; the message starts with ``file:line``."""


@dataclass
class RankingRow:
    """One parsed example of a rankings file (``where`` = ``"file:line"``)."""

    where: str
    split: str
    user: str
    prefix: list[str]
    target: str
    items: list[str]
    scores: Optional[list[float]] = None
    distances: Optional[list[float]] = None
    target_score: Optional[float] = None
    target_distance: Optional[float] = None


# ----------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------


def _token(value: Any, where: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ImportFormatError(f"{where}: {column!r} tokens must be strings (or integers), got {value!r}")
    token = str(value)
    if not token:
        raise ImportFormatError(f"{where}: {column!r} holds an empty token")
    return token


def _token_list(value: Any, where: str, column: str, is_csv: bool) -> list[str]:
    if is_csv:
        return value.split()
    if not isinstance(value, list):
        raise ImportFormatError(f"{where}: {column!r} must be a JSON list, got {type(value).__name__}")
    return [_token(item, where, column) for item in value]


def _number(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool):
        raise ImportFormatError(f"{where}: {column!r} must hold numbers, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ImportFormatError(f"{where}: {column!r} must hold numbers, got {value!r}") from error
    if not np.isfinite(number):
        raise ImportFormatError(f"{where}: {column!r} holds a non-finite number {value!r}")
    return number


def _number_list(value: Any, where: str, column: str, is_csv: bool) -> list[float]:
    if is_csv:
        value = value.split()
    elif not isinstance(value, list):
        raise ImportFormatError(f"{where}: {column!r} must be a JSON list of numbers, got {type(value).__name__}")
    return [_number(item, where, column) for item in value]


def _parse_key(value: Any, where: str) -> tuple[str, list[str], str]:
    if not isinstance(value, str) or value.count(KEY_SEPARATOR) != 2:
        raise ImportFormatError(
            f"{where}: 'key' must be a string 'user|i1 i2 i3|target' (two '|'), got {value!r}"
        )
    user, prefix, target = value.split(KEY_SEPARATOR)
    if not user.strip() or not target.strip():
        raise ImportFormatError(f"{where}: 'key' {value!r} needs a user and a target token")
    return user.strip(), prefix.split(), target.strip()


def _parse_row(record: dict, where: str, is_csv: bool) -> RankingRow:
    """Turn one CSV/JSONL record (column -> value; CSV values are strings) into a ``RankingRow``."""
    unknown = sorted(set(record) - set(RANKING_COLUMNS))
    if unknown:
        raise ImportFormatError(f"{where}: unknown columns {unknown}; known columns are {list(RANKING_COLUMNS)}")
    if is_csv:
        # An empty CSV cell of an optional column means "not given" (except prefix: an empty history).
        record = {k: v for k, v in record.items() if v is not None and (v != "" or k == "prefix")}

    given = [column for column in ("user", "prefix", "target") if column in record]
    if "key" in record:
        if given:
            raise ImportFormatError(f"{where}: give either 'key' or 'user'/'prefix'/'target', not both (got {given})")
        user, prefix, target = _parse_key(record["key"], where)
    else:
        missing = [column for column in ("user", "prefix", "target") if column not in record]
        if missing:
            raise ImportFormatError(f"{where}: missing {missing}; give 'user', 'prefix' and 'target', or 'key'")
        user = _token(record["user"], where, "user")
        prefix = _token_list(record["prefix"], where, "prefix", is_csv)
        target = _token(record["target"], where, "target")
    if "items" not in record:
        raise ImportFormatError(f"{where}: missing 'items' (the teacher's ranked item tokens, best first)")
    items = _token_list(record["items"], where, "items", is_csv)

    split = record.get("split", "train")
    if split not in SPLITS:
        raise ImportFormatError(f"{where}: 'split' must be one of {list(SPLITS)}, got {split!r}")
    if "scores" in record and "distances" in record:
        raise ImportFormatError(f"{where}: give 'scores' or 'distances', not both")
    row = RankingRow(where=where, split=split, user=user, prefix=prefix, target=target, items=items)
    for column in ("scores", "distances"):
        if column in record:
            values = _number_list(record[column], where, column, is_csv)
            if len(values) != len(items):
                raise ImportFormatError(
                    f"{where}: {column!r} has {len(values)} values but 'items' has {len(items)}; give one per item"
                )
            setattr(row, column, values)
    for column in ("target_score", "target_distance"):
        if column in record:
            setattr(row, column, _number(record[column], where, column))
    return row


def read_rankings(path: str | os.PathLike) -> list[RankingRow]:
    """Parse a rankings file (``.csv`` with a header, or ``.jsonl`` with one JSON object per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rankings file not found: {path}")
    suffix = path.suffix.lower()
    rows = []
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise ImportFormatError(f"{path}:1: empty CSV file; expected a header line")
            for record in reader:
                if None in record:
                    raise ImportFormatError(f"{path}:{reader.line_num}: more cells than header columns")
                rows.append(_parse_row(record, f"{path}:{reader.line_num}", is_csv=True))
    elif suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ImportFormatError(f"{where}: not valid JSON ({error})") from error
                if not isinstance(record, dict):
                    raise ImportFormatError(f"{where}: each line must be a JSON object")
                rows.append(_parse_row(record, where, is_csv=False))
    else:
        raise ImportFormatError(f"{path}: rankings must be a .csv or .jsonl file, got suffix {suffix!r}")
    if not rows:
        raise ImportFormatError(f"{path}: no rows")
    return rows


def read_item_embeddings(
    item_emb: str | os.PathLike, item_tokens_file: Optional[str | os.PathLike] = None
) -> tuple[list[str], np.ndarray]:
    """Item embeddings of an external teacher: returns raw tokens [n] and float32 [n, d].

    ``.npy`` [n, d] (loaded without pickle) with a ``.txt`` token list, one token per line; or a ``.csv`` with an
    ``item_id`` column and one numeric column per dimension.
    """
    item_emb = Path(item_emb)
    if not item_emb.is_file():
        raise FileNotFoundError(f"item embedding file not found: {item_emb}")
    suffix = item_emb.suffix.lower()
    if suffix == ".npy":
        if item_tokens_file is None:
            raise ValueError(f"{item_emb}: a .npy item embedding needs --item-tokens (a .txt file, one token per line)")
        vectors = np.load(item_emb, allow_pickle=False)
        tokens_path = Path(item_tokens_file)
        if not tokens_path.is_file():
            raise FileNotFoundError(f"item token file not found: {tokens_path}")
        tokens = []
        for line_number, line in enumerate(tokens_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                raise ImportFormatError(f"{tokens_path}:{line_number}: empty item token")
            tokens.append(line.strip())
        if vectors.ndim != 2 or vectors.shape[0] != len(tokens):
            raise ValueError(
                f"{item_emb}: expected shape [n_tokens={len(tokens)}, d] to match {tokens_path}, "
                f"got {list(vectors.shape)}"
            )
    elif suffix == ".csv":
        if item_tokens_file is not None:
            raise ValueError(f"{item_emb}: a CSV item embedding carries its tokens in 'item_id'; drop --item-tokens")
        tokens, vector_rows = [], []
        with item_emb.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or header[0] != "item_id" or len(header) < 2:
                raise ImportFormatError(f"{item_emb}:1: expected a header 'item_id,<dim columns...>', got {header}")
            for values in reader:
                where = f"{item_emb}:{reader.line_num}"
                if len(values) != len(header):
                    raise ImportFormatError(f"{where}: {len(values)} cells, the header has {len(header)}")
                tokens.append(_token(values[0], where, "item_id"))
                vector_rows.append([_number(value, where, "vector") for value in values[1:]])
        vectors = np.asarray(vector_rows, dtype=np.float32).reshape(len(tokens), len(header) - 1)
    else:
        raise ValueError(f"{item_emb}: item embeddings must be .npy (+ .txt tokens) or .csv, got suffix {suffix!r}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{item_emb}: the item token list has duplicates")
    if not np.issubdtype(vectors.dtype, np.number) or not np.isfinite(vectors).all():
        raise ValueError(f"{item_emb}: item embeddings must be finite numbers")
    return tokens, vectors.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_row_tokens(row: RankingRow, item_token2id: dict, user_token2id: dict, K: int) -> list[int]:
    """Validate one row against the dataset; returns the artifact item indices of its first K items."""
    if row.user not in user_token2id or row.user == PAD_TOKEN:
        raise ImportFormatError(f"{row.where}: unknown user token {row.user!r} (not in this dataset)")
    for column, tokens in (("prefix", row.prefix), ("target", [row.target]), ("items", row.items)):
        for token in tokens:
            if token not in item_token2id or token == PAD_TOKEN:
                raise ImportFormatError(
                    f"{row.where}: unknown item token {token!r} in {column!r} (not in this dataset)"
                )
    if len(row.items) < K:
        raise ImportFormatError(f"{row.where}: {len(row.items)} items, fewer than K={K}")
    if len(set(row.items)) != len(row.items):
        repeated = next(token for index, token in enumerate(row.items) if token in row.items[:index])
        raise ImportFormatError(f"{row.where}: item {repeated!r} is listed more than once in 'items'")
    return [item_token2id[token] for token in row.items[:K]]


def _score_source(rows: Sequence[RankingRow]) -> str:
    """'scores', 'distances' or 'rank' (neither given); every row must use the same one."""
    def source(row: RankingRow) -> str:
        return "scores" if row.scores is not None else "distances" if row.distances is not None else "rank"

    first = source(rows[0])
    for row in rows:
        if source(row) != first:
            raise ImportFormatError(
                f"{row.where}: this row gives {source(row)!r}, the first row ({rows[0].where}) gives {first!r}; "
                "every row must use the same"
            )
    return first


def _row_scores(row: RankingRow, source: str, K: int) -> list[float]:
    """Teacher scores of the first K items, higher is better: scores, -distances, or -rank (0, -1, -2, ...)."""
    if source == "scores":
        values = row.scores[:K]
    elif source == "distances":
        values = [-distance for distance in row.distances[:K]]
    else:
        values = [-float(rank) for rank in range(K)]
    if any(later > earlier for earlier, later in zip(values, values[1:])):
        kind = "'distances' must be non-decreasing" if source == "distances" else "'scores' must be non-increasing"
        raise ImportFormatError(f"{row.where}: {kind} along 'items' (best item first)")
    return values


def _row_target_score(row: RankingRow, source: str) -> Optional[float]:
    if source == "distances":
        if row.target_score is not None:
            raise ImportFormatError(f"{row.where}: with 'distances' give 'target_distance', not 'target_score'")
        return None if row.target_distance is None else -row.target_distance
    if row.target_distance is not None:
        raise ImportFormatError(f"{row.where}: 'target_distance' needs 'distances'; with scores give 'target_score'")
    return row.target_score


def _item_text_emb(
    dataset_tokens: list[str], emb_tokens: list[str], vectors: np.ndarray, where: str
) -> tuple[torch.Tensor, int]:
    """Rows of ``vectors`` in artifact item order, float32 [n_items, d] with row 0 zeros; and the number of
    embedding tokens that are not items of the dataset (ignored)."""
    row_of_token = {token: row for row, token in enumerate(emb_tokens)}
    missing = [token for token in dataset_tokens[1:] if token not in row_of_token]
    if missing:
        raise ValueError(
            f"{where}: {len(missing):,} of the dataset's {len(dataset_tokens) - 1:,} items have no embedding "
            f"(first few: {missing[:5]})"
        )
    item_text_emb = torch.zeros(len(dataset_tokens), vectors.shape[1], dtype=torch.float32)  # [n_items, d]
    source_rows = [row_of_token[token] for token in dataset_tokens[1:]]
    item_text_emb[1:] = torch.from_numpy(vectors[source_rows])
    n_extra = len(set(emb_tokens) - set(dataset_tokens[1:]))
    return item_text_emb, n_extra


def import_teacher(
    rankings: str | os.PathLike,
    item_emb: Optional[str | os.PathLike] = None,
    item_tokens_file: Optional[str | os.PathLike] = None,
    *,
    dataset: Any,
    output: str | os.PathLike,
    K: Optional[int] = None,
    key_history: int = DEFAULT_KEY_HISTORY,
    teacher_name: str = "external",
    chunk_rows: int = 4096,
    overwrite: bool = False,
) -> Path:
    """Convert an external teacher's rankings (and item embeddings) into a teacher artifact file.

    ``dataset`` is a built RecBole Dataset (any split: only its name, item and user tokens are used). ``K``
    defaults to the number of items of the first row, and then every row must list exactly that many; with an
    explicit ``K`` rows may list more (the rest is dropped). Returns the path of the written artifact.
    """
    rankings = Path(rankings)
    rows = read_rankings(rankings)
    source = _score_source(rows)
    if K is None:
        K = len(rows[0].items)
        for row in rows:
            if len(row.items) != K:
                raise ImportFormatError(
                    f"{row.where}: {len(row.items)} items, the first row has {K}; pass K to use the first K of each row"
                )

    teacher = {
        "name": teacher_name,
        "source": "import",
        "score_source": source,
        "rankings": {"file": rankings.name, "sha256": _sha256_file(rankings)},
    }
    dataset_tokens = item_tokens(dataset)
    item_token2id = {token: index for index, token in enumerate(dataset_tokens)}  # artifact index = internal id
    user_token2id = dataset.field2token_id[dataset.uid_field]

    item_text_emb = None
    if item_emb is not None:
        emb_tokens, vectors = read_item_embeddings(item_emb, item_tokens_file)
        item_text_emb, n_extra = _item_text_emb(dataset_tokens, emb_tokens, vectors, str(item_emb))
        teacher["item_emb"] = {
            "file": Path(item_emb).name, "sha256": _sha256_file(Path(item_emb)), "extra_tokens": n_extra,
        }
    elif item_tokens_file is not None:
        raise ValueError("item_tokens_file was given without item_emb")
    metadata = dataset_metadata(
        dataset, key_history=key_history, score_kind="neg_l2" if source == "distances" else "logit", teacher=teacher
    )

    split_tensors: dict[str, dict[str, torch.Tensor]] = {}
    for split in SPLITS:
        split_rows = [row for row in rows if row.split == split]
        if not split_rows:
            continue
        topk_ids = [_check_row_tokens(row, item_token2id, user_token2id, K) for row in split_rows]
        topk_scores = [_row_scores(row, source, K) for row in split_rows]
        target_scores = [_row_target_score(row, source) for row in split_rows]
        keys = example_keys(
            [row.user for row in split_rows], [row.prefix for row in split_rows], [row.target for row in split_rows],
            key_history,
        )
        first_row_of_key: dict[int, RankingRow] = {}
        for row, key in zip(split_rows, keys.tolist()):
            if key in first_row_of_key:
                raise ImportFormatError(
                    f"{row.where}: same example (user, last {key_history} prefix items, target) as "
                    f"{first_row_of_key[key].where} in split {split!r}"
                )
            first_row_of_key[key] = row
        tensors = {
            "key": torch.from_numpy(keys),  # [N]
            "topk_ids": torch.tensor(topk_ids, dtype=torch.int64),  # [N, K]
            "topk_scores": torch.tensor(topk_scores, dtype=torch.float32),  # [N, K]
        }
        given = [score is not None for score in target_scores]
        if any(given):
            if not all(given):
                row = split_rows[given.index(False)]
                raise ImportFormatError(
                    f"{row.where}: target score/distance missing; give it in every row of split {split!r} or none"
                )
            tensors["target_score"] = torch.tensor(target_scores, dtype=torch.float32)  # [N]
        split_tensors[split] = tensors
    if "train" not in split_tensors:
        raise ImportFormatError(f"{rankings}: no row of split 'train'; a teacher artifact needs the training examples")

    writer = ArtifactWriter(
        output, metadata, {split: len(t["key"]) for split, t in split_tensors.items()}, K,
        chunk_rows=chunk_rows, overwrite=overwrite,
    )
    for split, tensors in split_tensors.items():
        for start, end in writer.pending_ranges(split):
            writer.write_chunk(split, start, {name: tensor[start:end] for name, tensor in tensors.items()})
    if item_text_emb is not None and "item_text_emb" not in writer.done_globals():
        writer.write_global("item_text_emb", item_text_emb)
    return writer.finalize()


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def build_dataset(dataset_name: str, config_files: Sequence[str] = (), model: str = "SASRec") -> Any:
    """Load (and filter) a RecBole dataset to check item tokens against (the plugin's Config: no argv parsing)."""
    from recbole.data import create_dataset

    from recbole_llmkd.config import Config

    config = Config(model=model, dataset=dataset_name, config_file_list=list(config_files), config_dict={"gpu_id": ""})
    return create_dataset(config)


IMPORTER_PROG = "python -m recbole_llmkd.jobs.importer"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m recbole_llmkd.jobs.importer ...``: the ``import`` job of ``recbole_llmkd.cli``
    (``run_recbole_llmkd.py import``); bad input is one ``error:`` line and exit status 2."""
    from recbole_llmkd.cli import data_job_main

    return data_job_main("import", argv, IMPORTER_PROG)


if __name__ == "__main__":
    sys.exit(main())
