"""Teacher export throughput: the single-process loop vs Ray workers (jobs/export_ray.py), in rows/s.

Exports the same teacher once per setting into a temporary directory (``item_text: none``: the per-item table is
the same work in every setting and is left out) and reports, per setting, the rows phase (what the workers do;
for Ray it includes starting Ray and loading one teacher replica per worker) and the whole export's wall time.
Checks that every distributed artifact equals the local one (ids exact, scores rtol 1e-5 / atol 1e-6).

Without ``--teacher`` it first trains a small LLMRec (``llm_backbone: smollm2``, ``llm_n_layers: 2``, 1 epoch,
last prefix per user) on the ml-100k users with at most ``--max-user-inter`` interactions (60: the ``cpu`` slice).

    .venv/bin/python benchmarks/bench_export_ray.py [--teacher RUN_DIR] [--workers 1 2] [--local-threads 1 2]
        [--write-results]   (appends a section to benchmarks/RESULTS.md)

Not part of ``make test``.
"""
import argparse
import logging
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from recbole_llmkd.measure import device_description, git_commit  # noqa: E402

TRAINED_TEACHER = "LLMRec smollm2, 2 layers, 1 epoch (last prefix per user), ml-100k users with <= {max_inter} interactions"
RESULTS_FILE = os.path.join(REPO_ROOT, "benchmarks", "RESULTS.md")
TEACHER_CONFIG = {
    "llm_backbone": "smollm2",
    "llm_n_layers": 2,
    "epochs": 1,
    "llm_train_examples": "last_per_user",
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 16,
    "eval_batch_size": 64,
    "gpu_id": "",
    "show_progress": False,
    "seed": 2020,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="a trained teacher's run dir or checkpoint (default: train a small one)")
    parser.add_argument("--dataset", default="ml-100k", help="dataset of the trained teacher (without --teacher)")
    parser.add_argument("--max-user-inter", type=int, default=60,
                        help="users with at most this many interactions (without --teacher; 60 = the cpu slice)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    parser.add_argument("--local-threads", type=int, nargs="+", default=[1, 2],
                        help="torch threads of the single-process baselines (default: 1 and 2)")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: eval_batch_size)")
    parser.add_argument("--chunk-rows", type=int, default=1024, help="rows per chunk (the unit a worker computes)")
    parser.add_argument("--write-results", action="store_true", help=f"append the section to {RESULTS_FILE}")
    return parser.parse_args(argv)


class RowsPhase(logging.Handler):
    """Catches export_teacher's 'N rows computed in S s' line (the rows phase, without loading or finalising) and
    the Ray driver's 'ready in S s' line (starting Ray and loading the replicas, part of the rows phase)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.rows = self.seconds = None
        self.startup = 0.0

    def emit(self, record):
        message = record.getMessage()
        match = re.search(r"([\d,]+) rows computed in ([\d.]+) s", message)
        if match:
            self.rows, self.seconds = int(match.group(1).replace(",", "")), float(match.group(2))
        match = re.search(r"replicas ready in ([\d.]+) s", message)
        if match:
            self.startup = float(match.group(1))


def train_teacher(workdir: str, dataset: str, max_inter: int) -> str:
    from recbole_llmkd.quick_start import run_recbole_llmkd

    started = time.perf_counter()
    config = dict(TEACHER_CONFIG, user_inter_num_interval=f"[0,{max_inter}]")
    result = run_recbole_llmkd("LLMRec", dataset, config_dict=config,
                               cmd_args={"run_dir": os.path.join(workdir, "teacher")})
    print(f"trained the teacher in {time.perf_counter() - started:.0f} s: {result['checkpoint']}", file=sys.stderr)
    return result["run_dir"]


def export_once(teacher: str, output: str, args, **kwargs) -> dict:
    from recbole_llmkd.jobs.export import export_teacher

    handler = RowsPhase()
    logger = logging.getLogger("recbole_llmkd")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        export_teacher(teacher, output=output, topk=args.topk, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
                       item_text="none", show_progress=False, **kwargs)
    finally:
        logger.removeHandler(handler)
    return {"rows": handler.rows, "rows_s": handler.seconds, "startup_s": handler.startup,
            "wall_s": time.perf_counter() - started, "path": output}


def same_artifact(path: str, reference: str) -> bool:
    from recbole_llmkd.data.artifacts import load_artifacts

    got, expected = load_artifacts(path).tensors, load_artifacts(reference).tensors
    if set(got) != set(expected):
        return False
    for name, tensor in expected.items():
        if tensor.is_floating_point():
            if not torch.allclose(got[name], tensor, rtol=1e-5, atol=1e-6):
                return False
        elif not torch.equal(got[name], tensor):
            return False
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_export_ray_") as workdir:
        os.chdir(workdir)  # RecBole writes log/ and saved/ into the cwd
        teacher = args.teacher or train_teacher(workdir, args.dataset, args.max_user_inter)
        rows = []
        reference = None
        default_threads = torch.get_num_threads()
        for threads in args.local_threads:
            torch.set_num_threads(threads)
            result = export_once(teacher, os.path.join(workdir, f"local{threads}.safetensors"), args)
            reference = reference or result["path"]
            rows.append((f"local loop, {threads} torch thread(s)", result, same_artifact(result["path"], reference)))
        torch.set_num_threads(default_threads)
        for workers in args.workers:
            result = export_once(teacher, os.path.join(workdir, f"ray{workers}.safetensors"), args,
                                 num_workers=workers)
            rows.append((f"Ray, {workers} worker(s) x 1 CPU (1 torch thread each)", result,
                         same_artifact(result["path"], reference)))
    baseline = rows[0][1]["rows"] / rows[0][1]["rows_s"]
    table = ["| setting | rows | rows phase (s) | of which Ray start + replicas (s) | rows/s | vs first row "
             "| rows/s after start-up | vs first row | whole export (s) | same artifact |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result, same in rows:
        rate = result["rows"] / result["rows_s"]
        steady = result["rows"] / (result["rows_s"] - result["startup_s"])
        table.append(f"| {name} | {result['rows']:,} | {result['rows_s']:.1f} | {result['startup_s']:.1f} "
                     f"| {rate:,.0f} | {rate / baseline:.2f}x | {steady:,.0f} | {steady / baseline:.2f}x "
                     f"| {result['wall_s']:.1f} | {'yes' if same else 'NO'} |")
    command = "benchmarks/bench_export_ray.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = "\n".join([
        "## Teacher export: local loop vs Ray workers (bench_export_ray.py)",
        "",
        f"- machine: {device_description(torch.device('cpu'))}; fp32",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d}, commit {git_commit()}, torch {torch.__version__}",
        f"- teacher: {args.teacher or TRAINED_TEACHER.format(max_inter=args.max_user_inter)}; top-{args.topk}, chunks of {args.chunk_rows} rows, "
        "item_text none",
        "- rows phase: from the first chunk to the last written (Ray: includes starting Ray and loading each "
        "worker's teacher replica); whole export: also the dataset, the driver's teacher and the diagnostics",
        f"- command: `.venv/bin/python {command.strip()}` ({time.perf_counter() - started:.0f} s)",
        "",
        *table,
        "",
    ])
    print(section)
    if args.write_results:
        with open(RESULTS_FILE, "a", encoding="utf-8") as results:
            results.write("\n" + section)
        print(f"appended to {RESULTS_FILE}", file=sys.stderr)
    return 0 if all(same for _, _, same in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
