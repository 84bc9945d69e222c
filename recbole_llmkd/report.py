"""The side-by-side report of a pipeline run: markdown table, CSV, quality-vs-throughput plot, training curves.

Input: one ``results.json`` per model run (written by ``quick_start.run_recbole_llmkd``) plus the TensorBoard
events RecBole's trainer wrote beside each run's log, and the pipeline's metadata. Output, in the pipeline's run
directory (``write_pipeline_report``): ``report.md``, ``report.csv``, ``report.json``, ``quality_vs_throughput.png``,
``curves.png``.
"""
import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from recbole_llmkd.run import read_results

QUALITY_METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20", "mrr@20")
# SLMRec protocol (1 positive + 999 sampled negatives), reported by LLMTrainer (LLMRec, SLMRec) with slm_eval_sampled.
SAMPLED_METRICS = ("sampled_hit@1", "sampled_hit@5", "sampled_ndcg@5", "sampled_mrr")
# The columns of the report's tables (report.md); report.csv has every column of report_table.
REPORT_COLUMNS = [
    "model", "role", "params_total", "params_trainable", "train_time_s", "throughput_users_per_s",
    "speedup_vs_teacher", "hit@10", "hit@20", "ndcg@10", "ndcg@20", "mrr@20",
    "ndcg@10_gain_vs_twin_%", "ndcg@10_vs_teacher_%",
]
SAMPLED_COLUMNS = ["model", "sampled_hit@1", "sampled_hit@5", "sampled_ndcg@5", "sampled_mrr"]


@dataclass
class ReportRow:
    """One model of the report: what it is, what it costs, how good it is."""

    name: str                      # e.g. "KDSASRec"
    role: str                      # teacher | student | kd-student | slm-student | slm-twin
    result: dict                   # the run's results.json
    plain_twin: Optional[str] = None  # for KD students: the plain model it is compared with
    extra: Dict[str, float] = field(default_factory=dict)

    def metric(self, key: str) -> Optional[float]:
        value = self.result.get("test_result", {}).get(key)
        return None if value is None else float(value)


def load_result(run_dir: str) -> dict:
    """The ``results.json`` of the run in ``run_dir`` (``run.read_results``)."""
    return read_results(run_dir)


def relative_gain(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """(value − reference) / reference in percent; None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return 100.0 * (value - reference) / reference


def report_table(rows: List[ReportRow], teacher_name: Optional[str]) -> List[dict]:
    """One flat dict per model with the report's columns (None where a value does not apply)."""
    by_name = {row.name: row for row in rows}
    teacher = by_name.get(teacher_name) if teacher_name else None
    table = []
    for row in rows:
        entry = {
            "model": row.name,
            "role": row.role,
            "params_total": row.result.get("params_total"),
            "params_trainable": row.result.get("params_trainable"),
            "train_time_s": row.result.get("train_time_s"),
            "throughput_users_per_s": row.result.get("throughput_users_per_s"),
        }
        for metric in QUALITY_METRICS + SAMPLED_METRICS:
            entry[metric] = row.metric(metric)
        twin = by_name.get(row.plain_twin) if row.plain_twin else None
        entry["ndcg@10_gain_vs_twin_%"] = relative_gain(row.metric("ndcg@10"), twin.metric("ndcg@10") if twin else None)
        entry["ndcg@10_vs_teacher_%"] = (
            relative_gain(row.metric("ndcg@10"), teacher.metric("ndcg@10")) if teacher and row is not teacher else None
        )
        teacher_speed = teacher.result.get("throughput_users_per_s") if teacher else None
        speed = row.result.get("throughput_users_per_s")
        entry["speedup_vs_teacher"] = speed / teacher_speed if speed and teacher_speed and row is not teacher else None
        entry.update(row.extra)
        table.append(entry)
    return table


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_csv(table: List[dict], path: str) -> None:
    columns = list(table[0].keys())
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for entry in table:
            writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})


def _fmt_cell(column: str, value) -> str:
    if value is None:
        return "–"
    if column.endswith("%"):
        return f"{value:+.1f}"
    if column.startswith("speedup"):
        return f"{value:,.1f}×"
    return _fmt(value)


