"""Issue 14's benchmark grid: datasets x teachers x students x kd methods x seeds, run as parallel processes.

Meant for one machine with many cores and a GPU (each run is a separate process; a tiny student leaves a GPU
mostly idle, so many share it). Start CUDA MPS first (``nvidia-cuda-mps-control -d``): without it the processes
time-slice the GPU and each training step waits for the others (measured on an H200 with 14 runs: 12-14x slower,
``benchmarks/RESULTS.md``). On the 2-core development VM use ``bench_kd_control.py`` instead.

    python benchmarks/bench_kd_grid.py --out-dir runs/kd_grid [--datasets ml-100k lastfm] [--data-path ../shared/data]
        [--workers 14] [--budget-s 540] [--gpu-id 0] [--seeds 2020 2021 2022] [--epochs 50] [--stopping-step 5]
    python benchmarks/bench_kd_grid.py --out-dir runs/kd_grid --report [--merge]   # tables (and kd_quality.json)

What runs, in this order of priority (a run starts only while the budget leaves room for it; what did not run is
listed in the summary, not guessed):
1. teacher candidates per dataset: an ID-only SASRec and a semantic one (item table initialised from MiniLM title
   embeddings; ED source the 384-d embeddings), each at 2 x 128 and 4 x 256, trained to convergence and exported
   with top-50. Per kind the candidate with the best validation NDCG@10 becomes that kind's teacher; test is read
   once per run, never used to choose.
2. the plain students (``kd_method: none``) and the KD students, hidden ``--student-hidden`` (default 32; SASRec 1
   layer, GRU4Rec, BERT4Rec 1 layer), every student up to ``--epochs`` epochs with patience ``--stopping-step``, best
   epoch on validation NDCG@10 (``--valid-smoothing N``: on the mean of the last N evaluations).

Every run has its own directory; a run whose ``results.json`` exists is reused, so an interrupted grid continues
where it stopped. ``rows.jsonl`` in out-dir gets one line per finished run as it finishes (issue 14's row format
plus ``users``, ``best_valid_ndcg@10``, ``train_time_s``, ``device``); ``--report`` prints the markdown tables (mean
+- sample std over seeds, the paired per-seed difference against the plain student, the teacher's row) and with
``--merge`` replaces the same rows in ``benchmarks/results/kd_quality.json``. Not part of ``make test``.
"""
import argparse
import heapq
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_kd_control as control  # noqa: E402

TEACHER_SIZES = ("2x128", "4x256")  # "<layers>x<hidden>" candidates per teacher kind
# (priority, student, methods): lower runs first. The plain SASRec and its KD twins are the target of issue 14.
PLAN = (
    (1, "SASRec", ("none",)),
    (2, "SASRec", ("dllm2rec-noed", "dllm2rec")),
    (3, "SASRec", ("rd", "logit")),
    (4, "GRU4Rec", ("none",)),
    (4, "BERT4Rec", ("none",)),
    (4, "SASRec", ("none-textinit",)),
    (5, "GRU4Rec", ("dllm2rec-noed", "dllm2rec")),
    (5, "BERT4Rec", ("dllm2rec-noed", "dllm2rec")),
    (6, "GRU4Rec", ("rd", "logit")),
    (6, "BERT4Rec", ("rd", "logit")),
)
METHODS = control.METHODS
TEACHER_KINDS = ("sasrec", "semantic")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/kd_grid")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "lastfm"])
    parser.add_argument("--data-path", default=None, help="folder holding <dataset>/ for datasets other than ml-100k")
    parser.add_argument("--slice", default="[0,inf)", help="user_inter_num_interval of every dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--student-hidden", type=int, default=32,
                        help="the students' width (SASRec / BERT4Rec hidden size, GRU4Rec embedding size)")
    parser.add_argument("--valid-smoothing", type=control.evaluation_count, default=1, metavar="N",
                        help="the students' valid_smoothing (the mean of the last N validation scores picks their "
                             "epoch; the teachers keep RecBole's rule); N > 1: runs <run>-vs<N>, rows with "
                             "valid_smoothing")
    parser.add_argument("--teacher-epochs", type=int, default=100)
    parser.add_argument("--teacher-sizes", nargs="+", default=list(TEACHER_SIZES),
                        help="teacher candidates per kind, <layers>x<hidden>; the best on validation is used")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="no run starts after this many seconds; runs still going at the end are stopped")
    parser.add_argument("--min-left-s", type=float, default=60.0,
                        help="a run starts only while at least this much of the budget is left")
    parser.add_argument("--gpu-id", default="", help="RecBole gpu_id ('' = CPU)")
    parser.add_argument("--max-priority", type=int, default=6, help="skip the plan's rows above this priority")
    parser.add_argument("--cross-fit", type=control.fold_count, default=None, metavar="K",
                        help="also K fold teachers per teacher (data/folds.py) and a cross-fitted artifact; every KD "
                             "row then runs from both lists, the cross-fitted ones labelled <teacher>-xfit<K>")
    parser.add_argument("--report", action="store_true", help="print the tables of rows.jsonl and exit")
    parser.add_argument("--merge", action="store_true", help="with --report: merge the rows into kd_quality.json")
    parser.add_argument("--results-json", default=control.RESULTS_JSON,
                        help="the kd_quality.json --merge writes to (default the repository's)")
    parser.add_argument("--run-job", default=None, help=argparse.SUPPRESS)  # internal: one run, in a child process
    return parser.parse_args(argv)


