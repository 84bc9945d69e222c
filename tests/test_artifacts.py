"""Teacher artifact format: example keys, resumable writer, validated loader, alignment with a RecBole dataset."""
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import recbole_llmkd  # noqa: F401  (numpy shims before RecBole)
from recbole_llmkd.data.artifacts import (
    METADATA_KEY,
    PAD_TOKEN,
    ArtifactError,
    ArtifactMismatchError,
    ArtifactWriter,
    dataset_example_keys,
    dataset_fingerprint,
    dataset_metadata,
    example_key,
    example_keys,
    item_tokens,
    load_artifacts,
)





# ----------------------------------------------------------------------------------------------------------
# Example keys
# ----------------------------------------------------------------------------------------------------------


def test_example_key_fixed_values():
    # Values pinned at format_version 1: changing them breaks every artifact already written.
    assert example_key("196", ["242", "302"], "377", 10) == 3088390448182580703
    assert example_key("1", [], "10", 10) == 5344632874416468426
    assert example_key("u1", ["i1", "i2", "i3"], "i4", 2) == -528635002133700688


def test_example_key_is_blake2b_of_the_documented_payload():
    payload = "u1\x1ei2\x1fi3\x1ei4".encode("utf-8")
    expected = int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little", signed=True)
    assert example_key("u1", ["i1", "i2", "i3"], "i4", 2) == expected


def test_example_key_order_and_history_sensitivity():
    base = example_key("7", ["1", "2", "3"], "4", 10)
    assert example_key("7", ["2", "1", "3"], "4", 10) != base  # prefix order matters
    assert example_key("4", ["1", "2", "3"], "7", 10) != base  # user and target are not interchangeable
    assert example_key("7", ["1", "2"], "3", 10) != example_key("7", ["1"], "2", 10)
    assert example_key("7", ["12", "3"], "4", 10) != example_key("7", ["1", "23"], "4", 10)  # no ambiguous join
    # Only the last key_history items count.
    assert example_key("7", ["9", "1", "2", "3"], "4", 3) == example_key("7", ["1", "2", "3"], "4", 3)
    assert example_key("7", ["9", "1", "2", "3"], "4", 4) != example_key("7", ["1", "2", "3"], "4", 4)


def test_example_key_rejects_bad_input():
    with pytest.raises(ValueError, match="separator"):
        example_key("7", ["1\x1f2"], "4", 10)
    with pytest.raises(ValueError, match="non-empty"):
        example_key("7", [""], "4", 10)
    with pytest.raises(ValueError, match="key_history"):
        example_key("7", ["1"], "4", 0)
    with pytest.raises(ValueError, match="must be str"):
        example_key(7, ["1"], "4", 10)


def test_example_keys_matches_scalar():
    users, prefixes, targets = ["a", "b", "c"], [["1", "2"], [], ["3", "4", "5"]], ["9", "8", "7"]
    keys = example_keys(users, prefixes, targets, 2)
    assert keys.dtype == np.int64
    assert keys.tolist() == [example_key(u, p, t, 2) for u, p, t in zip(users, prefixes, targets)]
    with pytest.raises(ValueError, match="one user, prefix and target"):
        example_keys(users, prefixes[:2], targets, 2)


def test_dataset_example_keys_follow_raw_tokens(ml100k):
    train, valid, _ = ml100k
    keys = dataset_example_keys(train, 10)
    assert keys.shape == (97171,) and keys.dtype == np.int64
    assert len(np.unique(keys)) == 97171
    item_vocab, user_vocab = train.field2id_token["item_id"], train.field2id_token["user_id"]
    seq, seq_len = train.inter_feat["item_id_list"], train.inter_feat["item_length"]
    for row in (0, 5, int(torch.argmax(seq_len)), 97170):
        n = int(seq_len[row])
        prefix = [item_vocab[i] for i in seq[row, :n].tolist()]
        user = user_vocab[int(train.inter_feat["user_id"][row])]
        target = item_vocab[int(train.inter_feat["item_id"][row])]
        expected = example_key(user, prefix, target, 10)
        assert keys[row] == expected
    # A shorter key history uses only the last items.
    row = int(torch.argmax(seq_len))
    prefix = [item_vocab[i] for i in seq[row, : int(seq_len[row])].tolist()]
    user, target = user_vocab[int(train.inter_feat["user_id"][row])], item_vocab[int(train.inter_feat["item_id"][row])]
    assert dataset_example_keys(train, 3)[row] == example_key(user, prefix[-3:], target, 3)
    assert len(dataset_example_keys(valid, 10)) == 943


