"""Where a model's accuracy is: NDCG@10 on popular (head) and other (tail) targets, per split (issue 14's diagnosis).

For trained runs (a teacher, plain and distilled students of the same data), each run's checkpoint is loaded and
scored on the validation and test users with RecBole's full ranking (``full_sort_predict``, [PAD] excluded, no
history masking: RecBole's sequential protocol). The head is the ``--head`` items with the most training
interactions; a target in it is a head target. Per run and split:

- NDCG@10 over all users, over head-target users and over tail-target users (``rank`` = the number of items scored
  strictly above the target, as RecBole's full ranking counts it up to ties);
- the share of the run's top-10 items that are head items (how popularity-bound its recommendations are);
- the mean overlap of its top-10 with the ``--reference`` run's (e.g. the teacher's), |A ∩ B| / 10;
- with ``--ties``, NDCG@10 over the users whose target has the timestamp of their last history item (a tied
  target) and over the others: on a dataset whose timestamps are coarse (Last.fm's are months), a tied target comes
  after the last history item only in the file's order, which a sequential model can learn as if it were behaviour.

    .venv/bin/python benchmarks/bench_head_tail.py --runs teacher=<run dir> plain=<run dir> kd=<run dir>
        [--reference teacher] [--head 100] [--ties] [--json FILE]

Every run must be of the same dataset and splits (the first run's data are used for all). Not part of ``make test``.
"""
import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Dict, List, Tuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from recbole_llmkd.measure import device_description, git_commit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR",
                        help="trained runs (run directories or checkpoints), named")
    parser.add_argument("--reference", default=None, help="the run whose top-10 the others are compared with")
    parser.add_argument("--head", type=int, default=100, help="the most-interacted items that make the head")
    parser.add_argument("--ties", action="store_true",
                        help="also split by targets whose timestamp is their last history item's (tied targets)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write every run's and split's figures here (the table's, unrounded)")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"argument --runs: {spec!r}: expected NAME=DIR")
        runs[name] = path
    if args.reference is not None and args.reference not in runs:
        parser.error(f"argument --reference: {args.reference!r} is not one of the runs ({', '.join(runs)})")
    args.runs = runs
    return args


def ndcg_at(target_rank: torch.Tensor, k: int = 10) -> float:
    """NDCG@k of single-target rows (leave-one-out), by the project's ``evaluation.metrics_from_ranks``
    (``1[r < k] / log2(r + 2)``, r = items scored above the target); NaN for no rows.

    Args:
        target_rank: ``[U]`` each row's target rank (int).
    """
    from recbole_llmkd.evaluation import metrics_from_ranks

    return metrics_from_ranks(target_rank, ks=(k,))[f"ndcg@{k}"] if len(target_rank) else float("nan")


def split_ndcg(target_rank: torch.Tensor, in_group: torch.Tensor, k: int = 10) -> Tuple[float, float]:
    """``(ndcg_at over the rows in the group, ndcg_at over the others)``; ``in_group``: ``[U]`` bool."""
    return ndcg_at(target_rank[in_group], k), ndcg_at(target_rank[~in_group], k)


def head_tail_ndcg(target_rank: torch.Tensor, target_is_head: torch.Tensor, k: int = 10) -> Dict[str, float]:
    """NDCG@k over all rows, head-target rows and tail-target rows (``ndcg_at``, ``split_ndcg``).

    Args:
        target_rank: ``[U]`` each row's target rank (int).
        target_is_head: ``[U]`` bool, the row's target is a head item.
    Returns ``{"all", "head", "tail"}`` means (NaN for an empty group) and ``{"n_head", "n_tail"}``.
    """
    head, tail = split_ndcg(target_rank, target_is_head, k)
    return {"all": ndcg_at(target_rank, k), "head": head, "tail": tail,
            "n_head": int(target_is_head.sum()), "n_tail": int((~target_is_head).sum())}


def tied_targets(interaction, time_field: str, list_suffix: str, length_field: str) -> torch.Tensor:
    """``[B]`` bool: the row's target has the timestamp of its last history item (RecBole's sequential rows carry the
    history's timestamps as ``<time_field><list_suffix>`` ``[B, L]``, the target's as ``<time_field>`` ``[B]``)."""
    history_times = interaction[time_field + list_suffix]  # [B, L]
    last = (interaction[length_field] - 1).clamp(min=0)  # [B] index of the last history item
    last_time = history_times.gather(1, last[:, None]).squeeze(1)  # [B]
    return interaction[time_field] == last_time


