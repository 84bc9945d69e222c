"""What an LLM teacher gains from item semantics, what it costs, and what its students get (issue 14, point 1).

LLMRec teachers on the ``cpu`` slice of ml-100k, one per item view, each trained one epoch over all training
prefixes (the ``cpu`` profile's setting) with the first ``--layers`` SmolLM2 decoder layers:

- ``id``:            the plain SASRec's frozen item table (E4SRec; today's CPU teacher): IDs only.
- ``titles-cached``: the same, plus each history item's title as one cached base-decoder state
                     (``use_item_titles: True, llm_title_view: cached``): the prompt keeps one position per item.
- ``text-table``:    ``item_table: text_encoder``: frozen MiniLM title embeddings beside a learned ID table
                     (LLM-ESR-style), as the item slot and as the scoring table.
- ``titles-tokens``: the LLaRA-style hybrid slot (the title's tokens in the prompt): cost measured on a few
                     training batches only (it multiplies the prompt by T+1; a full epoch does not fit a CPU session).

Each trained teacher is exported (top-50, ``--export-teacher``'s path) and distilled into a hidden-32 SASRec
(``KDSASRec``, ``kd_method: dllm2rec`` with and without ED) over ``--seeds``; the plain rows are ``bench_kd_control``'s
(same config, same run directories under ``--plain-dir``). Rows go to ``benchmarks/results/kd_quality.json``.
``--cross-fit K``: the students learn from cross-fitted lists instead (``bench_kd_control.py --cross-fit``): each
view's recipe is trained once more per fold of users without that fold (``teacher-<view>-fold<k>of<K>``), and each
training row's list comes from the fold teacher that never saw its user; students under ``teacher-<view>-xfit<K>``.
A view that reads the plain SASRec's item table reads a fold SASRec's (``SASRec-64-fold<k>of<K>``, trained without
the same users): the table trained on every user would carry the held-out users' sequences into their lists.

    .venv/bin/python benchmarks/bench_teacher_views.py [--out-dir runs/bench_teacher_views] [--layers 4]
        [--views id titles-cached text-table] [--seeds 2020 2021 2022] [--plain-dir runs/bench_kd_control]
        [--cross-fit 2]

Resumable: a run whose ``results.json`` exists is reused. Not part of ``make test``.
"""
import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from bench_kd_control import (  # noqa: E402
    METHODS, METRICS, RESULTS_JSON, common_config, export_cross_fitted, fold_count, mean_std, merge_results, relative,
    row, run_once, sasrec_size,
)

from recbole_llmkd.data.folds import item_table_leak  # noqa: E402
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path  # noqa: E402
from recbole_llmkd.measure import device_description, git_commit  # noqa: E402
from recbole_llmkd.run import read_checkpoint, resolve_checkpoint  # noqa: E402

VIEWS = {
    "id": {},
    "titles-cached": {"use_item_titles": True, "llm_title_view": "cached"},
    "text-table": {"item_table": "text_encoder"},
}
TOKENS_VIEW = {"use_item_titles": True, "llm_title_view": "tokens"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/bench_teacher_views")
    parser.add_argument("--plain-dir", default="runs/bench_kd_control", help="bench_kd_control's --out-dir (plain rows)")
    parser.add_argument("--backbone", default="smollm2", help="llm_backbone of every teacher ('tiny': a smoke run)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of every teacher (llm_n_layers)")
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--methods", nargs="+", default=["dllm2rec-noed", "dllm2rec"], choices=list(METHODS),
                        help="kd rows of the students (bench_kd_control's labels)")
    parser.add_argument("--cost-batches", type=int, default=3, help="timed training batches per view (after 1 warm-up)")
    parser.add_argument("--cross-fit", type=fold_count, default=None, metavar="K",
                        help="students learn from cross-fitted lists: K fold teachers per view, each without one fold "
                             "of users (K >= 2), reading a fold SASRec's item table")
    parser.add_argument("--results-json", default=RESULTS_JSON,
                        help="the kd_quality.json the rows are merged into (default the repository's)")
    # bench_kd_control's data and student protocol: by default the cpu slice of ml-100k, history 10, <= 50 epochs,
    # patience 5 (another dataset or budget: a smoke run, e.g. the test suite's)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-path", default=None, help="folder holding <dataset>/; RecBole's own for ml-100k")
    parser.add_argument("--slice", default="[0,60]", help="user_inter_num_interval ('[0,inf)': every user)")
    parser.add_argument("--epochs", type=int, default=50, help="the students' max_epochs")
    parser.add_argument("--config-files", nargs="*", default=[], metavar="YAML",
                        help="RecBole property files applied to every run (e.g. load_col of your own dataset)")
    args = parser.parse_args(argv)
    args.stopping_step = 5
    return args


