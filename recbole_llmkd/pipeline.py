"""The main job: LLM teacher -> artifacts -> plain and distilled students -> SLMRec -> report, in one run directory.

    run_recbole_llmkd.py --pipeline=auto|tiny|cpu|full|PROFILE.yaml [--dataset=ml-100k] [--run_dir=...]
                         [--llm_backbone=...] [--key=value ...]

A profile (``properties/pipeline/<name>.yaml``) fixes every step's config. Each step runs in its own
sub-directory; a step whose ``results.json`` exists is reused, so a rerun after an interruption continues where it
stopped (the artifact export resumes chunk by chunk). ``--key=value`` on the command line overrides the profile's
``common`` config of every step.
"""
import copy
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from typing import Dict, List, Optional

import torch
import yaml
from tqdm import tqdm

from recbole_llmkd.config import load_yaml_file, properties_dir
from recbole_llmkd.report import (
    ReportRow,
    load_result,
    markdown_table,
    plot_curves,
    plot_quality_vs_throughput,
    report_table,
    write_csv,
)

logger = logging.getLogger("recbole_llmkd")

PROFILE_KEYS = {"profile", "description", "dataset", "common", "teacher", "export", "students", "kd", "slmrec"}
REPORT_COLUMNS = [
    "model", "role", "params_total", "params_trainable", "train_time_s", "throughput_users_per_s",
    "speedup_vs_teacher", "hit@10", "hit@20", "ndcg@10", "ndcg@20", "mrr@20",
    "ndcg@10_gain_vs_twin_%", "ndcg@10_vs_teacher_%",
]
SAMPLED_COLUMNS = ["model", "sampled_hit@1", "sampled_hit@5", "sampled_ndcg@5", "sampled_mrr"]


class PipelineError(ValueError):
    """A profile or pipeline input that cannot run."""


def resolve_profile(name: str) -> str:
    """``auto`` -> ``full`` with a GPU, ``cpu`` without; a profile name -> its shipped yaml; else a path."""
    if name == "auto":
        name = "full" if torch.cuda.is_available() else "cpu"
    shipped = os.path.join(properties_dir(), "pipeline", f"{name}.yaml")
    if os.path.isfile(shipped):
        return shipped
    if os.path.isfile(name):
        return os.path.abspath(name)
    available = sorted(f[:-5] for f in os.listdir(os.path.join(properties_dir(), "pipeline")) if f.endswith(".yaml"))
    raise PipelineError(f"unknown pipeline profile '{name}': use auto, one of {available}, or a yaml file path")


def load_profile(path: str) -> dict:
    profile = load_yaml_file(path, yaml.FullLoader)
    unknown = sorted(set(profile) - PROFILE_KEYS)
    if unknown:
        raise PipelineError(f"{path}: unknown profile key(s) {unknown}; allowed: {sorted(PROFILE_KEYS)}")
    for key in ("teacher", "students", "slmrec"):
        if key not in profile:
            raise PipelineError(f"{path}: profile needs a '{key}' section")
    if not isinstance(profile["students"], dict):
        raise PipelineError(f"{path}: 'students' maps each RecBole student (SASRec, GRU4Rec, BERT4Rec) to its config")
    if "llm_n_layers" not in profile["slmrec"]:
        raise PipelineError(f"{path}: 'slmrec' needs llm_n_layers (the student's decoder layers)")
    return profile


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


