"""Importer for external teachers: CSV / JSONL rankings and item embeddings -> a teacher artifact that aligns."""
import csv
import json

import numpy as np
import pytest
import torch

import recbole_llmkd  # noqa: F401  (numpy shims before RecBole)
from recbole_llmkd.data.artifacts import load_artifacts
from recbole_llmkd.data.importer import main  # the job under its former program name (a compatibility module)
from recbole_llmkd.jobs.importer import ImportFormatError, import_teacher, read_item_embeddings

K = 5
N_TRAIN_ROWS = 30




def examples(dataset, rows):
    """Raw-token examples of some rows: user, prefix (whole stored history), target, and a teacher list whose
    first item is the target followed by the next items in raw-token order."""
    item_vocab, user_vocab = dataset.field2id_token["item_id"], dataset.field2id_token["user_id"]
    out = []
    for row in rows:
        n = int(dataset.inter_feat["item_length"][row])
        target = item_vocab[int(dataset.inter_feat["item_id"][row])]
        items = [target] + [str((int(target) + k - 1) % 1682 + 1) for k in range(1, K)]
        out.append(
            {
                "user": user_vocab[int(dataset.inter_feat["user_id"][row])],
                "prefix": [item_vocab[i] for i in dataset.inter_feat["item_id_list"][row, :n].tolist()],
                "target": target,
                "items": items,
                "scores": [float(row) - k for k in range(K)],
            }
        )
    return out


def internal_ids(dataset, tokens):
    return torch.tensor([dataset.field2token_id["item_id"][token] for token in tokens])