def teacher_config(args, common: dict, sasrec_checkpoint: str, view: dict) -> dict:
    """The cpu profile's teacher (properties/pipeline/cpu.yaml) with ``view`` on top."""
    return {**common, "llm_backbone": args.backbone, "llm_n_layers": args.layers, "item_table": sasrec_checkpoint,
            "llm_train_examples": "all_prefixes", "epochs": 1, "train_batch_size": 32, "eval_batch_size": 128,
            "learning_rate": 0.001, "warmup_steps": 20, "seed": 2020, **view}


def training_seconds_per_batch(dataset: str, config: dict, n_batches: int) -> float:
    """Mean wall time of one training step (forward, backward, AdamW) over ``n_batches`` after one warm-up."""
    import torch

    from recbole_llmkd.config import Config
    from recbole_llmkd.run import prepare

    # no trainer: this measures a bare AdamW step (and writes no TensorBoard events or checkpoint directory)
    run = prepare(Config("LLMRec", dataset, config_dict=dict(config)), with_trainer=False)
    model, train_data = run.model.train(), run.train_data
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for index, batch in enumerate(train_data):
        started = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        if index > 0:
            times.append(time.perf_counter() - started)
        if len(times) == n_batches:
            break
    return statistics.mean(times)


def main(argv=None) -> int:
    from recbole_llmkd.jobs.export import export_teacher

    args = parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    plain_dir = os.path.abspath(args.plain_dir)
    common = common_config(args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "device": device_description(torch_threads=True), "args": vars(args)}

    # the plain SASRec of the cpu profile (its item table is the E4SRec table of every teacher here)
    sasrec_config = {**common, **sasrec_size(64, 2), "inner_size": 256, "seed": 2020, "epochs": 10, "stopping_step": 2}
    sasrec = run_once("SASRec", args.dataset, sasrec_config, os.path.join(out_dir, "SASRec-64"))

    # cost per training step of each view, the token view included (not trained)
    cost = {}
    for view, extra in {**{v: VIEWS[v] for v in args.views}, "titles-tokens": TOKENS_VIEW}.items():
        cost[view] = training_seconds_per_batch(args.dataset, teacher_config(args, common, sasrec["checkpoint"], extra),
                                                args.cost_batches)
        print(f"cost: {view}: {cost[view]:.2f} s per training batch of 32", flush=True)

    teachers, students = {}, []
    lists_suffix = f"-xfit{args.cross_fit}" if args.cross_fit else ""  # which lists the students learn from
    for view in args.views:
        teacher_dir = os.path.join(out_dir, f"teacher-{view}")
        config = teacher_config(args, common, sasrec["checkpoint"], VIEWS[view])
        result = run_once("LLMRec", args.dataset, config, teacher_dir)
        artifact = os.path.join(teacher_dir, TEACHER_RUN_ARTIFACT)
        export_s = None
        if not os.path.isfile(artifact):
            started = time.perf_counter()
            export_teacher(teacher_dir, output=artifact, topk=50, show_progress=False,
                           compare_with=os.path.join(out_dir, "SASRec-64"))
            export_s = time.perf_counter() - started
        name = f"LLMRec-{args.layers}L-{view}"
        teachers[view] = {**row(result, args, "LLMRec", "teacher", name, 0), "train_time_s": result["train_time_s"],
                          "export_time_s": export_s, "cost_s_per_batch": cost[view]}
        if args.cross_fit:  # every training row's list from the fold teacher that never saw its user
            fold_results, fold_dirs = [], []
            for fold in range(args.cross_fit):  # a fold teacher reads a table that did not see its fold either
                held_out = {"cross_fit_folds": args.cross_fit, "cross_fit_fold": fold}
                fold_config = {**config, **held_out}
                if fold_config["item_table"] == sasrec["checkpoint"]:
                    fold_sasrec = run_once("SASRec", args.dataset, {**sasrec_config, **held_out},
                                           os.path.join(out_dir, f"SASRec-64-fold{fold}of{args.cross_fit}"))
                    fold_config["item_table"] = fold_sasrec["checkpoint"]
                fold_dir = f"{teacher_dir}-fold{fold}of{args.cross_fit}"
                fold_results.append(run_once("LLMRec", args.dataset, fold_config, fold_dir))
                fold_dirs.append(fold_dir)
                leak = item_table_leak(read_checkpoint(resolve_checkpoint(fold_dir))["config"])
                if leak:  # a run reused from an --out-dir of another recipe
                    raise SystemExit(f"{fold_dir}: {leak}; move it away to train it again")
            artifact = export_cross_fitted(teacher_dir, fold_dirs, 50, "auto",
                                           compare_with=os.path.join(out_dir, "SASRec-64"))
            teachers[view]["fold_teachers_ndcg@10"] = [r["test_result"]["ndcg@10"] for r in fold_results]
        with open(diagnostics_path(artifact), encoding="utf-8") as f:
            teachers[view]["lists"] = json.load(f)
        print(f"teacher {view}: test ndcg@10 {teachers[view]['ndcg@10']:.4f}", flush=True)
        for seed in args.seeds:
            for method in args.methods:
                config = {**common, **sasrec_size(32, 1), "seed": seed, "teacher": artifact, **METHODS[method]}
                result = run_once("KDSASRec", args.dataset, config,
                                  os.path.join(out_dir, f"teacher-{view}{lists_suffix}", f"SASRec32-{method}-seed{seed}"))
                students.append(row(result, args, "SASRec", method, name + lists_suffix, 32))
                print(f"{view} {method} seed {seed}: test ndcg@10 {students[-1]['ndcg@10']:.4f}", flush=True)
    plain = []
    for seed in args.seeds:
        config = {**common, **sasrec_size(32, 1), "seed": seed, **METHODS["none"]}
        result = run_once("KDSASRec", args.dataset, config, os.path.join(plain_dir, "no-teacher", f"SASRec32-none-seed{seed}"))
        plain.append(row(result, args, "SASRec", "none", "none", 32))

    merge_results([{k: v for k, v in t.items() if k in plain[0]} for t in teachers.values()] + students + plain,
                  args.results_json)
    with open(os.path.join(out_dir, f"teacher_views{lists_suffix}.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cost_s_per_batch": cost, "teachers": teachers, "students": students,
                   "plain": plain}, f, indent=2)

    print(f"\n{meta['date']}, commit {meta['commit']}, {meta['device']}\n")
    print("| teacher view | s / training batch (32) | epoch train s | export s | NDCG@10 | HR@10 | NDCG@20 | HR@20 "
          "| lists: target / history / plain-SASRec overlap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for view, t in teachers.items():
        lists = t["lists"]
        print(f"| {view} | {t['cost_s_per_batch']:.2f} | {t['train_time_s']:.0f} | "
              f"{t['export_time_s'] if t['export_time_s'] is None else round(t['export_time_s'])} | "
              + " | ".join(f"{t[m]:.4f}" for m in METRICS)
              + f" | {lists['target_in_list']:.1%} / {lists['history_in_list']:.1%} / {lists.get('student_overlap', float('nan')):.1%} |")
    print(f"| titles-tokens | {cost['titles-tokens']:.2f} | not trained | – | – | – | – | – | – |")
    for view, t in teachers.items():
        if "fold_teachers_ndcg@10" in t:
            print(f"{view}: fold teachers' test NDCG@10 " + ", ".join(f"{v:.4f}" for v in t["fold_teachers_ndcg@10"])
                  + " (the lists column above is the cross-fitted lists')")
    base = {r["seed"]: r["ndcg@10"] for r in plain}
    print("\n| teacher view | student | kd_method | NDCG@10 (mean ± std) | Δ vs plain per seed | mean Δ |")
    print("|---|---|---|---|---|---|")
    print(f"| – | SASRec-32 | none | {mean_std(list(base.values()))} | – | – |")
    for view in teachers:
        for method in args.methods:
            runs = [r for r in students if r["teacher"].endswith(view + lists_suffix) and r["kd_method"] == method]
            deltas = [r["ndcg@10"] - base[r["seed"]] for r in runs]
            values = [r["ndcg@10"] for r in runs]
            print(f"| {view}{lists_suffix} | SASRec-32 | {method} | {mean_std(values)} | "
                  + ", ".join(f"{d:+.4f}" for d in deltas)
                  + f" | {relative(statistics.mean(deltas), list(base.values()))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