def markdown_table(table: List[dict], columns: List[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for entry in table:
        lines.append("| " + " | ".join(_fmt_cell(c, entry.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def plot_quality_vs_throughput(table: List[dict], path: str, metric: str = "ndcg@10") -> None:
    """Quality against full-ranking inference throughput (log x), one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(e["throughput_users_per_s"], e[metric], e["model"]) for e in table
              if e.get("throughput_users_per_s") and e.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for speed, quality, name in points:
        ax.scatter(speed, quality)
        ax.annotate(name, (speed, quality), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("inference throughput, users/s (full ranking, log scale)")
    ax.set_ylabel(f"test {metric.upper()}")
    ax.set_title("Quality vs inference speed")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_scalars(run_dir: str) -> Dict[str, List[tuple]]:
    """Every scalar series RecBole's trainer (and our KD trainers) wrote to TensorBoard in ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: Dict[str, List[tuple]] = {}
    tb_dir = os.path.join(run_dir, "tensorboard")
    if not os.path.isdir(tb_dir):
        return series
    accumulator = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    # a run's logger puts the root logger at INFO: TensorBoard's reader would log "No path found after ..." per run
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    accumulator.Reload()
    for tag in accumulator.Tags().get("scalars", []):
        series[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return series


def plot_curves(run_dirs: Dict[str, str], path: str) -> None:
    """Per-epoch validation score and every training loss term, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(run_dirs)
    n_cols = min(3, max(1, len(names)))
    n_rows = math.ceil(len(names) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        series = read_scalars(run_dirs[name])
        for tag, points in sorted(series.items()):
            if not points or tag.startswith("hparam"):
                continue
            steps, values = zip(*points)
            is_valid = "valid" in tag.lower() or "vaild" in tag.lower()  # RecBole's tag is "Vaild_score" (sic)
            if is_valid:
                valid_ax = ax.twinx()
                valid_ax.plot(steps, values, marker="o", color="black", label="validation score")
                valid_ax.set_ylabel("validation score", fontsize=7)
            else:
                ax.plot(steps, values, marker=".", label=tag)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distillation_verdicts(rows: List[ReportRow], table: List[dict], seed_noise_pct: Optional[float] = None) -> List[str]:
    """One sentence per distilled model (a row with a plain twin): its NDCG@10 against the twin's, the relative
    change, the verdict, and its share of the teacher's NDCG@10; the report's answer to "did it help?".

    The verdict is ``gain`` or ``no gain``; with ``seed_noise_pct`` (the profile's band for the NDCG@10 change
    between two runs that differ only in their seed: about 95 % of such changes fall within it, 2·√2 × the plain
    students' seed std, measured), a change within ±that is ``within seed noise``."""
    by_model = {entry["model"]: entry for entry in table}
    names = {row.name: row for row in rows}
    lines = []
    for row in rows:
        twin = names.get(row.plain_twin) if row.plain_twin else None
        entry = by_model.get(row.name, {})
        gain = entry.get("ndcg@10_gain_vs_twin_%")
        if twin is None or gain is None:
            continue
        if seed_noise_pct is not None and abs(gain) <= seed_noise_pct:
            verdict = f"**within seed noise** (±{seed_noise_pct:g} %)"
        else:
            verdict = "**gain**" if gain > 0 else "**no gain**"
        line = (f"- {row.name} vs {twin.name}: NDCG@10 {_fmt(row.metric('ndcg@10'))} against "
                f"{_fmt(twin.metric('ndcg@10'))}, {gain:+.1f} %: {verdict}")
        if entry.get("ndcg@10_vs_teacher_%") is not None:
            line += f"; {100 + entry['ndcg@10_vs_teacher_%']:.1f} % of the teacher's NDCG@10"
        lines.append(line)
    return lines


def _other_dataset_note(meta: dict) -> str:
    """Where ``--dataset`` replaced the profile's dataset, the description's data figures are not this run's."""
    written_for = meta.get("profile_dataset")
    if not written_for or written_for == meta["dataset"]:
        return ""
    return (f" (**the description is written for {written_for}**; this run's data is {meta['dataset']} "
            "(`--dataset`): its users, items and prefix counts differ, every other setting is as described)")


def render_report_markdown(table: List[dict], meta: dict, verdicts: Optional[List[str]] = None) -> str:
    """``report.md``: the header (device, date, commit, seeds, profile, steps), the tables and the two plots."""
    lines = [
        f"# recbole_llmkd pipeline report — {meta['dataset']}, profile `{meta['profile']}`",
        "",
        f"- device: {meta['device']}",
        f"- date: {meta['date']}, commit: {meta['commit']}, seeds: {meta['seeds']}",
        f"- profile: {meta['profile_description']}" + _other_dataset_note(meta),
        f"- steps run now: {', '.join(meta['steps_run']) or 'none'}; reused: {', '.join(meta['steps_reused']) or 'none'}",
        *([f"- teacher: {meta['teacher_model']} (generative; KD students read its grounding distances, score_kind "
           "neg_l2); SLMRec not run: it distils an LLMRec teacher's hidden states"]
          if meta.get("teacher_model", "LLMRec") != "LLMRec" else []),
        *([f"- config files (every step): {', '.join(meta['config_files'])}"] if meta.get("config_files") else []),
        *([f"- not applied: {meta['not_applied']}"] if meta.get("not_applied") else []),
        *([f"- teacher lists (training split, K={lists['K']}): {lists['target_in_list']:.1%} contain the target, "
           f"{lists['history_in_list']:.1%} contain history items ({lists['history_items_share']:.1%} of the listed "
           "items)" + (f"; {lists['student_overlap']:.1%} of the listed items are in the plain {lists['student']}'s own "
                       f"top-{lists['K']} already" if "student_overlap" in lists else "")]
          if (lists := meta.get("teacher_lists")) else []),
        "- protocol: RecBole full ranking over all items (history not masked), leave-one-out, time order; best",
        "  epoch on validation, test read once. Throughput: full-ranking users/s on the test split, same device,",
        "  after one warm-up batch.",
        "",
        "## Quality and cost",
        "",
        markdown_table(table, REPORT_COLUMNS),
        "",
    ]
    if verdicts:
        noise = meta.get("seed_noise_pct")
        noise_note = (f"a change within ±{noise:g} % (the profile's `seed_noise_pct`: about 95 % of the changes between two "
                      "runs that differ only in their seed fall within it, measured) is within seed noise"
                      if noise is not None
                      else "a difference of a few percent is within seed noise")
        lines += ["## Does distillation help? (each model against its plain twin, test)", "", *verdicts, "",
                  f"One run per model (seeds {meta['seeds']}): {noise_note}; "
                  "`benchmarks/bench_kd_quality.py` repeats the comparison over seeds.", ""]
    if any(entry.get("sampled_hit@1") is not None for entry in table):
        lines += ["## SLMRec protocol (1 positive + 999 sampled negatives; not comparable with full ranking)", "",
                  markdown_table([e for e in table if e.get("sampled_hit@1") is not None], SAMPLED_COLUMNS), ""]
    lines += ["![quality vs throughput](quality_vs_throughput.png)", "", "![curves](curves.png)", ""]
    return "\n".join(lines)


def write_pipeline_report(run_dir: str, rows: List[ReportRow], meta: dict) -> dict:
    """Write the pipeline's report into ``run_dir``; returns the paths, the table and ``meta``.

    ``meta`` holds ``dataset``, ``profile``, ``teacher_model``, ``device``, ``date``, ``commit``, ``seeds``,
    ``profile_description``, ``steps_run``, ``steps_reused`` and optionally ``config_files``, ``not_applied`` and
    ``teacher_lists`` (the export's diagnostics); it is stored as is in ``report.json``.
    """
    table = report_table(rows, teacher_name=f"{meta.get('teacher_model', 'LLMRec')} (teacher)")
    csv_path = os.path.join(run_dir, "report.csv")
    md_path = os.path.join(run_dir, "report.md")
    png_path = os.path.join(run_dir, "quality_vs_throughput.png")
    curves_path = os.path.join(run_dir, "curves.png")
    write_csv(table, csv_path)
    plot_quality_vs_throughput(table, png_path)
    step_dirs = {row.name: row.result["run_dir"] for row in rows}
    plot_curves(step_dirs, curves_path)
    with open(md_path, "w", encoding="utf-8") as f:
        verdicts = distillation_verdicts(rows, table, meta.get("seed_noise_pct"))
        f.write(render_report_markdown(table, meta, verdicts))
    with open(os.path.join(run_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "table": table}, f, indent=2)
    return {"report_md": md_path, "report_csv": csv_path, "plot": png_path, "curves": curves_path,
            "table": table, "meta": meta}
