"""BIGRec, the generative teacher, on the ``cpu`` slice of ml-100k: quality, training time, export rows/s, and the
KD-SASRec gain it gives (issue 16).

The teacher: ``BIGRec`` on the first ``--layers`` SmolLM2 decoder layers, trained ``--epochs`` epochs on one example
per user (``llm_train_examples: last_per_user``, 449 examples; BIGRec itself trains on 1,024 samples), greedy
generation (``--beams``), grounded by L2 distance. Best epoch on validation NDCG@10, test read once. It is exported
(top-50, ``score_kind: neg_l2``, its grounding table as ``item_text_emb``) and distilled into the hidden-32 SASRec of
``bench_kd_control`` / ``bench_teacher_views`` (same slice, history 10, <= 50 epochs, patience 5) with DLLM2Rec's
``confidence_mode: code`` over ``--seeds``, beside the plain SASRec-32 of the same seeds.

    .venv/bin/python benchmarks/bench_bigrec.py [--out-dir runs/bench_bigrec] [--layers 4] [--epochs 3]
        [--seeds 2020 2021 2022] [--methods dllm2rec-noed]

Resumable: a run whose ``results.json`` exists is reused; the export resumes chunk by chunk. Rows go to
``benchmarks/results/kd_quality.json``; the summary is printed and written to ``<out-dir>/bigrec.json``.
Not part of ``make test``.
"""
import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from bench_kd_control import METHODS, METRICS, common_config, merge_results, row, run_once, sasrec_size  # noqa: E402

from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path  # noqa: E402
from recbole_llmkd.measure import device_description, git_commit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/bench_bigrec")
    parser.add_argument("--backbone", default="smollm2", help="llm_backbone ('tiny': a smoke run)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the teacher (llm_n_layers)")
    parser.add_argument("--epochs", type=int, default=3, help="teacher epochs (best on validation)")
    parser.add_argument("--beams", type=int, default=1, help="bigrec_num_beams (BIGRec: 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--methods", nargs="+", default=["dllm2rec-noed"], choices=list(METHODS))
    parser.add_argument("--slice", default="[0,60]", help="user_inter_num_interval of ml-100k (the cpu slice)")
    parser.add_argument("--teacher-run", help="a BIGRec run directory already trained on the slice (e.g. the one chosen "
                        "on validation): exported and distilled instead of training the default teacher")
    args = parser.parse_args(argv)
    args.dataset, args.data_path, args.student_epochs, args.stopping_step = "ml-100k", None, 50, 5
    return args


def teacher_config(args, common: dict) -> dict:
    return {**common, "llm_backbone": args.backbone, "llm_n_layers": args.layers, "llm_train_examples": "last_per_user",
            "epochs": args.epochs, "stopping_step": args.epochs, "train_batch_size": 16, "eval_batch_size": 64,
            "learning_rate": 3e-4, "warmup_steps": 10, "bigrec_num_beams": args.beams, "bigrec_max_new_tokens": 24,
            "seed": 2020}


