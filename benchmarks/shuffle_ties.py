"""A copy of a RecBole dataset whose rows of one user and one timestamp are in a random order (issue 14's diagnosis).

RecBole orders a user's interactions by time with a stable sort, so rows that share a timestamp keep the file's
order, and leave-one-out makes the last of them the target. Where timestamps are coarse that order is the source's
(Last.fm's timestamps are months, and its file lists a user's artists of one month by ascending artist id), which
a sequential model can learn as if it were behaviour. In the copy each such group is shuffled (seeded), every row
and every timestamp unchanged: a model trained and evaluated on it can only learn which items share a user's
month, not their file order. The ``.item`` file (item text) is copied under the new name.

    .venv/bin/python benchmarks/shuffle_ties.py --data-path ../shared/data --dataset lastfm \\
        --out-path runs/data --name lastfm_shuffled [--seed 0]

then run any benchmark on it with ``--data-path runs/data --dataset lastfm_shuffled`` and the original's property
file (e.g. ``--config-files properties/dataset/lastfm.yaml``). Not part of ``make test``.
"""
import argparse
import os
import shutil
import sys

import numpy as np
import pandas as pd


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out-path", required=True, help="folder the copy <name>/ is written into")
    parser.add_argument("--name", default=None, help="the copy's dataset name (default <dataset>_shuffled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--user-field", default="user_id:token")
    parser.add_argument("--time-field", default="timestamp:float")
    return parser.parse_args(argv)


def shuffle_ties(inter: pd.DataFrame, user_field: str, time_field: str, seed: int) -> pd.DataFrame:
    """The rows in a random order within each (user, timestamp) group, the groups in the file's order.

    A stable sort by (user, time) of the result gives each user's rows in time order with every tie group in a
    random order; the rows themselves (every column) are unchanged.
    """
    rng = np.random.default_rng(seed)
    # [N] group ids numbered in the order the groups first appear in the file
    group = inter.groupby([user_field, time_field], sort=False).ngroup().to_numpy()
    order = np.lexsort((rng.permutation(len(inter)), group))  # by group, randomly within a group
    return inter.iloc[order].reset_index(drop=True)


def tie_share(inter: pd.DataFrame, user_field: str, time_field: str) -> float:
    """The share of rows whose (user, timestamp) is shared with another row."""
    sizes = inter.groupby([user_field, time_field])[time_field].transform("size")
    return float((sizes > 1).mean())


def main(argv=None) -> int:
    args = parse_args(argv)
    name = args.name or f"{args.dataset}_shuffled"
    source_dir, out_dir = os.path.join(args.data_path, args.dataset), os.path.join(args.out_path, name)
    source = os.path.join(source_dir, f"{args.dataset}.inter")
    if not os.path.isfile(source):
        sys.exit(f"error: {source} not found (--data-path holds <dataset>/<dataset>.inter)")
    inter = pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False)  # every value written back as read
    for field in (args.user_field, args.time_field):
        if field not in inter.columns:
            sys.exit(f"error: {source} has no column {field!r} (columns: {', '.join(inter.columns)})")
    shuffled = shuffle_ties(inter, args.user_field, args.time_field, args.seed)
    os.makedirs(out_dir, exist_ok=True)
    shuffled.to_csv(os.path.join(out_dir, f"{name}.inter"), sep="\t", index=False)
    for suffix in (".item", ".user"):
        path = os.path.join(source_dir, f"{args.dataset}{suffix}")
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(out_dir, f"{name}{suffix}"))
    print(f"{out_dir}: {len(shuffled)} rows, {tie_share(inter, args.user_field, args.time_field):.1%} of them share "
          f"their user and timestamp with another row, shuffled within those groups (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
