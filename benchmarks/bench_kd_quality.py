"""DLLM2Rec quality table (issue 4): every student x every kd_method x several seeds, beside the teacher.

Reuses a finished pipeline run (``run_recbole_llmkd.py --pipeline=...``): its trained teacher and exported
artifact, and its profile, so each run here has exactly the config of the pipeline's KD step
(profile ``common`` + ``students[S]`` + ``kd`` + ``{kd_method, seed, teacher}``, model ``KD<S>``), only the
``kd_method`` and the seed vary. ml-100k (or the pipeline's dataset), RecBole full ranking, best epoch on
validation, test read once per run; cells are mean ± sample std (ddof=1) over the seeds.

    .venv/bin/python benchmarks/bench_kd_quality.py --pipeline-dir runs/pipeline-cpu-ml-100k \\
        [--seeds 2020 2021 2022] [--students SASRec GRU4Rec BERT4Rec] [--methods none logit rd dllm2rec] \\
        [--variant NAME=BASE KEY=VALUE ...] [--out-dir DIR] [--out benchmarks/results/kd_quality.md]

Rows (what each student learns from the teacher):
  none      the plain student (KD<S> with kd_method none, teacher unset and ed_weight 0: no ranking KD, no embedding
            distillation, teacher file never opened; the same forward and loss as the RecBole model, in KDTrainer)
  logit     Hinton logit KD over the teacher's top-K scores; no embedding distillation
  rd        Tang & Wang ranking distillation over the teacher's top-K; no embedding distillation
  dllm2rec  importance-aware ranking distillation + collaborative embedding distillation (the full method)
  dllm2rec-noed  (optional) dllm2rec with ed_weight 0: ranking distillation only, the same ED setting as logit/rd

Every run writes to ``<out-dir>/<S>-<method>-seed<seed>/``; a run whose ``results.json`` exists is reused, so an
interrupted benchmark continues where it stopped. Writes ``kd_quality.csv`` (one row per run) and
``kd_quality.json`` into out-dir, prints the markdown fragment, and appends it to ``--out`` when given.
Not part of ``make test``.
"""
import argparse
import copy
import csv
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT  # noqa: E402
from recbole_llmkd.measure import device_description, git_commit  # noqa: E402
from tqdm import tqdm  # noqa: E402

STUDENTS = ("SASRec", "GRU4Rec", "BERT4Rec")
# Per-method config on top of the profile's kd section (applied last, so it wins).
METHODS = {
    "none": {"kd_method": "none", "ed_weight": 0.0},  # teacher is also unset for this row (see run_config)
    "logit": {"kd_method": "logit"},
    "rd": {"kd_method": "rd"},
    "dllm2rec": {"kd_method": "dllm2rec"},
    "dllm2rec-noed": {"kd_method": "dllm2rec", "ed_weight": 0.0},
}
DEFAULT_METHODS = ("none", "logit", "rd", "dllm2rec")
DEFAULT_SEEDS = (2020, 2021, 2022)
# (results key, column title); mrr@20 is shown when every run has it.
METRICS = (("ndcg@10", "NDCG@10"), ("ndcg@20", "NDCG@20"), ("hit@10", "HR@10"), ("hit@20", "HR@20"),
           ("mrr@20", "MRR@20"))
# Keys this benchmark sets per run; a pipeline override of one of them is not applied.
OWN_KEYS = {"seed", "run_dir", "kd_method", "teacher", "ed_weight", "measure_throughput", "show_progress"}


