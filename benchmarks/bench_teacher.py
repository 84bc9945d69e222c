"""LLMRec teacher throughput: training (sequences/s) and artifact export (rows/s), per backbone depth.

Measures a few batches per depth (after one warm-up batch) and extrapolates to one ml-100k epoch and one full
export; the extrapolation is labelled as such in the output. Optionally (``--metrics``) trains a short teacher
and a plain SASRec on the same split and reports their full-ranking test metrics.

    .venv/bin/python benchmarks/bench_teacher.py --layers 2 8 30 --batches 2 --batch-size 16 \
        --out /tmp/teacher.md (then paste into benchmarks/RESULTS.md)

Not part of ``make test``.
"""
import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from recbole_llmkd.measure import device_description, git_commit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2", help="llm_backbone spec (default: the embedded SmolLM2)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8, 30], help="llm_n_layers values to measure")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per measurement (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per batch")
    parser.add_argument("--max-len", type=int, default=30, help="MAX_ITEM_LIST_LENGTH (item slots of the prompt)")
    parser.add_argument("--gpu-id", default="", help="'' = CPU (default); '0' = first GPU (bf16 autocast there)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--metrics", action="store_true", help="also train a short teacher and SASRec and report test metrics")
    parser.add_argument("--metrics-layers", type=int, default=2, help="llm_n_layers of the --metrics teacher")
    parser.add_argument("--metrics-epochs", type=int, default=2, help="epochs of the --metrics teacher")
    parser.add_argument("--metrics-examples", default="last_per_user", choices=["last_per_user", "all_prefixes"])
    parser.add_argument("--prefix-cache", nargs="+", default=["on"], choices=["on", "off"],
                        help="llm_prefix_cache settings to measure per depth (e.g. 'on off' to compare)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", help="write a markdown fragment here (e.g. /tmp/teacher.md (then paste into benchmarks/RESULTS.md))")
    return parser.parse_args(argv)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_depth(config, data, n_layers, args, prefix_cache=True):
    """(train sequences/s, export rows/s, prompt length, trainable parameters) for one depth; ``data``: the
    ``recbole_llmkd.run.prepare_data`` of ``config``."""
    from recbole_llmkd.jobs.export import _teacher_rows
    from recbole_llmkd.run import prepare

    config["llm_n_layers"] = n_layers
    config["llm_prefix_cache"] = prefix_cache
    run = prepare(config, data=data)  # LLMRec and its LLMTrainer, the model seeded with init_seed(seed)
    model, trainer = run.model, run.trainer
    trainer.scheduler = trainer._build_scheduler(steps_per_epoch=args.batches + 1)
    rows = data.train_data._dataset.inter_feat
    batches = [rows[i * args.batch_size:(i + 1) * args.batch_size].to(config["device"]) for i in range(args.batches + 1)]
    prompt_length = model.encode(batches[0]["item_id_list"], batches[0]["item_length"])[0].shape[1]

    model.train()
    timings = []
    for batch in batches:
        _sync(config["device"])
        start = time.perf_counter()
        trainer.optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.trainable_parameters(), 1.0)
        trainer.optimizer.step()
        trainer.scheduler.step()
        _sync(config["device"])
        timings.append(time.perf_counter() - start)
    train_rate = args.batch_size * args.batches / sum(timings[1:])

    model.eval()
    timings = []
    for batch in batches:
        _sync(config["device"])
        start = time.perf_counter()
        _teacher_rows([model], batch, 50, with_user_state=False)
        _sync(config["device"])
        timings.append(time.perf_counter() - start)
    export_rate = args.batch_size * args.batches / sum(timings[1:])
    _, n_trainable = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
    del model, trainer, run
    return train_rate, export_rate, prompt_length, n_trainable