def write_csv(path, records, columns=("split", "user", "prefix", "target", "items", "scores")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for record in records:
            cells = [record.get(column, "") for column in columns]
            writer.writerow([" ".join(map(str, cell)) if isinstance(cell, list) else cell for cell in cells])
    return path


@pytest.fixture(scope="module")
def fixture_records(ml100k):
    """Every valid-split example plus the first N_TRAIN_ROWS train examples."""
    train, valid, _ = ml100k
    records = [dict(r, split="train") for r in examples(train, range(N_TRAIN_ROWS))]
    records += [dict(r, split="valid") for r in examples(valid, range(len(valid.inter_feat)))]
    return records


def test_csv_import_aligns(ml100k, fixture_records, tmp_path):
    train, valid, _ = ml100k
    rankings = write_csv(tmp_path / "rankings.csv", fixture_records)
    path = import_teacher(rankings, dataset=train, output=tmp_path / "external.safetensors", teacher_name="bigrec")
    artifacts = load_artifacts(path)
    assert artifacts.score_kind == "logit" and artifacts.K == K
    assert artifacts.metadata["splits"] == {"train": {"n_rows": N_TRAIN_ROWS, "K": K}, "valid": {"n_rows": 943, "K": K}}
    assert artifacts.teacher["name"] == "bigrec" and artifacts.teacher["score_source"] == "scores"

    aligned_valid = artifacts.align(valid, split="valid")  # every valid row is covered
    assert torch.equal(aligned_valid.topk[:, 0], valid.inter_feat["item_id"])
    expected_topk = torch.stack([internal_ids(valid, r["items"]) for r in fixture_records[N_TRAIN_ROWS:]])
    assert torch.equal(aligned_valid.topk, expected_topk)
    assert torch.equal(aligned_valid.scores[:, 0], torch.arange(943, dtype=torch.float32))

    aligned_train = artifacts.align(train, required=False)  # only the first rows are covered
    assert aligned_train.present[:N_TRAIN_ROWS].all() and int(aligned_train.present.sum()) == N_TRAIN_ROWS
    assert torch.equal(aligned_train.topk[:N_TRAIN_ROWS, 0], train.inter_feat["item_id"][:N_TRAIN_ROWS])
    assert torch.equal(aligned_train.scores[:N_TRAIN_ROWS, 1], torch.arange(N_TRAIN_ROWS, dtype=torch.float32) - 1)


def test_jsonl_import_with_keys_distances_and_npy_embeddings(ml100k, fixture_records, tmp_path):
    train, valid, _ = ml100k
    lines = []
    for index, record in enumerate(fixture_records):
        line = {"items": record["items"], "distances": [float(k) for k in range(K)], "split": record["split"]}
        if index % 2:  # half the rows use an explicit key string
            line["key"] = f"{record['user']}|{' '.join(record['prefix'])}|{record['target']}"
        else:
            line.update(user=record["user"], prefix=record["prefix"], target=record["target"])
        lines.append(json.dumps(line))
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text("\n".join(lines) + "\n")

    tokens = [str(t) for t in range(1682, 0, -1)] + ["99999"]  # reversed order plus one unknown item (ignored)
    vectors = np.stack([np.array([float(t), 1.0], dtype=np.float32) for t in tokens])
    np.save(tmp_path / "emb.npy", vectors)
    (tmp_path / "emb.txt").write_text("\n".join(tokens) + "\n")

    path = import_teacher(
        rankings, tmp_path / "emb.npy", tmp_path / "emb.txt", dataset=train, output=tmp_path / "external.safetensors"
    )
    artifacts = load_artifacts(path)
    assert artifacts.score_kind == "neg_l2" and artifacts.teacher["item_emb"]["extra_tokens"] == 1
    aligned = artifacts.align(valid, split="valid")
    assert torch.equal(aligned.topk[:, 0], valid.inter_feat["item_id"])
    assert torch.equal(aligned.scores[0], -torch.arange(K, dtype=torch.float32))  # scores = -distance
    expected_emb = torch.tensor([0.0] + [float(t) for t in valid.field2id_token["item_id"][1:]])
    assert torch.equal(aligned.item_text_emb[:, 0], expected_emb)
    assert aligned.item_text_emb[0].abs().sum() == 0 and (aligned.item_text_emb[1:, 1] == 1).all()


def test_csv_item_embeddings(tmp_path):
    path = tmp_path / "emb.csv"
    path.write_text("item_id,d0,d1\n10,0.5,1.5\n20,2.5,3.5\n")
    tokens, vectors = read_item_embeddings(path)
    assert tokens == ["10", "20"] and vectors.dtype == np.float32
    assert vectors.tolist() == [[0.5, 1.5], [2.5, 3.5]]
    path.write_text("item_id,d0,d1\n10,0.5\n")
    with pytest.raises(ImportFormatError, match="emb.csv:2: 2 cells, the header has 3"):
        read_item_embeddings(path)


def test_missing_item_embeddings_are_reported(ml100k, fixture_records, tmp_path):
    rankings = write_csv(tmp_path / "rankings.csv", fixture_records[:N_TRAIN_ROWS])
    (tmp_path / "emb.csv").write_text("item_id,d0\n1,0.5\n")
    with pytest.raises(ValueError, match="1,681 of the dataset's 1,682 items have no embedding"):
        import_teacher(rankings, tmp_path / "emb.csv", dataset=ml100k[0], output=tmp_path / "x.safetensors")


def bad_row_error(tmp_path, dataset, records, change, K=None):
    records = [dict(r) for r in records]
    change(records[1])  # CSV line 3 (line 1 is the header)
    rankings = write_csv(tmp_path / "bad.csv", records)
    with pytest.raises(ImportFormatError) as error:
        import_teacher(rankings, dataset=dataset, output=tmp_path / "bad.safetensors", K=K)
    assert not (tmp_path / "bad.safetensors").exists()
    return str(error.value)


def test_bad_rows_name_file_and_line(ml100k, fixture_records, tmp_path):
    train = ml100k[0]
    records = fixture_records[:5]

    def unknown_item(record):
        record["items"] = record["items"][:-1] + ["no-such-item"]

    message = bad_row_error(tmp_path, train, records, unknown_item)
    assert "bad.csv:3: unknown item token 'no-such-item' in 'items'" in message

    def fewer_items(record):
        record["items"], record["scores"] = record["items"][:3], record["scores"][:3]

    assert "bad.csv:3: 3 items, fewer than K=5" in bad_row_error(tmp_path, train, records, fewer_items, K=5)

    def short_scores(record):
        record["scores"] = record["scores"][:4]

    assert "bad.csv:3: 'scores' has 4 values but 'items' has 5" in bad_row_error(tmp_path, train, records, short_scores)

    def unsorted_scores(record):
        record["scores"] = list(reversed(record["scores"]))

    assert "bad.csv:3: 'scores' must be non-increasing" in bad_row_error(tmp_path, train, records, unsorted_scores)

    def unknown_prefix_item(record):
        record["prefix"] = record["prefix"] + ["0"]

    message = bad_row_error(tmp_path, train, records, unknown_prefix_item)
    assert "bad.csv:3: unknown item token '0' in 'prefix'" in message


def test_bad_jsonl_and_duplicates(ml100k, fixture_records, tmp_path):
    train = ml100k[0]
    rankings = tmp_path / "bad.jsonl"
    rankings.write_text(json.dumps({"user": "1", "prefix": "1 2", "target": "3", "items": ["4"]}) + "\n")
    with pytest.raises(ImportFormatError, match="bad.jsonl:1: 'prefix' must be a JSON list"):
        import_teacher(rankings, dataset=train, output=tmp_path / "x.safetensors")
    rankings.write_text("\n" + json.dumps({"key": "1|2 3", "items": ["4"]}) + "\n")
    with pytest.raises(ImportFormatError, match=r"bad.jsonl:2: 'key' must be a string 'user\|i1 i2 i3\|target'"):
        import_teacher(rankings, dataset=train, output=tmp_path / "x.safetensors")
    duplicated = write_csv(tmp_path / "dup.csv", fixture_records[:3] + fixture_records[:1])
    with pytest.raises(ImportFormatError, match=r"dup.csv:5: same example .* as .*dup.csv:2 in split 'train'"):
        import_teacher(duplicated, dataset=train, output=tmp_path / "x.safetensors")


def test_cli(ml100k, fixture_records, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rankings = write_csv(tmp_path / "rankings.csv", fixture_records)
    output = tmp_path / "cli.safetensors"
    assert main(["--rankings", str(rankings), "--dataset", "ml-100k", "--output", str(output), "--K", "3"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {output}"
    aligned = load_artifacts(output).align(ml100k[1], split="valid")
    assert aligned.K == 3 and torch.equal(aligned.topk[:, 0], ml100k[1].inter_feat["item_id"])


def test_cli_bad_input_is_one_error_line(tmp_path, capsys):
    rankings = tmp_path / "rankings.csv"
    rankings.write_text("this,is,not\na,rankings,file\n")
    status = main(["--rankings", str(rankings), "--dataset", "ml-100k", "--output", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("python -m recbole_llmkd.data.importer: error: ") and "rankings.csv" in err[-1]
    assert not any("Traceback" in line for line in err)