def main(argv=None) -> int:
    from recbole_llmkd.jobs.export import export_teacher

    args = parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    student_args = argparse.Namespace(**{**vars(args), "epochs": args.student_epochs})
    common = common_config(student_args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "device": device_description(torch_threads=True), "args": vars(args)}

    teacher_dir = os.path.abspath(args.teacher_run) if args.teacher_run else os.path.join(out_dir, f"BIGRec-{args.layers}L")
    result = run_once("BIGRec", "ml-100k", teacher_config(args, common), teacher_dir)  # reused when already trained
    artifact = os.path.join(teacher_dir, TEACHER_RUN_ARTIFACT)
    export = {"export_time_s": None, "rows": None}
    if not os.path.isfile(artifact):
        # the export logs "<n> rows computed in <s> s": the rows of this call (a resumed export computes fewer)
        messages = []
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())
        logging.getLogger("recbole_llmkd").addHandler(handler)
        started = time.perf_counter()
        export_teacher(teacher_dir, output=artifact, topk=50, show_progress=True)
        export["export_time_s"] = time.perf_counter() - started
        logging.getLogger("recbole_llmkd").removeHandler(handler)
        computed = [re.search(r"([\d,]+) rows computed in ([\d.]+) s", m) for m in messages]
        rows, seconds = next((int(m[1].replace(",", "")), float(m[2])) for m in computed if m)
        export.update(rows=rows, rows_time_s=seconds)
    export_file = os.path.join(teacher_dir, "export_time.json")
    if export["export_time_s"] is not None:
        with open(export_file, "w", encoding="utf-8") as f:
            json.dump(export, f)
    elif os.path.isfile(export_file):
        with open(export_file, encoding="utf-8") as f:
            export = json.load(f)
    name = f"BIGRec-{args.layers}L"
    teacher = {**row(result, args, "BIGRec", "teacher", name, 0), "train_time_s": result["train_time_s"], **export}
    with open(diagnostics_path(artifact), encoding="utf-8") as f:
        teacher["lists"] = json.load(f)
    print(f"teacher: test ndcg@10 {teacher['ndcg@10']:.4f}, train {teacher['train_time_s']:.0f} s, export "
          f"{export['export_time_s']} s for {export['rows']} rows", flush=True)

    students, plain = [], []
    for seed in args.seeds:
        config = {**common, **sasrec_size(32, 1), "seed": seed, **METHODS["none"]}
        result = run_once("KDSASRec", "ml-100k", config, os.path.join(out_dir, "no-teacher", f"SASRec32-none-seed{seed}"))
        plain.append(row(result, args, "SASRec", "none", "none", 32))
        for method in args.methods:
            config = {**common, **sasrec_size(32, 1), "seed": seed, "teacher": artifact, "confidence_mode": "code",
                      **METHODS[method]}
            result = run_once("KDSASRec", "ml-100k", config, os.path.join(teacher_dir, f"SASRec32-{method}-seed{seed}"))
            students.append(row(result, args, "SASRec", method, name, 32))
            print(f"seed {seed}: plain {plain[-1]['ndcg@10']:.4f}, {method} {students[-1]['ndcg@10']:.4f}", flush=True)

    merge_results([{k: v for k, v in teacher.items() if k in plain[0]}] + students + plain)
    with open(os.path.join(out_dir, "bigrec.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "teacher": teacher, "students": students, "plain": plain}, f, indent=2)

    print(f"\n{meta['date']}, commit {meta['commit']}, {meta['device']}\n")
    rows_per_s = export["rows"] / export["rows_time_s"] if export.get("rows_time_s") else float("nan")
    print("| teacher | train s | export s (rows computed/s) | NDCG@10 | HR@10 | NDCG@20 | HR@20 | lists: target / history |")
    print("|---|---|---|---|---|---|---|---|")
    lists = teacher["lists"]
    print(f"| {name} | {teacher['train_time_s']:.0f} | {export.get('export_time_s') or float('nan'):.0f} "
          f"({rows_per_s:.1f}) | " + " | ".join(f"{teacher[m]:.4f}" for m in METRICS)
          + f" | {lists['target_in_list']:.1%} / {lists['history_in_list']:.1%} |")
    base = {r["seed"]: r["ndcg@10"] for r in plain}
    print("\n| student | kd_method | NDCG@10 (mean ± std) | Δ vs plain per seed | mean Δ |")
    print("|---|---|---|---|---|")
    spread = lambda values: f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""  # noqa: E731
    print(f"| SASRec-32 | none | {statistics.mean(base.values()):.4f}{spread(list(base.values()))} | – | – |")
    for method in args.methods:
        runs = [r for r in students if r["kd_method"] == method]
        values, deltas = [r["ndcg@10"] for r in runs], [r["ndcg@10"] - base[r["seed"]] for r in runs]
        print(f"| SASRec-32 | {method} (confidence code) | {statistics.mean(values):.4f}{spread(values)} | "
              + ", ".join(f"{d:+.4f}" for d in deltas) + f" | {statistics.mean(deltas) / statistics.mean(base.values()):+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
