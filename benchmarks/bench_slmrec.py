"""SLMRec vs its teacher vs its no-KD twin: parameters, full-ranking inference throughput, optionally quality.

Three models on the same backbone (default: the embedded SmolLM2-135M, truncated):

- teacher   LLMRec with M = --teacher-layers decoder layers;
- SLMRec    N = --student-layers layers, distilled from that teacher (B = --blocks);
- twin      LLMRec with N layers trained without KD.

Throughput = users/s of ``full_sort_predict`` (one LLM forward per user + one matmul over all items) on the test
split, after one warm-up batch (``recbole_llmkd.measure.full_ranking_throughput``). Without ``--quality`` the
models are untrained (throughput and parameter counts do not depend on the weights; SLMRec is built from an
untrained teacher checkpoint). With ``--quality`` the teacher, SLMRec and the twin are trained (one example per
user, ``--epochs``) on the first ``--users`` users of ml-100k (users with at most ``--max-user-interactions``
interactions, so that the SLMRec protocol finds 999 negatives) and evaluated in both protocols: RecBole full ranking and the SLMRec protocol
(1 positive + 999 negatives outside the user's sequence).

    .venv/bin/python benchmarks/bench_slmrec.py --teacher-layers 8 --student-layers 2 --blocks 2 \
        --out /tmp/slmrec.md (then paste into benchmarks/RESULTS.md)
    .venv/bin/python benchmarks/bench_slmrec.py --quality --users 200 --epochs 1 --out /tmp/slmrec.md (then paste into benchmarks/RESULTS.md)

Not part of ``make test``.
"""
import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from recbole_llmkd.measure import device_description, git_commit  # noqa: E402



def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2", help="llm_backbone spec (default: the embedded SmolLM2)")
    parser.add_argument("--teacher-layers", type=int, default=8, help="M, the teacher's decoder layers")
    parser.add_argument("--student-layers", type=int, default=2, help="N, the student's (and twin's) decoder layers")
    parser.add_argument("--blocks", type=int, default=2, help="B, slm_blocks (must divide M and N)")
    parser.add_argument("--max-len", type=int, default=10, help="MAX_ITEM_LIST_LENGTH (item slots of the prompt)")
    parser.add_argument("--eval-batch-size", type=int, default=16, help="users per full-ranking batch")
    parser.add_argument("--timed-batches", type=int, default=8, help="timed batches per model (after 1 warm-up)")
    parser.add_argument("--max-user-interactions", type=int, default=250,
                        help="drop longer users (the SLMRec protocol needs 999 unseen items per user)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best is reported")
    parser.add_argument("--quality", action="store_true", help="also train the three models and report both protocols")
    parser.add_argument("--users", type=int, default=200, help="--quality: first U users of ml-100k")
    parser.add_argument("--epochs", type=int, default=1, help="--quality: epochs per model (one example per user)")
    parser.add_argument("--gpu-id", default="", help="'' = CPU (default); '0' = first GPU (bf16 autocast there)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", help="append a markdown fragment here (e.g. /tmp/slmrec.md (then paste into benchmarks/RESULTS.md))")
    return parser.parse_args(argv)


def make_user_slice(root: Path, n_users: int) -> str:
    """Atomic files of the first ``n_users`` ml-100k users (raw ids 1..U) under ``root/<name>``; returns the name."""
    import recbole

    source = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
    name = f"ml100k-u{n_users}"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    keep = {str(user) for user in range(1, n_users + 1)}
    with open(source, encoding="utf-8") as src, open(folder / f"{name}.inter", "w", encoding="utf-8") as dst:
        dst.write(src.readline())
        for line in src:
            if line.split("\t", 1)[0] in keep:
                dst.write(line)
    return name


def common_config(args, data_path=None) -> dict:
    config = {
        "gpu_id": args.gpu_id, "show_progress": False, "seed": args.seed, "llm_backbone": args.backbone,
        "MAX_ITEM_LIST_LENGTH": args.max_len, "eval_batch_size": args.eval_batch_size, "train_batch_size": 16,
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "llm_train_examples": "last_per_user", "slm_train_examples": "last_per_user", "warmup_steps": 5,
        "user_inter_num_interval": f"[0,{args.max_user_interactions}]", "measure_throughput": True,
        "throughput_max_batches": args.timed_batches,
    }
    if data_path is not None:
        config["data_path"] = str(data_path)
        config["load_col"] = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    return config


def throughput_only(args, run_root: Path) -> list:
    """Untrained models: parameters and users/s (best of --rounds interleaved rounds: the machine may be shared)."""
    from recbole_llmkd.config import Config
    from recbole_llmkd.measure import count_parameters, full_ranking_throughput
    from recbole_llmkd.run import prepare

    teacher_path = run_root / "untrained_teacher.pth"
    specs = [("teacher", "LLMRec", args.teacher_layers), ("SLMRec", "SLMRec", args.student_layers),
             ("twin (no KD)", "LLMRec", args.student_layers)]
    built = []
    for label, model_name, n_layers in specs:
        extra = {"llm_n_layers": n_layers, "checkpoint_dir": str(run_root)}
        if model_name == "SLMRec":
            extra.update({"teacher": str(teacher_path), "slm_blocks": args.blocks})
        config = Config(model_name, "ml-100k", config_dict={**common_config(args), **extra})
        run = prepare(config, with_trainer=False)  # measured only, never trained
        model, test_data = run.model, run.test_data
        if label == "teacher":
            torch.save({"config": config, "state_dict": model.state_dict(), "other_parameter": model.other_parameter()},
                       teacher_path)
        built.append((label, n_layers, model, test_data, config["device"]))
    rates = {label: [] for label, *_ in built}
    for _ in range(args.rounds):
        for label, _, model, test_data, device in built:
            rate = full_ranking_throughput(model, test_data, device, warmup_batches=1, max_batches=args.timed_batches)
            rates[label].append(rate["throughput_users_per_s"])
            print(label, f"{rate['throughput_users_per_s']:.2f} users/s", flush=True)
    rows = []
    for label, n_layers, model, _, _ in built:
        rows.append({"label": label, "layers": n_layers, **count_parameters(model),
                     "throughput_users_per_s": max(rates[label]),
                     "rounds": ", ".join(f"{rate:.2f}" for rate in rates[label])})
    return rows