def topk_overlap(topk: torch.Tensor, reference_topk: torch.Tensor) -> float:
    """Mean |A_u ∩ B_u| / k over rows of two ``[U, k]`` top-k item lists."""
    k = topk.shape[1]
    shared = (topk[:, :, None] == reference_topk[:, None, :]).any(dim=2).sum(dim=1)  # [U]
    return float(shared.double().mean() / k)


def rank_split(model, loader, n_items: int, k: int = 10, ties: bool = False):
    """``(top-k items [U, k], target rank [U], target [U], tied [U] or None)`` of ``model`` on a full-ranking eval
    loader; ``tied`` (``tied_targets``) with ``ties``."""
    config = loader.config
    tops, ranks, targets, tied = [], [], [], []
    with torch.no_grad():
        for interaction, _, _, positive_items in loader:
            scores = model.full_sort_predict(interaction).view(-1, n_items)  # [B, n_items]
            scores[:, 0] = -torch.inf  # [PAD]
            target_scores = scores.gather(1, positive_items[:, None])  # [B, 1]
            tops.append(scores.topk(k, dim=1).indices)
            ranks.append((scores > target_scores).sum(dim=1))
            targets.append(positive_items)
            if ties:
                tied.append(tied_targets(interaction, config["TIME_FIELD"], config["LIST_SUFFIX"],
                                         config["ITEM_LIST_LENGTH_FIELD"]))
    return torch.cat(tops), torch.cat(ranks), torch.cat(targets), torch.cat(tied) if ties else None


def main(argv=None) -> int:
    from recbole_llmkd.run import load, load_model, read_checkpoint, resolve_checkpoint

    args = parse_args(argv)
    names: List[str] = list(args.runs)
    first = load(resolve_checkpoint(args.runs[names[0]]))
    train_dataset = first.train_data._dataset
    n_items = train_dataset.item_num
    counts = torch.bincount(train_dataset.inter_feat[train_dataset.iid_field], minlength=n_items)  # [n_items]
    counts[0] = -1  # [PAD] is never a head item
    is_head = torch.zeros(n_items, dtype=torch.bool)
    is_head[counts.topk(args.head).indices] = True

    splits = {"valid": first.valid_data, "test": first.test_data}
    results, reference_tops = {}, {}
    order = ([args.reference] if args.reference else []) + [n for n in names if n != args.reference]
    for name in order:
        model = first.model if name == names[0] else load_model(
            read_checkpoint(resolve_checkpoint(args.runs[name])), train_dataset, "cpu")[0]
        model.eval()
        for split, loader in splits.items():
            topk, rank, target, tied = rank_split(model, loader, n_items, ties=args.ties)
            row = head_tail_ndcg(rank, is_head[target])
            if args.ties:
                row["tied"], row["untied"] = split_ndcg(rank, tied)
                row["n_tied"], row["n_untied"] = int(tied.sum()), int((~tied).sum())
            row["top10_head_share"] = float(is_head[topk].double().mean())
            if name == args.reference:
                reference_tops[split] = topk
            if args.reference:
                row["overlap"] = topk_overlap(topk, reference_tops[split])
            results[(name, split)] = row
        print(f"{name}: done", file=sys.stderr, flush=True)

    date, commit, device = datetime.now(timezone.utc).isoformat(timespec="seconds"), git_commit(), device_description(
        torch_threads=True)
    print(f"\n{date}, commit {commit}, {device}; head = the {args.head} items "
          f"with the most training interactions ({is_head[1:].sum()} of {n_items - 1})\n")
    if args.json:
        rows = [{"run": name, "run_dir": args.runs[name], "split": split, **results[(name, split)]}
                for name in order for split in splits]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"date": date, "commit": commit, "device": device, "head": args.head, "rows": rows}, f, indent=2)
    overlap_column = f" | top-10 overlap with {args.reference}" if args.reference else ""
    ties_columns = " | tied targets | other targets" if args.ties else ""
    print(f"| run | split | NDCG@10 | head targets | tail targets | top-10 items in the head{overlap_column}"
          f"{ties_columns} |")
    print("|---|---|---|---|---|---|" + ("---|" if args.reference else "") + ("---|---|" if args.ties else ""))
    for name in order:
        for split in splits:
            row = results[(name, split)]
            line = (f"| {name} | {split} | {row['all']:.4f} | {row['head']:.4f} (n={row['n_head']}) | "
                    f"{row['tail']:.4f} (n={row['n_tail']}) | {row['top10_head_share']:.1%} |")
            if args.reference:
                line += f" {row['overlap']:.1%} |"
            if args.ties:
                line += f" {row['tied']:.4f} (n={row['n_tied']}) | {row['untied']:.4f} (n={row['n_untied']}) |"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