class Pipeline:
    """Runs the steps of one profile in ``run_dir``; every step is skipped when its results already exist."""

    def __init__(self, profile_path: str, run_dir: Optional[str] = None, dataset: Optional[str] = None,
                 overrides: Optional[Dict[str, str]] = None):
        self.profile_path = profile_path
        self.profile = load_profile(profile_path)
        self.dataset = dataset or self.profile.get("dataset", "ml-100k")
        name = self.profile.get("profile", os.path.splitext(os.path.basename(profile_path))[0])
        self.run_dir = os.path.abspath(run_dir or os.path.join("runs", f"pipeline-{name}-{self.dataset}"))
        self.overrides = dict(overrides or {})
        os.makedirs(self.run_dir, exist_ok=True)
        self.steps_reused: List[str] = []
        self.steps_run: List[str] = []

    # ----- one step ---------------------------------------------------------------------------------
    def step_dir(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def run_model(self, step: str, model: str, config: dict) -> dict:
        """Train/evaluate ``model`` in ``<run_dir>/<step>``, or reuse the results a previous run left there."""
        from recbole_llmkd.quick_start import run_recbole_llmkd

        step_dir = self.step_dir(step)
        if os.path.isfile(os.path.join(step_dir, "results.json")):
            self.steps_reused.append(step)
            return load_result(step_dir)
        config_dict = {**copy.deepcopy(self.profile.get("common", {})), **config,
                       "run_dir": step_dir, "measure_throughput": True}
        result = run_recbole_llmkd(model, self.dataset, config_dict=config_dict, cmd_args=self.overrides)
        self.steps_run.append(step)
        return result

    # ----- the job ----------------------------------------------------------------------------------
    def run(self) -> dict:
        from recbole_llmkd.data.export import export_teacher

        profile = self.profile
        students = profile["students"]
        n_steps = 2 + 2 * len(students) + 2
        progress = tqdm(total=n_steps, desc="pipeline", unit="step", file=sys.stderr)
        started = time.perf_counter()

        teacher_result = self.run_model("teacher", "LLMRec", profile["teacher"])
        progress.update(1)
        artifact = os.path.join(self.step_dir("teacher"), "teacher_artifacts.safetensors")
        if os.path.isfile(artifact):
            self.steps_reused.append("export")
        else:
            export_teacher(self.step_dir("teacher"), output=artifact, **profile.get("export", {}))
            self.steps_run.append("export")
        progress.update(1)

        rows = [ReportRow("LLMRec (teacher)", "teacher", teacher_result)]
        for student, student_config in students.items():
            plain = self.run_model(student, student, dict(student_config or {}))
            progress.update(1)
            kd_config = {**(student_config or {}), **profile.get("kd", {}), "teacher": artifact}
            distilled = self.run_model(f"KD{student}", f"KD{student}", kd_config)
            progress.update(1)
            rows.append(ReportRow(student, "student", plain))
            rows.append(ReportRow(f"KD{student}", "kd-student", distilled, plain_twin=student))

        slm = profile["slmrec"]
        twin_name = f"LLMRec-{slm['llm_n_layers']}L (no KD)"
        twin = self.run_model("slm_twin", "LLMRec", {**profile["teacher"], **slm.get("twin", {}),
                                                      "llm_n_layers": slm["llm_n_layers"]})
        progress.update(1)
        slm_config = {k: v for k, v in slm.items() if k != "twin"}
        slmrec = self.run_model("SLMRec", "SLMRec", {**profile["teacher"], **slm_config,
                                                     "teacher": self.step_dir("teacher")})
        progress.update(1)
        progress.close()
        rows.append(ReportRow(twin_name, "slm-twin", twin))
        rows.append(ReportRow("SLMRec", "slm-student", slmrec, plain_twin=twin_name))

        meta = {
            "profile": profile.get("profile"),
            "profile_description": profile.get("description", ""),
            "profile_file": self.profile_path,
            "dataset": self.dataset,
            "device": device_description(),
            "date": datetime.now().isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "seeds": sorted({int(r.result.get("seed", -1)) for r in rows}),
            "steps_run": self.steps_run,
            "steps_reused": self.steps_reused,
            "pipeline_wall_time_s": time.perf_counter() - started,
            "overrides": self.overrides,
        }
        return self.write_report(rows, meta)

    def write_report(self, rows: List[ReportRow], meta: dict) -> dict:
        table = report_table(rows, teacher_name="LLMRec (teacher)")
        csv_path = os.path.join(self.run_dir, "report.csv")
        md_path = os.path.join(self.run_dir, "report.md")
        png_path = os.path.join(self.run_dir, "quality_vs_throughput.png")
        curves_path = os.path.join(self.run_dir, "curves.png")
        write_csv(table, csv_path)
        plot_quality_vs_throughput(table, png_path)
        step_dirs = {row.name: row.result["run_dir"] for row in rows}
        plot_curves(step_dirs, curves_path)
        lines = [
            f"# recbole_llmkd pipeline report — {meta['dataset']}, profile `{meta['profile']}`",
            "",
            f"- device: {meta['device']}",
            f"- date: {meta['date']}, commit: {meta['commit']}, seeds: {meta['seeds']}",
            f"- profile: {meta['profile_description']}",
            f"- steps run now: {', '.join(meta['steps_run']) or 'none'}; reused: {', '.join(meta['steps_reused']) or 'none'}",
            "- protocol: RecBole full ranking over all items (history not masked), leave-one-out, time order; best",
            "  epoch on validation, test read once. Throughput: full-ranking users/s on the test split, same device,",
            "  after one warm-up batch.",
            "",
            "## Quality and cost",
            "",
            markdown_table(table, REPORT_COLUMNS),
            "",
        ]
        if any(entry.get("sampled_hit@1") is not None for entry in table):
            lines += ["## SLMRec protocol (1 positive + 999 sampled negatives; not comparable with full ranking)", "",
                      markdown_table([e for e in table if e.get("sampled_hit@1") is not None], SAMPLED_COLUMNS), ""]
        lines += ["![quality vs throughput](quality_vs_throughput.png)", "", "![curves](curves.png)", ""]
        with open(md_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        with open(os.path.join(self.run_dir, "report.json"), "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "table": table}, f, indent=2)
        return {"report_md": md_path, "report_csv": csv_path, "plot": png_path, "curves": curves_path,
                "table": table, "meta": meta}