class BenchmarkError(ValueError):
    """The pipeline directory or the arguments cannot produce the table."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-dir", required=True,
                        help="a pipeline run directory (report.json, teacher/teacher_artifacts.safetensors)")
    parser.add_argument("--profile", default=None,
                        help="pipeline profile (name or yaml); default: the one report.json names. Needed when the "
                             "pipeline has no report.json yet (only its teacher step and export finished)")
    parser.add_argument("--dataset", default=None, help="default: report.json's dataset, else the profile's")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME=BASE KEY=VALUE",
                        help="a further row: method BASE (one of --methods' choices) with these config keys changed, "
                             "e.g. --variant dllm2rec-noneg=dllm2rec rd_neg_term=none (repeatable; runs after "
                             "--methods, directories <S>-NAME-seed<seed>)")
    parser.add_argument("--out-dir", default=None, help="run directories and CSV/JSON (default <pipeline-dir>/kd_quality)")
    parser.add_argument("--out", default=None, help="append the markdown fragment to this file")
    parser.add_argument("--show-progress", action="store_true", help="RecBole's per-epoch progress bars (off by default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def load_pipeline_run(pipeline_dir: str, profile: str = None, dataset: str = None) -> dict:
    """The pipeline (profile, dataset, command-line overrides), its teacher result and its artifact path."""
    from recbole_llmkd.pipeline import Pipeline, resolve_profile

    pipeline_dir = os.path.abspath(pipeline_dir)
    if not os.path.isdir(pipeline_dir):
        raise BenchmarkError(f"pipeline directory {pipeline_dir} does not exist: run the pipeline first "
                             "(run_recbole_llmkd.py --pipeline=cpu)")
    meta = {}
    report_path = os.path.join(pipeline_dir, "report.json")
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as f:
            meta = json.load(f)["meta"]
    elif profile is None:
        raise BenchmarkError(f"{pipeline_dir} has no report.json (the pipeline has not finished): pass --profile "
                             "with the profile it runs")
    if profile is not None:
        profile_path = resolve_profile(profile)
    elif os.path.isfile(meta.get("profile_file") or ""):
        profile_path = meta["profile_file"]
    else:
        profile_path = resolve_profile(meta["profile"])
    # the pipeline's --config_files too: its steps saw them (e.g. a dataset's load_col), so must the runs here
    pipeline = Pipeline(profile_path, run_dir=pipeline_dir, dataset=dataset or meta.get("dataset"),
                        overrides=meta.get("overrides") or {}, config_files=meta.get("config_files") or [])

    teacher_dir = os.path.join(pipeline_dir, "teacher")
    artifact = os.path.join(teacher_dir, TEACHER_RUN_ARTIFACT)
    teacher_results = os.path.join(teacher_dir, "results.json")
    for path, what in ((teacher_results, "the teacher's results.json"), (artifact, "the teacher artifact")):
        if not os.path.isfile(path):
            raise BenchmarkError(f"{pipeline_dir}: {what} is missing ({path}); the pipeline's teacher and export "
                                 "steps must have finished")
    with open(teacher_results, encoding="utf-8") as f:
        teacher_result = json.load(f)
    return {
        "pipeline": pipeline,
        "pipeline_dir": pipeline_dir,
        "profile_path": profile_path,
        "profile": pipeline.profile,
        "dataset": pipeline.dataset,
        "overrides": dict(pipeline.overrides),
        "teacher_result": teacher_result,
        "artifact": artifact,
        "pipeline_commit": meta.get("commit"),
    }


def kd_step_config(pipeline: dict, student: str) -> dict:
    """The config_dict of the pipeline's ``KD<student>`` step (``Pipeline.plan()``)."""
    for step, _, config_dict in pipeline["pipeline"].plan():
        if step == f"KD{student}":
            return copy.deepcopy(config_dict)
    raise BenchmarkError(f"the pipeline of {pipeline['profile_path']} has no step KD{student}")


def run_config(pipeline: dict, student: str, method: str, seed: int, run_dir: str, show_progress: bool,
               changes: dict = None) -> dict:
    """The pipeline's KD-step config for ``KD<student>`` with this kd_method and seed (teacher unset for none), and a
    variant's typed ``changes`` (``variant_changes``) on top."""
    return {
        **kd_step_config(pipeline, student),
        **METHODS[method],
        **(changes or {}),
        "teacher": None if method == "none" else pipeline["artifact"],
        "seed": seed,
        "run_dir": run_dir,
        "measure_throughput": False,
        "show_progress": show_progress,
    }


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_variants(specs, methods) -> dict:
    """``--variant`` specs (lists ``[NAME=BASE, KEY=VALUE, ...]``) as ``{NAME: (BASE, {KEY: VALUE string})}``, in the
    order given. Refuses a NAME that is a method or given twice, a BASE that is not a method, a spec without changes,
    and the keys this benchmark sets per run (``OWN_KEYS`` but ``ed_weight``; for ``kd_method`` choose BASE)."""
    variants = {}
    for spec in specs:
        head, *pairs = spec
        name, sep, base = head.partition("=")
        if not sep or not VARIANT_NAME.fullmatch(name):
            raise BenchmarkError(f"--variant {' '.join(spec)}: begin with NAME=BASE, NAME made of letters, digits, "
                                 f"'_', '-', '.' (e.g. dllm2rec-noneg=dllm2rec)")
        if name in METHODS or name in variants:
            raise BenchmarkError(f"--variant {name}: the name is already a row ({sorted(set(METHODS) | set(variants))})")
        if base not in METHODS:
            raise BenchmarkError(f"--variant {name}={base}: BASE must be one of {sorted(METHODS)}")
        if base not in methods:
            raise BenchmarkError(f"--variant {name}={base}: add {base} to --methods too; the row is read against it")
        changes = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise BenchmarkError(f"--variant {name}: '{pair}' is not KEY=VALUE")
            if key in OWN_KEYS - {"ed_weight"}:  # a variant may change the ED weight its BASE row sets
                raise BenchmarkError(f"--variant {name}: this benchmark sets '{key}' per run"
                                     + (" (choose the BASE row instead)" if key == "kd_method" else ""))
            if key in changes:
                raise BenchmarkError(f"--variant {name}: '{key}' given twice")
            changes[key] = value
        if not changes:
            raise BenchmarkError(f"--variant {name}={base}: give at least one KEY=VALUE to change")
        variants[name] = (base, changes)
    return variants