def run_metrics(args, run_root):
    from recbole_llmkd.quick_start import run_recbole_llmkd

    common = {
        "gpu_id": args.gpu_id, "show_progress": False, "metrics": ["Hit", "NDCG"], "topk": [10, 20],
        "valid_metric": "NDCG@10", "MAX_ITEM_LIST_LENGTH": args.max_len, "seed": args.seed,
    }
    teacher = run_recbole_llmkd(
        "LLMRec", args.dataset,
        config_dict={**common, "llm_backbone": args.backbone, "llm_n_layers": args.metrics_layers,
                     "epochs": args.metrics_epochs, "llm_train_examples": args.metrics_examples,
                     "train_batch_size": 32, "eval_batch_size": 64, "warmup_steps": 10},
        cmd_args={"run_dir": os.path.join(run_root, "teacher")},
    )
    sasrec = run_recbole_llmkd(
        "SASRec", args.dataset,
        config_dict={**common, "epochs": 20, "train_batch_size": 512, "eval_batch_size": 1024, "stopping_step": 3},
        cmd_args={"run_dir": os.path.join(run_root, "sasrec")},
    )
    return teacher, sasrec


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from recbole_llmkd.config import Config
    from recbole_llmkd.run import prepare_data

    run_root = tempfile.mkdtemp(prefix="bench_teacher_")
    os.chdir(run_root)  # RecBole writes log/ and saved/ into the working directory
    config = Config(
        "LLMRec", args.dataset,
        config_dict={"gpu_id": args.gpu_id, "llm_backbone": args.backbone, "MAX_ITEM_LIST_LENGTH": args.max_len,
                     "show_progress": False, "seed": args.seed, "checkpoint_dir": run_root},
    )
    data = prepare_data(config)
    train_data, valid_data, test_data = data.train_data, data.valid_data, data.test_data
    n_train = len(train_data._dataset.inter_feat)
    n_users = len(valid_data._dataset.inter_feat)
    n_export = n_train + len(valid_data._dataset.inter_feat) + len(test_data._dataset.inter_feat)
    device = config["device"]

    lines = [
        f"## LLMRec teacher throughput ({args.backbone}, {args.dataset})",
        "",
        f"- machine: {device_description(device, torch_threads=True)}; {'bf16 autocast' if device.type == 'cuda' else 'fp32'}",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d')}, commit {git_commit()}, torch {torch.__version__}",
        f"- config: MAX_ITEM_LIST_LENGTH {args.max_len}, default Alpaca prompt, LoRA r16 on gate/up/down, dot head "
        f"(item_dim 64), batch {args.batch_size}, {args.batches} timed batches after 1 warm-up, seed {args.seed}",
        f"- command: `.venv/bin/python benchmarks/bench_teacher.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- **extrapolated** from {args.batches} batches: epoch = {n_train:,} sequences (all prefixes) or {n_users:,} "
        f"(last_per_user); export = {n_export:,} rows (train prefixes + valid + test, K = 50)",
        "",
        "| layers | prefix cache | prompt tokens | trainable params | train seq/s | epoch all_prefixes | epoch last_per_user | export rows/s | full export |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n_layers in args.layers:
        for cache in args.prefix_cache:
            train_rate, export_rate, prompt_length, n_trainable = measure_depth(
                config, data, n_layers, args, prefix_cache=cache == "on"
            )
            row = (
                f"| {n_layers} | {cache} | {prompt_length} | {n_trainable:,} | {train_rate:.2f} | "
                f"{n_train / train_rate / 60:,.0f} min | {n_users / train_rate / 60:,.1f} min | {export_rate:.2f} | "
                f"{n_export / export_rate / 60:,.0f} min |"
            )
            print(row, flush=True)
            lines.append(row)

    if args.metrics:
        teacher, sasrec = run_metrics(args, run_root)
        lines += [
            "",
            f"### Test metrics ({args.dataset}, leave-one-out, full ranking, best epoch on validation)",
            "",
            f"Teacher profile: {args.backbone} first {args.metrics_layers} layers, {args.metrics_epochs} epochs, "
            f"llm_train_examples {args.metrics_examples}, batch 32, lr 1e-3 (a short CPU profile, not a tuned teacher). "
            "SASRec: RecBole defaults, 20 epochs max, patience 3.",
            "",
            "| model | hit@10 | hit@20 | ndcg@10 | ndcg@20 | train time |",
            "|---|---|---|---|---|---|",
        ]
        for name, result in (("LLMRec", teacher), ("SASRec", sasrec)):
            test = result["test_result"]
            lines.append(
                f"| {name} | {test['hit@10']:.4f} | {test['hit@20']:.4f} | {test['ndcg@10']:.4f} | "
                f"{test['ndcg@20']:.4f} | {result['train_time_s'] / 60:.1f} min |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = args.out if os.path.isabs(args.out) else os.path.join(REPO_ROOT, args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