def common_config(args, dataset: str) -> dict:
    data_args = argparse.Namespace(**{**vars(args), "data_path": None if dataset == "ml-100k" else args.data_path})
    config = control.common_config(data_args)
    config.update({"gpu_id": args.gpu_id, "user_inter_num_interval": args.slice})
    return config  # Last.fm's item text (artist names) comes from properties/dataset/lastfm.yaml


def teacher_job(args, dataset: str, kind: str, layers: int, hidden: int) -> dict:
    model, extra, item_text = control.TEACHERS[kind]
    config = {**common_config(args, dataset), **control.sasrec_size(hidden, layers), **extra, "seed": 2020,
              "epochs": args.teacher_epochs, "stopping_step": args.stopping_step}
    name = control.teacher_name(kind, layers, hidden)
    return {"role": "teacher", "dataset": dataset, "kind": kind, "name": name, "hidden": hidden, "model": model,
            "config": config, "item_text": item_text, "topk": args.topk, "cross_fit": args.cross_fit,
            "run_dir": os.path.join(args.out_dir, dataset, "teachers", name)}


def student_job(args, dataset: str, student: str, method: str, seed: int, teacher: dict = None) -> dict:
    hidden, selection = args.student_hidden, control.selection(args)
    config = {**common_config(args, dataset), **control.student_size(student, hidden), "seed": seed,
              **METHODS[method], **selection}
    if teacher is not None:
        config["teacher"] = teacher["artifact"]
    where = teacher["name"] if teacher is not None else "no-teacher"
    run = f"{student}{hidden}-{method}-seed{seed}{control.selection_suffix(args)}"
    return {"role": "student", "dataset": dataset, "student": student, "method": method, "seed": seed,
            "teacher": teacher["name"] if teacher is not None else "none", "hidden": hidden, "model": f"KD{student}",
            "selection": selection, "config": config, "run_dir": os.path.join(args.out_dir, dataset, where, run)}


def run_job(job: dict) -> None:
    """In a child process: train (or reuse) one run; a teacher is then exported with its list diagnostics."""
    from recbole_llmkd.jobs.export import export_teacher

    control.run_once(job["model"], job["dataset"], job["config"], job["run_dir"])
    if job["role"] == "teacher":
        artifact = os.path.join(job["run_dir"], control.TEACHER_RUN_ARTIFACT)
        if not os.path.isfile(artifact):
            export_teacher(job["run_dir"], output=artifact, topk=job["topk"], item_text=job["item_text"],
                           show_progress=False)
        if job.get("cross_fit"):
            control.cross_fitted_artifact(job["model"], job["dataset"], job["config"], job["run_dir"],
                                          job["cross_fit"], job["topk"], job["item_text"])


def result_row(job: dict, device: str) -> dict:
    with open(os.path.join(job["run_dir"], "results.json"), encoding="utf-8") as f:
        result = json.load(f)
    row = {"dataset": job["dataset"], "users": job["config"]["user_inter_num_interval"],
           "student": job.get("student", "SASRec"), "kd_method": job.get("method", "teacher"),
           "teacher": job.get("teacher", job.get("name")), "hidden_size": job["hidden"], **control.measured(result),
           **job.get("selection", {}), "device": device}
    if job["role"] == "teacher":
        row["teacher"] = job["name"]
        diagnostics = control.diagnostics_path(os.path.join(job["run_dir"], control.TEACHER_RUN_ARTIFACT))
        if os.path.isfile(diagnostics):
            with open(diagnostics, encoding="utf-8") as f:
                row["lists"] = json.load(f)
    return row