def variant_changes(pipeline: dict, students, variants: dict) -> dict:
    """``{(student, NAME): {KEY: typed value}}``: each variant's values read as RecBole reads the command line, in
    the config of every student's run; an unknown key is refused here, before anything trains."""
    from recbole_llmkd.config import Config
    from recbole_llmkd.errors import RecboleLLMKDError

    typed = {}
    for name, (base, changes) in variants.items():
        for student in students:
            config_dict = run_config(pipeline, student, base, 0, os.devnull, False)
            try:
                config = Config(f"KD{student}", pipeline["dataset"], config_dict=config_dict,
                                cmd_args={**pipeline["overrides"], **changes})
                config.check_cmd_keys()
                if hasattr(config.model_class, "check_options"):  # the model's own checks, as the pipeline runs them
                    config.model_class.check_options(config)
            except (RecboleLLMKDError, ValueError, KeyError, TypeError) as err:
                raise BenchmarkError(f"--variant {name} (KD{student}): {err}") from None
            typed[(student, name)] = {key: config[key] for key in changes}
    return typed


def knowledge(student: str, config: dict, changes: dict = None) -> str:
    """What the student learns from the teacher under ``config`` (the effective KD switches, property defaults), and
    a variant's ``changes``."""
    text = _knowledge(student, config)
    if changes:
        text += "; " + ", ".join(f"{key}={value}" for key, value in changes.items())
    return text


def _knowledge(student: str, config: dict) -> str:
    from recbole_llmkd import registry
    from recbole_llmkd.config import load_yaml_file, plugin_model_chain, properties_dir
    import yaml

    defaults = {}  # the property files of the KD class's chain (Distiller.yaml, then KD<student>.yaml if any)
    for name in plugin_model_chain(registry.get_model(f"KD{student}")):
        path = os.path.join(properties_dir(), "model", f"{name}.yaml")
        if os.path.isfile(path):
            defaults.update(load_yaml_file(path, yaml.FullLoader) or {})
    merged = {**defaults, **{k: v for k, v in config.items() if v is not None or k == "teacher"}}
    method, k = merged["kd_method"], merged["rd_topk"]
    ranking = {
        "none": "no teacher",
        "logit": f"logit KD (T={merged['kd_temperature']:g}, top-{k}, λ={merged['rd_weight']:g})",
        "rd": f"Tang&Wang RD ({merged['tw_weighting']}, top-{k}, λ={merged['rd_weight']:g})",
        "dllm2rec": (f"importance-aware RD (top-{k}, γ={merged['gamma_p']:g}/{merged['gamma_c']:g}/"
                     f"{merged['gamma_o']:g}, λ={merged['rd_weight']:g})"),
    }[method]
    if method == "dllm2rec" and float(merged["ed_weight"]) > 0:
        return f"{ranking} + ED ({merged['ed_projector']}, ed_weight {merged['ed_weight']:g}, {merged['ed_apply_to']})"
    return ranking if method == "none" else f"{ranking}, no ED"