def test_dataset_example_keys_needs_enough_history(ml100k):
    with pytest.raises(ValueError, match="MAX_ITEM_LIST_LENGTH=10.*key_history=11"):
        dataset_example_keys(ml100k[0], 11)


def test_fingerprint_and_item_tokens(ml100k):
    train = ml100k[0]
    tokens = item_tokens(train)
    assert tokens[0] == PAD_TOKEN and len(tokens) == 1683
    assert tokens == [str(t) for t in train.field2id_token["item_id"]]
    fingerprint = dataset_fingerprint(train)
    assert fingerprint == {
        "dataset": "ml-100k",
        "n_users": 943,
        "n_items": 1682,
        "item_tokens_sha256": hashlib.sha256("\n".join(tokens).encode()).hexdigest(),
        "n_interactions": 97171,
    }


# ----------------------------------------------------------------------------------------------------------
# Writer and loader on a small synthetic artifact
# ----------------------------------------------------------------------------------------------------------

SMALL_TOKENS = [PAD_TOKEN] + [f"i{n}" for n in range(1, 21)]  # 20 items


def small_metadata(**changes):
    metadata = {
        "dataset": "toy",
        "item_tokens": list(SMALL_TOKENS),
        "key_history": 10,
        "score_kind": "logit",
        "teacher": {"name": "toy-teacher"},
    }
    metadata.update(changes)
    return metadata


def small_rows(n_rows, K, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "key": torch.arange(n_rows, dtype=torch.int64) * 1000 + seed,  # unique
        "topk_ids": torch.randint(1, len(SMALL_TOKENS), (n_rows, K), generator=generator),
        "topk_scores": torch.sort(torch.randn(n_rows, K, generator=generator), descending=True).values,
        "confidence": torch.rand(n_rows, K, generator=generator),
        "user_state": torch.randn(n_rows, 3, generator=generator),
    }


SMALL_SPLITS = {"train": 10, "valid": 3}
SMALL_ROWS = {"train": small_rows(10, 4, seed=1), "valid": small_rows(3, 4, seed=2)}
SMALL_EMB = torch.cat([torch.zeros(1, 5), torch.randn(20, 5, generator=torch.Generator().manual_seed(3))])


def write_small(path, chunk_rows=4, stop_after_chunks=None):
    """Write the small artifact; with ``stop_after_chunks`` stop (as if interrupted) and return the writer."""
    writer = ArtifactWriter(path, small_metadata(), SMALL_SPLITS, K=4, chunk_rows=chunk_rows)
    written = 0
    for split, rows in SMALL_ROWS.items():
        for start, end in writer.pending_ranges(split):
            if stop_after_chunks is not None and written == stop_after_chunks:
                return writer
            writer.write_chunk(split, start, {name: tensor[start:end] for name, tensor in rows.items()})
            written += 1
    if "item_text_emb" not in writer.done_globals():
        writer.write_global("item_text_emb", SMALL_EMB)
    return writer.finalize()


def test_writer_load_round_trip(tmp_path):
    path = write_small(tmp_path / "teacher.safetensors")
    assert path.is_file() and not (tmp_path / "teacher.safetensors.partial").exists()
    artifacts = load_artifacts(path)
    for split, rows in SMALL_ROWS.items():
        loaded = artifacts.split_tensors(split)
        assert sorted(loaded) == sorted(rows)
        for name, tensor in rows.items():
            assert loaded[name].dtype == (torch.int64 if name in ("key", "topk_ids") else torch.float32)
            assert torch.equal(loaded[name], tensor)
    assert torch.equal(artifacts.item_text_emb, SMALL_EMB)
    metadata = artifacts.metadata
    assert metadata["format_version"] == 1 and metadata["created"]
    assert metadata["splits"] == {"train": {"n_rows": 10, "K": 4}, "valid": {"n_rows": 3, "K": 4}}
    assert metadata["has"] == sorted(
        ["item_text_emb", "train.confidence", "train.user_state", "valid.confidence", "valid.user_state"]
    )
    assert artifacts.K == 4 and artifacts.item_tokens == SMALL_TOKENS and artifacts.teacher == {"name": "toy-teacher"}
    # All metadata is one JSON string under "recbole_llmkd" in the safetensors header.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.metadata()) == [METADATA_KEY]
        assert json.loads(handle.metadata()[METADATA_KEY])["dataset"] == "toy"