def with_quality(args, run_root: Path) -> list:
    """Train teacher, SLMRec and twin on a user slice; both protocols on test."""
    from recbole_llmkd.evaluation import evaluate_sampled, prefixed
    from recbole_llmkd.quick_start import run_recbole_llmkd
    from recbole_llmkd.run import load

    data_root = run_root / "data"
    dataset = make_user_slice(data_root, args.users)
    common = {**common_config(args, data_root), "epochs": args.epochs}
    rows = []
    specs = [("teacher", "LLMRec", {"llm_n_layers": args.teacher_layers}),
             ("SLMRec", "SLMRec", {"llm_n_layers": args.student_layers, "slm_blocks": args.blocks,
                                   "teacher": str(run_root / "teacher"), "slm_eval_sampled": "test"}),
             ("twin (no KD)", "LLMRec", {"llm_n_layers": args.student_layers})]
    for label, model_name, extra in specs:
        run_dir = run_root / ("teacher" if label == "teacher" else model_name + ("_twin" if "twin" in label else ""))
        result = run_recbole_llmkd(model_name, dataset, config_dict={**common, **extra, "run_dir": str(run_dir)})
        test = dict(result["test_result"])
        if "sampled_mrr" not in test:  # LLMRec runs: the SLMRec protocol on the best checkpoint
            best = load(result["checkpoint"])  # its data as the run built them, on its training device
            splits = [best.train_data, best.valid_data, best.test_data]
            test.update(prefixed(evaluate_sampled(best.model, best.test_data, splits, seed=args.seed)))
        rows.append({"label": label, "layers": extra["llm_n_layers"], "test": test,
                     "train_time_s": result["train_time_s"], "params_total": result["params_total"],
                     "params_trainable": result["params_trainable"],
                     "throughput_users_per_s": result["throughput_users_per_s"],
                     "throughput_users_timed": result["throughput_users_timed"]})
        print(label, rows[-1], flush=True)
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import recbole_llmkd  # noqa: F401  (numpy-2 shims)

    run_root = Path(tempfile.mkdtemp(prefix="bench_slmrec_"))
    os.chdir(run_root)  # RecBole writes log/ and saved/ into the working directory
    device = torch.device("cuda" if args.gpu_id != "" and torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    rows = with_quality(args, run_root) if args.quality else throughput_only(args, run_root)
    teacher_rate = rows[0]["throughput_users_per_s"]
    command = " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"## SLMRec: teacher M={args.teacher_layers} vs SLMRec N={args.student_layers} (B={args.blocks}) vs no-KD twin "
        f"({args.backbone} truncated{', trained' if args.quality else ', untrained'})",
        "",
        f"- machine: {device_description(device, torch_threads=True)}; {'bf16 autocast' if device.type == 'cuda' else 'fp32'}",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d')}, commit {git_commit()}, torch {torch.__version__}",
        f"- config: MAX_ITEM_LIST_LENGTH {args.max_len}, default Alpaca prompt, LoRA r16 on gate/up/down, dot head "
        f"(item_dim 64), eval batch {args.eval_batch_size}, {args.timed_batches} timed batches after 1 warm-up"
        f"{'' if args.quality else f', best of {args.rounds} interleaved rounds (per-round users/s in the last column)'}, "
        f"users with <= {args.max_user_interactions} interactions, seed {args.seed}",
        f"- command: `.venv/bin/python benchmarks/bench_slmrec.py {command}` ({time.perf_counter() - started:.0f} s)",
        "- params: the module tree (SLMRec's teacher lives outside it; its B-1 training adapters are counted but unused "
        "at inference); trainable = LoRA + input_proj + head + item table (+ adapters)",
    ]
    if args.quality:
        lines.append(
            f"- quality profile: first {args.users} ml-100k users, {args.epochs} epoch(s) per model, one example per "
            "user, batch 16, lr 1e-3, warmup 5; leave-one-out; full ranking over all items and the SLMRec protocol "
            "(1 + 999 negatives outside the user's sequence); best epoch on validation NDCG@10. A short CPU profile: "
            "the numbers show the pipeline works, they are not converged results."
        )
    lines += [
        "",
        "| model | layers | params total | params trainable | users/s (full ranking) | speed-up vs teacher |"
        + (" hit@10 | ndcg@10 | S-HR@1 | S-HR@5 | S-NDCG@5 | S-MRR |" if args.quality else " rounds |"),
        "|---|---|---|---|---|---|" + ("---|---|---|---|---|---|" if args.quality else "---|"),
    ]
    for row in rows:
        line = (
            f"| {row['label']} | {row['layers']} | {row['params_total']:,} | {row['params_trainable']:,} | "
            f"{row['throughput_users_per_s']:.2f} | {row['throughput_users_per_s'] / teacher_rate:.2f}x |"
        )
        if args.quality:
            test = row["test"]
            line += " " + " | ".join(
                f"{test[key]:.4f}" for key in ("hit@10", "ndcg@10", "sampled_hit@1", "sampled_hit@5",
                                               "sampled_ndcg@5", "sampled_mrr")
            ) + " |"
        else:
            line += f" {row['rounds']} |"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = args.out if os.path.isabs(args.out) else os.path.join(REPO_ROOT, args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