def run_all(pipeline: dict, args, out_dir: str, variants: dict = None, changes: dict = None):
    """Train/evaluate (or reuse) every run: ``args.methods``, then the ``variants`` (``parse_variants``) with their
    typed ``changes`` (``variant_changes``); returns (per-run rows, runs run now, runs reused)."""
    from recbole_llmkd.quick_start import run_or_reuse

    overrides = {k: v for k, v in pipeline["overrides"].items() if k not in OWN_KEYS}
    dropped = sorted(set(pipeline["overrides"]) - set(overrides))
    if dropped:
        print(f"pipeline overrides not applied (this benchmark sets them per run): {dropped}", file=sys.stderr)
    variants, changes = variants or {}, changes or {}
    rows_of = [(m, m) for m in args.methods] + [(name, base) for name, (base, _) in variants.items()]
    specs = [(s, row, base, seed) for s in args.students for row, base in rows_of for seed in args.seeds]
    rows, ran, reused = [], [], []
    progress = tqdm(specs, desc="kd_quality", unit="run", file=sys.stderr)
    for student, method, base, seed in progress:
        name = f"{student}-{method}-seed{seed}"
        run_dir = os.path.join(out_dir, name)
        changed = changes.get((student, method))
        config = run_config(pipeline, student, base, seed, run_dir, args.show_progress, changed)
        # a finished run is reused, an interrupted one goes on from its checkpoint
        result, was_reused = run_or_reuse(f"KD{student}", pipeline["dataset"], run_dir, config_dict=config,
                                          cmd_args=overrides)
        (reused if was_reused else ran).append(name)
        test = result["test_result"]
        row = {
            "student": student, "method": method, "seed": seed, "knowledge": knowledge(student, config, changed),
            "reused": name in reused, "run_dir": run_dir,
            "best_valid_ndcg@10": result.get("best_valid_result", {}).get("ndcg@10"),
            **{key: test.get(key) for key, _ in METRICS},
            "train_time_s": result.get("train_time_s"), "params_total": result.get("params_total"),
            "selected_on": result.get("selected_on"),
        }
        for key, _ in METRICS:
            value = row[key]
            if value is not None and not math.isfinite(value):
                raise BenchmarkError(f"{name}: test {key} is {value} (see {run_dir}/run.log)")
        rows.append(row)
        progress.write(f"{name}: ndcg@10 {test.get('ndcg@10'):.4f} hit@10 {test.get('hit@10'):.4f}"
                       f"{' (reused)' if row['reused'] else ''}", file=sys.stderr)
    return rows, ran, reused


