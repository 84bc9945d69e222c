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