def test_interrupted_writer_resumes_to_identical_tensors(tmp_path):
    reference = load_file(str(write_small(tmp_path / "reference.safetensors")))
    path = tmp_path / "resumed.safetensors"
    interrupted = write_small(path, stop_after_chunks=2)
    assert interrupted.done_ranges("train") == [(0, 4), (4, 8)]
    del interrupted
    # A crash while writing a chunk leaves only a temporary file, which is ignored.
    (tmp_path / "resumed.safetensors.partial" / ".train.8-10.safetensors.tmp-999").write_bytes(b"half a chunk")

    resumed = ArtifactWriter(path, small_metadata(), SMALL_SPLITS, K=4, chunk_rows=4)
    assert resumed.next_start("train") == 8
    assert resumed.pending_ranges("train") == [(8, 10)]
    assert resumed.pending_ranges("valid") == [(0, 3)]
    assert not resumed.is_complete()
    write_small(path)  # a new writer finishes the export
    resumed_tensors = load_file(str(path))
    assert sorted(resumed_tensors) == sorted(reference)
    for name, tensor in reference.items():
        assert torch.equal(resumed_tensors[name], tensor), name


def test_resume_with_different_metadata_is_refused(tmp_path):
    path = tmp_path / "teacher.safetensors"
    write_small(path, stop_after_chunks=1)
    with pytest.raises(ArtifactError, match=r"different metadata \(differs in: metadata.teacher\)"):
        ArtifactWriter(path, small_metadata(teacher={"name": "other"}), SMALL_SPLITS, K=4)
    with pytest.raises(ArtifactError, match="differs in: splits"):
        ArtifactWriter(path, small_metadata(), {"train": 11, "valid": 3}, K=4)


def test_finalize_with_missing_chunk_names_split_and_rows(tmp_path):
    path = tmp_path / "teacher.safetensors"
    writer = ArtifactWriter(path, small_metadata(), SMALL_SPLITS, K=4, chunk_rows=4)
    for split, rows in SMALL_ROWS.items():
        for start, end in writer.pending_ranges(split):
            if (split, start) != ("train", 4):
                writer.write_chunk(split, start, {name: tensor[start:end] for name, tensor in rows.items()})
    assert writer.next_start("train") == 4
    with pytest.raises(ArtifactError, match=r"split 'train' is missing 4 of 10 rows \(ranges, end exclusive: 4-8\)"):
        writer.finalize()
    assert not path.exists()