def _mean_std(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _cell(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def summarize(rows, teacher_result, students, methods, metric_keys):
    """One entry per (student, method) plus the teacher: mean/std of each metric over the seeds."""
    from recbole_llmkd.report import relative_gain

    teacher_test = teacher_result["test_result"]
    table = [{"model": "LLMRec (teacher)", "method": "–", "knowledge": "–", "n_seeds": 1,
              **{f"{k}_mean": teacher_test.get(k) for k in metric_keys}, **{f"{k}_std": None for k in metric_keys},
              "train_time_s_mean": teacher_result.get("train_time_s"), "ndcg@10_vs_none_%": None}]
    for student in students:
        entries = []
        for method in methods:
            runs = [r for r in rows if r["student"] == student and r["method"] == method]
            entry = {"model": f"KD{student}", "method": method, "knowledge": runs[0]["knowledge"],
                     "n_seeds": len(runs), "seeds": [r["seed"] for r in runs]}
            for key in metric_keys:
                entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([r[key] for r in runs])
            entry["train_time_s_mean"] = statistics.fmean(r["train_time_s"] for r in runs)
            entries.append(entry)
        none = next((e for e in entries if e["method"] == "none"), None)
        for entry in entries:
            entry["ndcg@10_vs_none_%"] = (
                relative_gain(entry["ndcg@10_mean"], none["ndcg@10_mean"]) if none and entry is not none else None
            )
        table += entries
    return table


def fragment(pipeline, args, table, metric_keys, argv, n_ran, n_reused) -> str:
    profile = pipeline["profile"]
    common = profile.get("common") or {}
    teacher = profile.get("teacher") or {}
    teacher_desc = ", ".join(f"{k} {v}" for k, v in teacher.items())
    export = ", ".join(f"{k} {v}" for k, v in (profile.get("export") or {}).items()) or "defaults"
    slice_keys = ("user_inter_num_interval", "item_inter_num_interval", "MAX_ITEM_LIST_LENGTH", "epochs",
                  "stopping_step", "train_batch_size", "valid_metric")
    data_slice = ", ".join(f"{k} {common[k]}" for k in slice_keys if k in common)
    titles = dict(METRICS)
    seeds = ", ".join(map(str, args.seeds))
    command = "benchmarks/bench_kd_quality.py " + shlex.join(argv)
    lines = [
        f"## DLLM2Rec quality: students × kd_method ({pipeline['dataset']}, profile `{profile.get('profile')}`)",
        "",
        f"- machine: {device_description(torch_threads=True)}",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d')}, commit {git_commit()}, torch {torch.__version__}"
        f" (pipeline run at commit {pipeline['pipeline_commit'] or 'unknown'})",
        f"- profile: {profile.get('profile')} — {' '.join(str(profile.get('description', '')).split())}",
        f"- dataset slice / training: {pipeline['dataset']}, {data_slice}",
        f"- teacher (LLMRec): {teacher_desc}; export {export}. **Teacher row: one run, the pipeline's seed** "
        f"({pipeline['teacher_result'].get('seed', 'unknown')}), not a mean.",
        f"- students: profile `students` + `kd` sections (the pipeline's KD step config), model KD<S> trained by "
        f"KDTrainer; only kd_method and seed vary. Seeds: {seeds}; cells are mean ± sample std (ddof=1) over "
        "the seeds",
        "- protocol: RecBole full ranking over all items, leave-one-out in time order, best epoch on validation "
        "NDCG@10, test read once per run",
        "- rows: `none` = the student with no teacher knowledge at all (kd_method none, teacher unset, ed_weight 0: "
        "no ranking KD, no embedding distillation (ED)); `logit` and `rd` = ranking KD only, **without ED** (in "
        "this code ED exists only under kd_method dllm2rec); `dllm2rec` = importance-aware RD **+ ED** (the full "
        "method, as the paper compares it with its baselines); `dllm2rec-noed` (when listed) = dllm2rec with "
        "ed_weight 0, the ranking-only comparison with logit/rd. The column 'teacher knowledge' gives each row's "
        "effective switches",
        *([f"- variants (`--variant`; each is its BASE row with these keys changed, the same seeds): "
            + "; ".join(f"`{' '.join(spec)}`" for spec in args.variant)] if args.variant else []),
        f"- pipeline: `{pipeline['pipeline_dir']}`; runs: {n_ran} trained now, {n_reused} reused",
        f"- command: `.venv/bin/python {command}`",
        "",
    ]
    header = ["model", "kd_method", "teacher knowledge"] + [titles[k] for k in metric_keys] + [
        "NDCG@10 vs none", "seeds", "train s (mean)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for entry in table:
        gain = entry["ndcg@10_vs_none_%"]
        cells = [entry["model"], entry["method"], entry["knowledge"]]
        cells += [_cell(entry[f"{k}_mean"], entry[f"{k}_std"]) for k in metric_keys]
        cells += ["–" if gain is None else f"{gain:+.1f}%", str(entry["n_seeds"]),
                  "–" if entry["train_time_s_mean"] is None else f"{entry['train_time_s_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir, rows, table, meta):
    csv_path = os.path.join(out_dir, "kd_quality.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path = os.path.join(out_dir, "kd_quality.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "runs": rows, "table": table}, f, indent=2)
    return csv_path, json_path


def main(argv=None) -> dict:
    """Run the benchmark; returns the fragment, output paths, the summary table and which runs ran / were reused."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise BenchmarkError(f"--seeds must be distinct, got {args.seeds}")
    pipeline = load_pipeline_run(args.pipeline_dir, args.profile, args.dataset)
    missing = [s for s in args.students if s not in pipeline["profile"]["students"]]
    if missing:
        raise BenchmarkError(f"profile {pipeline['profile_path']} has no students section for {missing}")
    variants = parse_variants(args.variant, args.methods)
    changes = variant_changes(pipeline, args.students, variants)  # a mistyped key fails here, before any training
    methods = list(args.methods) + list(variants)
    out_dir = os.path.abspath(args.out_dir or os.path.join(pipeline["pipeline_dir"], "kd_quality"))
    out_file = os.path.abspath(args.out) if args.out else None
    os.makedirs(out_dir, exist_ok=True)

    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="bench_kd_quality_"))  # RecBole writes log/ and saved/ into the cwd
    try:
        rows, ran, reused = run_all(pipeline, args, out_dir, variants, changes)
    finally:
        os.chdir(cwd)

    metric_keys = [k for k, _ in METRICS if all(r[k] is not None for r in rows)
                   and pipeline["teacher_result"]["test_result"].get(k) is not None]
    table = summarize(rows, pipeline["teacher_result"], args.students, methods, metric_keys)
    text = fragment(pipeline, args, table, metric_keys, argv, len(ran), len(reused))
    meta = {"pipeline_dir": pipeline["pipeline_dir"], "profile_file": pipeline["profile_path"],
            "dataset": pipeline["dataset"], "seeds": args.seeds, "students": args.students, "methods": methods,
            "variants": {name: {"base": base, "changes": changed} for name, (base, changed) in variants.items()},
            "commit": git_commit(), "machine": device_description(torch_threads=True), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs_run": ran, "runs_reused": reused}
    csv_path, json_path = write_outputs(out_dir, rows, table, meta)
    print(text)
    if out_file:
        os.makedirs(os.path.dirname(out_file), exist_ok=True)
        with open(out_file, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return {"fragment": text, "csv": csv_path, "json": json_path, "table": table, "runs": rows,
            "runs_run": ran, "runs_reused": reused, "out_dir": out_dir}


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as err:
        sys.exit(f"bench_kd_quality: {err}")