class Grid:
    """The scheduler: a priority queue of jobs, at most ``workers`` child processes, teachers chosen on validation."""

    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.queue, self.counter = [], 0
        self.running = {}  # Popen -> job
        self.rows_path = os.path.join(args.out_dir, "rows.jsonl")
        self.done, self.failed = [], []
        self.candidates = {}  # (dataset, kind) -> finished teacher rows
        from recbole_llmkd.measure import device_description

        self.device = (device_description("cuda") if args.gpu_id != ""
                       else device_description("cpu")) + f", {args.workers} runs at a time, 1 CPU thread each"

    def push(self, priority: int, job: dict) -> None:
        heapq.heappush(self.queue, (priority, self.counter, job))
        self.counter += 1

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def launch(self, job: dict) -> None:
        os.makedirs(job["run_dir"], exist_ok=True)
        log = open(os.path.join(job["run_dir"], "job.log"), "w", encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run-job", json.dumps(job)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=job["run_dir"], env=env)
        job["_log"], job["_started"] = log, time.monotonic()
        self.running[process] = job
        print(f"[{self.elapsed()}] start {label(job)}", flush=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.start:6.0f}s"

    def finish(self, process, job: dict) -> None:
        job.pop("_log").close()
        seconds = time.monotonic() - job.pop("_started")
        if process.returncode != 0:
            self.failed.append(label(job))
            print(f"[{self.elapsed()}] FAILED {label(job)} (rc {process.returncode}, {seconds:.0f} s): "
                  f"see {job['run_dir']}/job.log", flush=True)
            return
        row = result_row(job, self.device)
        with open(self.rows_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.done.append(row)
        print(f"[{self.elapsed()}] done  {label(job)}: valid {row['best_valid_ndcg@10']:.4f} test ndcg@10 "
              f"{row['ndcg@10']:.4f} ({seconds:.0f} s)", flush=True)
        if job["role"] == "teacher":
            self.teacher_finished(job, row)

    def teacher_finished(self, job: dict, row: dict) -> None:
        key = (job["dataset"], job["kind"])
        self.candidates.setdefault(key, []).append((row, job))
        if len(self.candidates[key]) < len(self.args.teacher_sizes):
            return
        best_row, best_job = max(self.candidates[key], key=lambda pair: pair[0]["best_valid_ndcg@10"])
        teachers = [{"name": best_job["name"],
                     "artifact": os.path.abspath(os.path.join(best_job["run_dir"], control.TEACHER_RUN_ARTIFACT))}]
        if self.args.cross_fit:  # the same teacher's cross-fitted lists
            teachers.append({"name": f"{best_job['name']}-xfit{self.args.cross_fit}",
                             "artifact": os.path.abspath(control.cross_fit_artifact_path(best_job["run_dir"],
                                                                                  self.args.cross_fit))})
        print(f"[{self.elapsed()}] teacher {key}: {best_job['name']} (valid {best_row['best_valid_ndcg@10']:.4f})",
              flush=True)
        with open(os.path.join(self.args.out_dir, "chosen_teachers.jsonl"), "a", encoding="utf-8") as f:
            for teacher in teachers:
                f.write(json.dumps({"dataset": job["dataset"], "kind": job["kind"], **teacher}) + "\n")
        for priority, student, methods in PLAN:
            for method in methods:
                if method in control.NO_TEACHER or priority > self.args.max_priority:
                    continue
                for seed in self.args.seeds:
                    for teacher in teachers:
                        self.push(priority, student_job(self.args, job["dataset"], student, method, seed, teacher))

    def run(self) -> int:
        args = self.args
        for dataset in args.datasets:
            for kind in TEACHER_KINDS:
                for size in args.teacher_sizes:
                    layers, hidden = (int(part) for part in size.split("x"))
                    self.push(0, teacher_job(args, dataset, kind, layers, hidden))
            for priority, student, methods in PLAN:
                for method in methods:
                    if method in control.NO_TEACHER and priority <= args.max_priority:
                        for seed in args.seeds:
                            self.push(priority, student_job(args, dataset, student, method, seed))
        while self.queue or self.running:
            while self.queue and len(self.running) < args.workers and self.left_s() > args.min_left_s:
                self.launch(heapq.heappop(self.queue)[2])
            if not self.running:
                break
            if self.left_s() <= 0:
                for process, job in list(self.running.items()):
                    process.kill()
                    process.wait()
                    job.pop("_log").close()
                    self.failed.append(label(job) + " (stopped at the budget)")
                self.running.clear()
                break
            time.sleep(0.5)
            for process, job in list(self.running.items()):
                if process.poll() is not None:
                    del self.running[process]
                    self.finish(process, job)
        not_run = [label(job) for _, _, job in sorted(self.queue)]
        summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": self.device,
                   "args": {k: v for k, v in vars(args).items() if k != "run_job"},
                   "wall_s": round(time.monotonic() - self.start, 1), "finished": len(self.done),
                   "failed": self.failed, "not_run": not_run}
        with open(os.path.join(args.out_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        print(f"finished {len(self.done)}, failed {len(self.failed)}, not run {len(not_run)} in {summary['wall_s']} s",
              flush=True)
        return 0


def label(job: dict) -> str:
    if job["role"] == "teacher":
        return f"{job['dataset']} teacher {job['name']}"
    return f"{job['dataset']} {job['student']} {job['method']} seed {job['seed']} (teacher {job['teacher']})"


def read_rows(out_dir: str) -> list:
    with open(os.path.join(out_dir, "rows.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    latest = {}
    for row in rows:  # a rerun replaces the row of the same run
        latest[run_key(row)] = row
    return list(latest.values())


def table_key(row: dict) -> tuple:
    """The report's table of a student row: the student, its width and its selection rule."""
    return row["student"], row["hidden_size"], row.get("valid_smoothing", 1)


def run_key(row: dict) -> tuple:
    """What makes a row another run: dataset, its table (student, width, selection rule), kd_method, teacher, seed."""
    return row["dataset"], *table_key(row), row["kd_method"], row["teacher"], row["seed"]


def report(out_dir: str) -> str:
    rows = read_rows(out_dir)
    chosen = set()  # (dataset, teacher name) of the chosen teachers
    path = os.path.join(out_dir, "chosen_teachers.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            chosen = {(entry["dataset"], entry["name"]) for entry in map(json.loads, f)}
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        teachers = [r for r in rows if r["dataset"] == dataset and r["kd_method"] == "teacher"]
        chosen_here = {name for where, name in chosen if where == dataset}
        lines += [f"\n{dataset}: teacher candidates (one run each, seed 2020; chosen per kind on validation)\n",
                  "| teacher | valid NDCG@10 | NDCG@10 | HR@10 | NDCG@20 | HR@20 | train lists: target / history | chosen |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(teachers, key=lambda r: r["teacher"]):
            lists = r.get("lists") or {}
            share = (f"{lists['target_in_list']:.1%} / {lists['history_in_list']:.1%}" if "target_in_list" in lists
                     else "–")
            lines.append(f"| {r['teacher']} | {r['best_valid_ndcg@10']:.4f} | "
                         + " | ".join(f"{r[m]:.4f}" for m in control.METRICS)
                         + f" | {share} | {'yes' if r['teacher'] in chosen_here else ''} |")
        tables = {}  # one table per student, width and selection rule, in the order the rows came
        for r in rows:
            if r["dataset"] == dataset and r["kd_method"] != "teacher":
                tables.setdefault(table_key(r), []).append(r)
        for (student, hidden, smoothing), group in tables.items():
            plain = {r["seed"]: r for r in group if r["kd_method"] == "none"}
            rule = f", valid_smoothing {smoothing}" if smoothing != 1 else ""
            lines += [f"\n{dataset}, {student}-{hidden} students{rule} (test; Δ against the plain student of the same "
                      f"seed)\n",
                      "| kd_method | teacher | seeds | valid NDCG@10 | NDCG@10 | HR@10 | NDCG@20 | HR@20 | Δ NDCG@10 per seed | mean Δ |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for (method, teacher) in dict.fromkeys((r["kd_method"], r["teacher"]) for r in group):
                runs = sorted((r for r in group if r["kd_method"] == method and r["teacher"] == teacher),
                              key=lambda r: r["seed"])
                deltas = [r["ndcg@10"] - plain[r["seed"]]["ndcg@10"] for r in runs if r["seed"] in plain]
                base = [plain[r["seed"]]["ndcg@10"] for r in runs if r["seed"] in plain]
                per_seed = ", ".join(f"{d:+.4f}" for d in deltas) if method != "none" else "–"
                mean_delta = (f"{statistics.mean(deltas):+.4f} ({control.relative(statistics.mean(deltas), base)})"
                              if method != "none" and deltas else "–")
                lines.append(f"| {method} | {teacher} | {len(runs)} | {control.mean_std([r['best_valid_ndcg@10'] for r in runs])} | "
                             + " | ".join(control.mean_std([r[m] for r in runs]) for m in control.METRICS)
                             + f" | {per_seed} | {mean_delta} |")
    return "\n".join(lines)


def merge(out_dir: str, results_json: str = control.RESULTS_JSON) -> None:
    keep = ("dataset", "users", "student", "kd_method", "teacher", "hidden_size", "seed", *control.METRICS,
            "best_valid_ndcg@10", "train_time_s", "valid_smoothing", "device")
    control.merge_results([{k: r[k] for k in keep if k in r} for r in read_rows(out_dir)], results_json)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_job is not None:
        run_job(json.loads(args.run_job))
        return 0
    args.out_dir = os.path.abspath(args.out_dir)
    if args.report:
        print(report(args.out_dir))
        if args.merge:
            merge(args.out_dir, args.results_json)
        return 0
    if args.data_path:
        args.data_path = os.path.abspath(args.data_path)
    os.makedirs(args.out_dir, exist_ok=True)
    return Grid(args).run()


if __name__ == "__main__":
    sys.exit(main())