def test_finalize_rejects_overlapping_chunks(tmp_path):
    writer = ArtifactWriter(tmp_path / "t.safetensors", small_metadata(), {"train": 6}, K=4)
    rows = {name: tensor[:4] for name, tensor in SMALL_ROWS["train"].items()}
    writer.write_chunk("train", 0, rows)
    writer.write_chunk("train", 4, {name: tensor[:2] for name, tensor in rows.items()})
    # A stray chunk (e.g. from a second exporter with another chunk size) covering rows twice.
    partial = tmp_path / "t.safetensors.partial"
    (partial / "train.2-6.safetensors").write_bytes((partial / "train.0-4.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match="split 'train' has overlapping chunks, e.g. rows 0-4 and 2-6"):
        writer.finalize()


def test_write_chunk_rejects_bad_chunks(tmp_path):
    writer = ArtifactWriter(tmp_path / "t.safetensors", small_metadata(), SMALL_SPLITS, K=4)
    rows = {name: tensor[:4] for name, tensor in SMALL_ROWS["train"].items()}
    writer.write_chunk("train", 0, rows)
    with pytest.raises(ArtifactError, match="overlap the chunk already written for rows 0-4"):
        writer.write_chunk("train", 2, rows)
    with pytest.raises(ArtifactError, match="run past the split's 10 rows"):
        writer.write_chunk("train", 8, rows)
    with pytest.raises(ArtifactError, match=r"'topk_scores' must have shape \[4, 4\]"):
        writer.write_chunk("train", 4, {**rows, "topk_scores": rows["topk_scores"][:, :3]})
    with pytest.raises(ArtifactError, match=r"'topk_ids' must lie in \[0, 21\)"):
        writer.write_chunk("train", 4, {**rows, "topk_ids": rows["topk_ids"] + 20})
    with pytest.raises(ArtifactError, match="non-finite"):
        writer.write_chunk("train", 4, {**rows, "topk_scores": rows["topk_scores"] * float("nan")})
    with pytest.raises(ArtifactError, match="same tensors"):
        writer.write_chunk("train", 4, {name: t for name, t in rows.items() if name != "confidence"})
    with pytest.raises(ArtifactError, match="unknown split 'test'"):
        writer.write_chunk("test", 0, rows)
    with pytest.raises(ArtifactError, match="row 0 .* must be zeros"):
        writer.write_global("item_text_emb", torch.ones(21, 5))


def test_writer_rejects_bad_setup(tmp_path):
    with pytest.raises(ArtifactError, match="K=21 is larger than the number of items"):
        ArtifactWriter(tmp_path / "a.safetensors", small_metadata(), SMALL_SPLITS, K=21)
    with pytest.raises(ArtifactError, match="must include 'train'"):
        ArtifactWriter(tmp_path / "b.safetensors", small_metadata(), {"valid": 3}, K=4)
    with pytest.raises(ArtifactError, match="score_kind"):
        ArtifactWriter(tmp_path / "c.safetensors", small_metadata(score_kind="prob"), SMALL_SPLITS, K=4)
    with pytest.raises(ArtifactError, match=r"item_tokens\[0\] must be '\[PAD\]'"):
        ArtifactWriter(tmp_path / "d.safetensors", small_metadata(item_tokens=SMALL_TOKENS[1:]), SMALL_SPLITS, K=4)
    with pytest.raises(ArtifactError, match="set by the writer"):
        ArtifactWriter(tmp_path / "e.safetensors", small_metadata(format_version=1), SMALL_SPLITS, K=4)
    path = write_small(tmp_path / "done.safetensors")
    with pytest.raises(FileExistsError, match="already exists"):
        ArtifactWriter(path, small_metadata(), SMALL_SPLITS, K=4)


def test_finalize_rejects_duplicate_keys(tmp_path):
    writer = ArtifactWriter(tmp_path / "t.safetensors", small_metadata(), {"train": 3}, K=4)
    rows = {name: tensor[:3] for name, tensor in SMALL_ROWS["train"].items()}
    writer.write_chunk("train", 0, {**rows, "key": torch.tensor([5, 6, 5])})
    with pytest.raises(ArtifactError, match="1 duplicate example keys .*key 5 at rows \\[0, 2\\]"):
        writer.finalize()


def rewrite(source, target, metadata_change=None, tensor_change=None):
    """Copy an artifact file, editing its metadata and/or tensors (to make files the writer would refuse)."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    tensors = load_file(str(source))
    if metadata_change:
        metadata_change(metadata)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(metadata)})
    return target


def test_load_errors(tmp_path):
    good = write_small(tmp_path / "good.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_artifacts(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("this is not a safetensors file")
    with pytest.raises(ArtifactError, match="is not a safetensors file"):
        load_artifacts(tmp_path / "text.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ArtifactError, match="without 'recbole_llmkd' metadata"):
        load_artifacts(tmp_path / "plain.safetensors")

    def version_2(metadata):
        metadata["format_version"] = 2

    with pytest.raises(ArtifactError, match="unsupported format_version 2; this recbole_llmkd reads format_version 1"):
        load_artifacts(rewrite(good, tmp_path / "v2.safetensors", metadata_change=version_2))

    def more_rows(metadata):
        metadata["splits"]["train"]["n_rows"] = 11

    with pytest.raises(ArtifactError, match="split 'train': 'key' has 10 rows, the metadata says 11"):
        load_artifacts(rewrite(good, tmp_path / "rows.safetensors", metadata_change=more_rows))

    def short_scores(tensors):
        tensors["train.topk_scores"] = tensors["train.topk_scores"][:5]

    with pytest.raises(ArtifactError, match=r"'topk_scores' must have shape \[10, 4\]"):
        load_artifacts(rewrite(good, tmp_path / "shape.safetensors", tensor_change=short_scores))

    def few_items(metadata):
        metadata["item_tokens"] = metadata["item_tokens"][:4]  # 3 items < K = 4

    with pytest.raises(ArtifactError, match="K=4 is larger than the number of items \\(3"):
        load_artifacts(rewrite(good, tmp_path / "k.safetensors", metadata_change=few_items))

    def bad_ids(tensors):
        tensors["valid.topk_ids"][0, 0] = 21

    with pytest.raises(ArtifactError, match=r"split 'valid': 'topk_ids' must lie in \[0, 21\)"):
        load_artifacts(rewrite(good, tmp_path / "ids.safetensors", tensor_change=bad_ids))

    def undeclared(metadata):
        metadata["has"] = ["item_text_emb"]

    with pytest.raises(ArtifactError, match="'has' lists"):
        load_artifacts(rewrite(good, tmp_path / "has.safetensors", metadata_change=undeclared))


# ----------------------------------------------------------------------------------------------------------
# Alignment with ml-100k
# ----------------------------------------------------------------------------------------------------------

K_ML = 5


def build_ml100k_artifact(path, train, row_order=None, drop_rows=0, item_token_change=None, dataset_name=None):
    """A synthetic teacher artifact for ml-100k's train split.

    The artifact's item order is sorted by raw token (not RecBole's first-appearance order), so alignment must
    remap ids. Teacher row r lists the example's target first, then 4 items by internal id; its scores are
    (r, r - 1, ...) so that a row can be recognised after alignment.
    """
    metadata = dataset_metadata(train, key_history=10, teacher={"name": "synthetic"})
    dataset_tokens = metadata["item_tokens"]
    artifact_tokens = [PAD_TOKEN] + sorted(dataset_tokens[1:], key=int)
    if item_token_change:
        artifact_tokens = item_token_change(artifact_tokens)
    if dataset_name:
        metadata["dataset"] = dataset_name
    metadata["item_tokens"] = artifact_tokens
    artifact_index = {token: index for index, token in enumerate(artifact_tokens)}

    n_rows = len(train.inter_feat)
    target_ids = train.inter_feat["item_id"]  # [N] internal ids
    internal_topk = torch.stack([target_ids] + [(target_ids + k) % (train.item_num - 1) + 1 for k in range(1, K_ML)], 1)
    token_to_artifact = torch.tensor([artifact_index.get(token, 0) for token in dataset_tokens])  # [item_num]
    tensors = {
        "key": torch.from_numpy(dataset_example_keys(train, 10)),
        "topk_ids": token_to_artifact[internal_topk],  # [N, K] artifact indices
        "topk_scores": torch.arange(n_rows, dtype=torch.float32)[:, None] - torch.arange(K_ML, dtype=torch.float32),
        "target_score": torch.arange(n_rows, dtype=torch.float32) * 2,
        "user_state": torch.arange(n_rows, dtype=torch.float32)[:, None].repeat(1, 2),
    }
    order = torch.arange(n_rows) if row_order is None else row_order
    order = order[drop_rows:]
    tensors = {name: tensor[order] for name, tensor in tensors.items()}
    item_text_emb = torch.zeros(len(artifact_tokens), 2)
    item_text_emb[1:, 0] = torch.tensor([float(token) for token in artifact_tokens[1:]])  # row value = raw token
    writer = ArtifactWriter(path, metadata, {"train": len(order)}, K=K_ML, chunk_rows=20000)
    for start, end in writer.pending_ranges("train"):
        writer.write_chunk("train", start, {name: tensor[start:end] for name, tensor in tensors.items()})
    writer.write_global("item_text_emb", item_text_emb)
    return writer.finalize()


@pytest.fixture(scope="module")
def ml100k_artifact(ml100k, tmp_path_factory):
    return build_ml100k_artifact(tmp_path_factory.mktemp("artifact") / "ml100k.safetensors", ml100k[0])


def test_align_follows_dataset_rows_and_ids(ml100k, ml100k_artifact):
    train = ml100k[0]
    aligned = load_artifacts(ml100k_artifact).align(train)
    n_rows = len(train.inter_feat)
    assert aligned.K == K_ML and aligned.topk.shape == (n_rows, K_ML) and aligned.topk.dtype == torch.int64
    assert aligned.present.all()
    # Column 0 is the target, in current internal ids; the scores identify the row.
    assert torch.equal(aligned.topk[:, 0], train.inter_feat["item_id"])
    assert torch.equal(aligned.topk[:, 1], (train.inter_feat["item_id"] + 1) % (train.item_num - 1) + 1)
    assert torch.equal(aligned.scores[:, 0], torch.arange(n_rows, dtype=torch.float32))
    assert torch.equal(aligned.target_score, torch.arange(n_rows, dtype=torch.float32) * 2)
    assert aligned.user_state.shape == (n_rows, 2) and aligned.confidence is None
    # item_text_emb rows follow internal ids: row i holds float(raw token of i).
    assert aligned.item_text_emb.shape == (train.item_num, 2)
    expected = torch.tensor([0.0] + [float(t) for t in train.field2id_token["item_id"][1:]])
    assert torch.equal(aligned.item_text_emb[:, 0], expected)
    truncated = aligned.truncate(3)
    assert truncated.K == 3 and torch.equal(truncated.topk, aligned.topk[:, :3])
    assert torch.equal(truncated.scores, aligned.scores[:, :3])
    assert torch.equal(truncated.target_score, aligned.target_score)
    with pytest.raises(ValueError, match="1 <= k <= K=5"):
        aligned.truncate(6)


def test_align_after_shuffling_artifact_rows(ml100k, ml100k_artifact, tmp_path):
    train = ml100k[0]
    permutation = torch.randperm(len(train.inter_feat), generator=torch.Generator().manual_seed(0))
    shuffled = build_ml100k_artifact(tmp_path / "shuffled.safetensors", train, row_order=permutation)
    assert not torch.equal(load_file(str(shuffled))["train.key"], load_file(str(ml100k_artifact))["train.key"])
    reference = load_artifacts(ml100k_artifact).align(train)
    aligned = load_artifacts(shuffled).align(train)
    for name in ("topk", "scores", "target_score", "user_state", "item_text_emb"):
        assert torch.equal(getattr(aligned, name), getattr(reference, name)), name


def test_align_other_dataset_name(ml100k, tmp_path):
    path = build_ml100k_artifact(tmp_path / "renamed.safetensors", ml100k[0], dataset_name="ml-1m")
    with pytest.raises(
        ArtifactMismatchError,
        match="was built for dataset 'ml-1m' with 1,682 items; this dataset 'ml-100k' has 1,682 items: .*export "
              "the teacher trained on 'ml-100k', or pass --dataset=ml-1m",
    ):
        load_artifacts(path).align(ml100k[0])


def test_align_dropped_item_token(ml100k, tmp_path):
    def drop_item_50(tokens):
        return [token for token in tokens if token != "50"]

    path = build_ml100k_artifact(tmp_path / "dropped.safetensors", ml100k[0], item_token_change=drop_item_50)
    with pytest.raises(ArtifactMismatchError) as error:
        load_artifacts(path).align(ml100k[0])
    message = str(error.value)
    assert "with 1,681 items; this dataset 'ml-100k' has 1,682 items" in message
    assert "0 only in the artifact" in message and "1 only in this dataset (first few: ['50'])" in message


def test_align_fewer_rows(ml100k, tmp_path):
    train = ml100k[0]
    path = build_ml100k_artifact(tmp_path / "fewer.safetensors", train, drop_rows=1000)
    artifacts = load_artifacts(path)
    user = train.field2id_token["user_id"][int(train.inter_feat["user_id"][0])]
    target = train.field2id_token["item_id"][int(train.inter_feat["item_id"][0])]
    with pytest.raises(ArtifactMismatchError) as error:
        artifacts.align(train)
    message = str(error.value)
    assert "1,000 of 97,171 rows of this dataset have no teacher row in split 'train'" in message
    assert f"first missing example row 0: user '{user}'" in message and f"target '{target}'" in message
    partial = artifacts.align(train, required=False)
    assert int(partial.present.sum()) == 96171 and not partial.present[:1000].any()
    assert (partial.topk[:1000] == 0).all() and (partial.scores[:1000] == 0).all()
    assert torch.equal(partial.topk[1000:, 0], train.inter_feat["item_id"][1000:])
    with pytest.raises(ArtifactError, match="no split 'valid' in the artifact"):
        artifacts.align(ml100k[1], split="valid")


def test_align_other_split_has_no_rows(ml100k, ml100k_artifact):
    # The valid split's examples are not in a train-only artifact: every row is reported missing.
    artifacts = load_artifacts(ml100k_artifact)
    with pytest.raises(ArtifactMismatchError, match="943 of 943 rows"):
        artifacts.align(ml100k[1], split="train")
