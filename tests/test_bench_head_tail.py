"""benchmarks/bench_head_tail.py: NDCG@10 on head and tail targets and top-10 overlap, against hand-computed numbers;
the parser's refusals."""
import math

import pytest
import torch

from tests.benches import load_bench


def test_head_tail_ndcg_by_hand():
    bench = load_bench("bench_head_tail")
    # ranks 0, 2, 9, 10 (the last outside the top 10); targets head, tail, head, tail
    result = bench.head_tail_ndcg(torch.tensor([0, 2, 9, 10]), torch.tensor([True, False, True, False]))
    ndcg = [1.0, 1 / math.log2(4), 1 / math.log2(11), 0.0]
    assert result["all"] == pytest.approx(sum(ndcg) / 4, abs=1e-12)
    assert result["head"] == pytest.approx((ndcg[0] + ndcg[2]) / 2, abs=1e-12)
    assert result["tail"] == pytest.approx((ndcg[1] + ndcg[3]) / 2, abs=1e-12)
    assert (result["n_head"], result["n_tail"]) == (2, 2)
    only_tail = bench.head_tail_ndcg(torch.tensor([1]), torch.tensor([False]))
    assert math.isnan(only_tail["head"]) and only_tail["tail"] == pytest.approx(1 / math.log2(3))


def test_tied_targets_and_their_ndcg_by_hand():
    bench = load_bench("bench_head_tail")
    # three rows, history length 2, 3, 1 (padded to 3); the target's day against the last history item's
    interaction = {
        "timestamp_list": torch.tensor([[5, 7, 0], [1, 2, 3], [9, 0, 0]]),
        "item_length": torch.tensor([2, 3, 1]),
        "timestamp": torch.tensor([7, 4, 9]),  # tied (7 = 7), not tied (4 != 3), tied (9 = 9)
    }
    tied = bench.tied_targets(interaction, "timestamp", "_list", "item_length")
    assert tied.tolist() == [True, False, True]
    in_group, others = bench.split_ndcg(torch.tensor([0, 1, 12]), tied)
    assert in_group == pytest.approx((1.0 + 0.0) / 2, abs=1e-12) and others == pytest.approx(1 / math.log2(3))
    assert math.isnan(bench.split_ndcg(torch.tensor([3]), torch.tensor([False]))[0])


def test_topk_overlap_by_hand():
    bench = load_bench("bench_head_tail")
    topk = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    reference = torch.tensor([[4, 3, 9, 10], [5, 6, 7, 8]])  # row 0 shares 2 of 4 (any order), row 1 all 4
    assert bench.topk_overlap(topk, reference) == pytest.approx((2 / 4 + 4 / 4) / 2)


@pytest.mark.parametrize("argv, message", [
    (["--runs", "teacher"], "'teacher': expected NAME=DIR"),
    (["--runs", "a=x", "b=y", "--reference", "teacher"], "'teacher' is not one of the runs (a, b)"),
])
def test_parser_refuses_bad_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        load_bench("bench_head_tail").parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_shuffle_ties_permutes_only_within_a_users_timestamp(tmp_path):
    import pandas as pd

    bench = load_bench("shuffle_ties")
    # user a: t=1 (items 1..6, a tie group), t=2 (item 7); user b: t=1 (item 8), t=3 (items 9..13); a's t=1 rows
    # are split in the file by b's row, as a file may be
    rows = [("a", i, "1") for i in (1, 2, 3)] + [("b", 8, "1")] + [("a", i, "1") for i in (4, 5, 6)]
    rows += [("a", 7, "2")] + [("b", i, "3") for i in (9, 10, 11, 12, 13)]
    inter = pd.DataFrame(rows, columns=["user_id:token", "item_id:token", "timestamp:float"]).astype(str)
    key = ["user_id:token", "timestamp:float"]

    shuffled = bench.shuffle_ties(inter, *key, seed=0)
    as_set = lambda df: sorted(map(tuple, df.to_numpy().tolist()))  # noqa: E731
    assert as_set(shuffled) == as_set(inter)  # the same rows, every column unchanged
    groups = lambda df: {k: list(g["item_id:token"]) for k, g in df.groupby(key, sort=False)}  # noqa: E731
    before, after = groups(inter), groups(shuffled)
    assert {k: sorted(v) for k, v in after.items()} == {k: sorted(v) for k, v in before.items()}
    assert after[("a", "2")] == ["7"] and after[("b", "1")] == ["8"]  # single rows stay
    # the groups in the order they first appear in the file, each one contiguous
    assert list(shuffled[key].drop_duplicates().itertuples(index=False, name=None)) == [
        ("a", "1"), ("b", "1"), ("a", "2"), ("b", "3")]
    assert len(shuffled[key].drop_duplicates()) == shuffled.groupby(key).ngroups
    assert after[("a", "1")] != before[("a", "1")] or after[("b", "3")] != before[("b", "3")]  # an order changed
    # the within-group orders are a random draw: other seeds give other orders, the same seed the same one
    draws = {tuple(groups(bench.shuffle_ties(inter, *key, seed=s))[("a", "1")]) for s in range(20)}
    assert len(draws) > 10
    pd.testing.assert_frame_equal(bench.shuffle_ties(inter, *key, seed=0), shuffled)
    assert bench.tie_share(inter, *key) == pytest.approx(11 / 13)

    # the command: the copy under its new name, the .item file beside it
    (tmp_path / "src" / "toy").mkdir(parents=True)
    inter.to_csv(tmp_path / "src" / "toy" / "toy.inter", sep="\t", index=False)
    (tmp_path / "src" / "toy" / "toy.item").write_text("item_id:token\tname:token\n1\tx\n", encoding="utf-8")
    assert bench.main(["--data-path", str(tmp_path / "src"), "--dataset", "toy", "--out-path",
                       str(tmp_path / "out")]) == 0
    written = pd.read_csv(tmp_path / "out" / "toy_shuffled" / "toy_shuffled.inter", sep="\t", dtype=str)
    pd.testing.assert_frame_equal(written, shuffled)
    assert (tmp_path / "out" / "toy_shuffled" / "toy_shuffled.item").read_text().endswith("1\tx\n")


def test_shuffle_ties_refuses_a_missing_file_or_column_in_one_line(tmp_path):
    bench = load_bench("shuffle_ties")
    with pytest.raises(SystemExit, match=r"^error: .*toy\.inter not found"):
        bench.main(["--data-path", str(tmp_path), "--dataset", "toy", "--out-path", str(tmp_path / "out")])
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.inter").write_text("user_id:token\titem_id:token\n1\t2\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*has no column 'timestamp:float'"):
        bench.main(["--data-path", str(tmp_path), "--dataset", "toy", "--out-path", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written
