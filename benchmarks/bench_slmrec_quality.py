"""SLMRec quality over seeds (issue 5): SLMRec (student init from the base or from the teacher) vs its no-KD twin.

Reuses a finished pipeline run (``run_recbole_llmkd.py --pipeline=...``): its trained teacher (M layers) and its
profile. Each run has exactly the config of the pipeline's ``SLMRec`` or ``slm_twin`` step (``Pipeline.plan()``);
only the seed and ``slm_student_init`` vary:

  twin            LLMRec with the student's N layers, no teacher (the pipeline's slm_twin step)
  SLMRec-base     SLMRec, student from the first N layers of the pretrained base (the paper)
  SLMRec-teacher  SLMRec, student from a copy of the trained teacher's first N layers with their adapters
                  (an option the paper did not try)

Both protocols: RecBole full ranking (HR/NDCG@10/20) and, when the profile turns ``slm_eval_sampled`` on, the
SLMRec protocol (1 positive + 999 negatives: HR@1, HR@5, NDCG@5, MRR). Best epoch on validation, test read once.
The teacher's row is the pipeline's (one run). Cells are mean ± sample std over the seeds.

    .venv/bin/python benchmarks/bench_slmrec_quality.py --pipeline-dir runs/demo [--seeds 2020 2021 2022] \\
        [--rows twin SLMRec-base SLMRec-teacher] [--out-dir DIR] [--out FRAGMENT.md]

Every run writes to ``<out-dir>/<row>-seed<seed>/``; a run whose ``results.json`` exists is reused (resumable).
Not part of ``make test``.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)

from bench_kd_quality import load_pipeline_run  # noqa: E402
from recbole_llmkd.measure import device_description, git_commit  # noqa: E402

ROWS = {  # row -> (pipeline step, model, config on top of the step's)
    "twin": ("slm_twin", "LLMRec", {}),
    "SLMRec-base": ("SLMRec", "SLMRec", {"slm_student_init": "base"}),
    "SLMRec-teacher": ("SLMRec", "SLMRec", {"slm_student_init": "teacher"}),
}
METRICS = (("ndcg@10", "NDCG@10"), ("ndcg@20", "NDCG@20"), ("hit@10", "HR@10"), ("hit@20", "HR@20"),
           ("sampled_hit@1", "HR@1 (999)"), ("sampled_hit@5", "HR@5 (999)"), ("sampled_ndcg@5", "NDCG@5 (999)"),
           ("sampled_mrr", "MRR (999)"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", required=True, help="a finished pipeline run directory (report.json, teacher/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out-dir", default=None, help="run directories and JSON (default <pipeline-dir>/slmrec_quality)")
    parser.add_argument("--out", default=None, help="append the markdown fragment to this file")
    return parser.parse_args(argv)


def step_config(pipeline, step: str) -> dict:
    for name, _, config_dict in pipeline.plan():
        if name == step:
            return copy.deepcopy(config_dict)
    raise ValueError(f"the pipeline has no step {step!r}")


def cell(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv=None) -> dict:
    from recbole_llmkd.pipeline import fill_checkpoints
    from recbole_llmkd.report import load_result
    from recbole_llmkd.quick_start import run_or_reuse

    args = parse_args(argv)
    run = load_pipeline_run(args.pipeline_dir)
    pipeline = run["pipeline"]
    teacher_checkpoint_dir = os.path.join(run["pipeline_dir"], "teacher")
    finished_checkpoints = {step: load_result(pipeline.step_dir(step))["checkpoint"] for step, _, _ in pipeline.plan()
                            if os.path.isfile(os.path.join(pipeline.step_dir(step), "results.json"))}
    out_dir = os.path.abspath(args.out_dir or os.path.join(run["pipeline_dir"], "slmrec_quality"))
    os.makedirs(out_dir, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="bench_slmrec_quality_"))  # RecBole writes log/ into the cwd
    results = {}
    try:
        for row in args.rows:
            step, model, extra = ROWS[row]
            for seed in args.seeds:
                run_dir = os.path.join(out_dir, f"{row}-seed{seed}")
                config = {**step_config(pipeline, step), **extra, "seed": seed, "run_dir": run_dir,
                          "measure_throughput": False, "show_progress": False}
                config = fill_checkpoints(config, finished_checkpoints)  # e.g. the teacher's SASRec item table
                if model == "SLMRec":
                    config["teacher"] = teacher_checkpoint_dir
                # a finished run is reused, an interrupted one goes on from its checkpoint
                results[(row, seed)] = run_or_reuse(model, run["dataset"], run_dir, config_dict=config,
                                                    cmd_args=dict(run["overrides"]))[0]
                print(f"{row} seed {seed}: ndcg@10 {results[(row, seed)]['test_result']['ndcg@10']:.4f}", flush=True)
    finally:
        os.chdir(cwd)

    teacher = run["teacher_result"]["test_result"]
    present = [(key, title) for key, title in METRICS if key in teacher or any(key in r["test_result"] for r in results.values())]
    lines = [
        f"## SLMRec vs its no-KD twin over seeds ({run['dataset']}, profile `{run['profile'].get('profile')}`)",
        "",
        f"- machine: {device_description(torch_threads=True)}; date {datetime.now(timezone.utc).strftime('%Y-%m-%d')}, commit {git_commit()}",
        f"- profile: {run['profile'].get('description', '').strip()}",
        f"- pipeline: `{run['pipeline_dir']}` (teacher: its `teacher` step, one run); seeds {args.seeds}; "
        "mean ± sample std over seeds",
        "- protocols: RecBole full ranking (test, best epoch on validation NDCG@10) and the SLMRec protocol "
        "(1 positive + 999 negatives the user never touched, test)",
        f"- command: `.venv/bin/python benchmarks/bench_slmrec_quality.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        "| model | " + " | ".join(title for _, title in present) + " | NDCG@10 vs teacher | NDCG@10 vs twin | train s |",
        "|---|" + "---|" * (len(present) + 3),
        "| teacher (M layers) | " + " | ".join(cell([teacher.get(key)]) for key, _ in present) + " | – | – | "
        f"{run['teacher_result'].get('train_time_s', 0):.0f} |",
    ]
    twin_ndcg = [results[("twin", s)]["test_result"]["ndcg@10"] for s in args.seeds if ("twin", s) in results]
    for row in args.rows:
        runs = [results[(row, seed)] for seed in args.seeds]
        ndcg = statistics.mean(r["test_result"]["ndcg@10"] for r in runs)
        vs_teacher = f"{100 * ndcg / teacher['ndcg@10']:.1f}%"
        vs_twin = "–" if row == "twin" or not twin_ndcg else f"{100 * (ndcg / statistics.mean(twin_ndcg) - 1):+.1f}%"
        train = statistics.mean(r.get("train_time_s", 0) for r in runs)
        lines.append(f"| {row} | " + " | ".join(cell([r["test_result"].get(key) for r in runs]) for key, _ in present)
                     + f" | {vs_teacher} | {vs_twin} | {train:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(out_dir, "slmrec_quality.json"), "w", encoding="utf-8") as f:
        json.dump({f"{row}-seed{seed}": r["test_result"] for (row, seed), r in results.items()}, f, indent=2)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return {"text": text, "results": results}


if __name__ == "__main__":
    main()
