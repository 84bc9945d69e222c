"""``run_recbole_llmkd.py``: RecBole's run script for RecBole's models and the plugin's.

    run_recbole_llmkd.py --model=SASRec --dataset=ml-100k [--config_files=a.yaml,b.yaml] [--key=value ...]

``--model NAME`` and ``--model=NAME`` both work, for every option. Any other ``--key=value`` (or
``--key value``) sets a config key with the highest precedence, exactly like RecBole's command line.
"""
import argparse
import sys
import textwrap
from typing import Dict, List, Optional, Tuple

from recbole_llmkd import registry
from recbole_llmkd.errors import DEBUG_FLAG, RecboleLLMKDError, run_reporting_errors

PROG = "run_recbole_llmkd.py"


class CLIError(RecboleLLMKDError, ValueError):
    """Command-line input that cannot be turned into a run."""


def _models_epilog() -> str:
    models = registry.available_models()
    plugin = ", ".join(models["recbole_llmkd"]) or "(none registered yet)"
    recbole = ", ".join(models["recbole"]) or "(RecBole is not installed: pip install --no-deps recbole==1.2.1)"
    wrap = lambda text: textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    ")  # noqa: E731
    return (
        "available models:\n  recbole_llmkd:\n" + wrap(plugin) + "\n  RecBole:\n" + wrap(recbole) + "\n\n"
        "Any other --key=value sets a RecBole/plugin config key (highest precedence).\n"
        "Config precedence, lowest first: RecBole defaults < RecBole yaml of the model's RecBole parent class <\n"
        "properties/overall.yaml < properties/model/<Model>.yaml < properties/dataset/<name>.yaml <\n"
        "--config_files (in order) < config dict < command line."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_llmkd.py",
        description="Train and evaluate RecBole models and recbole_llmkd's LLM teachers and distilled students.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--model", "-m", help="model name (RecBole built-in or recbole_llmkd)")
    parser.add_argument("--dataset", "-d", help="dataset name (an atomic-file folder under --data_path)")
    parser.add_argument(
        "--config_files", help="yaml files, comma- or space-separated, applied in order after the property files"
    )
    parser.add_argument("--list-models", action="store_true", help="print the available models and exit")
    parser.add_argument(
        DEBUG_FLAG, action="store_true",
        help="on an error, also print the full traceback (a failed run always writes it to its run.log)",
    )
    parser.add_argument(
        "--export-teacher",
        metavar="PATH",
        help="export a trained teacher's artifacts and exit; PATH: the run dir or checkpoint of an LLMRec or of any "
        "RecBole sequential model (SASRec, GRU4Rec, BERT4Rec, ...)",
    )
    parser.add_argument("--export-output", metavar="FILE", help="artifact file (default: <teacher run dir>/teacher_artifacts.safetensors)")
    parser.add_argument("--export-topk", metavar="K", type=int, default=50, help="teacher items per example (default 50)")
    parser.add_argument(
        "--export-item-text", choices=["auto", "titles", "item_table", "text_encoder", "none"], default="auto",
        help="item_text_emb: LLM on titles (auto with an .item file), the teacher's item table, the titles through "
        "a sentence encoder (--export-text-encoder), or none",
    )
    parser.add_argument("--export-text-encoder", metavar="NAME|DIR", default="minilm",
                        help="sentence encoder of --export-item-text=text_encoder (default minilm)")
    parser.add_argument("--export-overwrite", action="store_true", help="replace an existing artifact file")
    parser.add_argument("--export-compare-with", metavar="PATH",
                        help="a plain student's run dir or checkpoint: the diagnostics also give how much of each "
                        "teacher list it ranks in its own top-K already")
    parser.add_argument("--export-workers", metavar="N", type=int,
                        help="compute the export on N Ray workers (teacher replicas; Ray embedded here unless "
                        "--ray-address names a cluster, whose size is then the default)")
    parser.add_argument(
        "--pipeline", metavar="PROFILE",
        help="run the main job (teacher -> export -> students -> SLMRec -> report): auto|tiny|cpu|full|FILE.yaml",
    )
    add_tune_arguments(parser)
    return parser


def run_pipeline(args, overrides: Dict[str, str]) -> int:
    """``--pipeline``: every step in one run directory, finished steps reused, the report announced at the end."""
    from recbole_llmkd.pipeline import Pipeline, resolve_profile

    pipeline = Pipeline(resolve_profile(args.pipeline), run_dir=overrides.pop("run_dir", None),
                        dataset=args.dataset, overrides=overrides, config_files=split_config_files(args.config_files))
    print(f"recbole_llmkd pipeline directory: {pipeline.run_dir}", file=sys.stderr, flush=True)
    report = pipeline.run()
    print(open(report["report_md"], encoding="utf-8").read())
    print(f"report: {report['report_md']}\ncsv: {report['report_csv']}\nplot: {report['plot']}")
    return 0


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep options (docs/SWEEPS.md); each overrides the space file's own setting."""
    group = parser.add_argument_group("sweeps (Ray Tune)")
    group.add_argument("--tune", metavar="SPACE.yaml", help="run a Ray Tune sweep over the space file's keys")
    group.add_argument(
        "--ray-address", metavar="HOST:PORT|auto",
        help="join an existing Ray cluster (default: Ray embedded here); also for --export-teacher"
    )
    group.add_argument("--num-samples", type=int, metavar="N", help="trials (grid: repeats of the grid)")
    group.add_argument("--max-concurrent", type=int, metavar="N", help="trials running at once")
    group.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs per trial (default 1)")
    group.add_argument(
        "--gpus-per-trial", type=float, metavar="G", help="GPUs per trial, fractions allowed (default: 1 if CUDA)"
    )
    group.add_argument("--search-alg", choices=["random", "grid", "optuna", "hyperopt"], help="search algorithm")
    group.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --run_dir")


def run_tune(args, overrides: Dict[str, str]) -> int:
    """``--tune``: run (or ``--resume``) a sweep and print the best trial's validation and test metrics."""
    from recbole_llmkd.tune import run_sweep

    if args.resume and not overrides.get("run_dir"):
        raise CLIError("--resume needs --run_dir=<the sweep directory>")
    result = run_sweep(
        args.model,
        args.dataset,
        args.tune,
        config_file_list=split_config_files(args.config_files),
        cmd_args=overrides,
        ray_address=args.ray_address,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        search_alg=args.search_alg,
        resume=args.resume,
    )
    print(format_metrics(result))
    print(f"best trial: {result['best_trial_id']}  {result['best_params']}")
    print(f"trials ({result['status_counts']}): {result['trials_md']}")
    print(f"sweep directory: {result['sweep_dir']}")
    return 0


def parse_config_overrides(extra: List[str]) -> Dict[str, str]:
    """``--key=value`` and ``--key value`` pairs -> {key: value-as-string} (RecBole converts the types)."""
    overrides: Dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise CLIError(f"unexpected argument '{arg}': config keys are given as --key=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            key, value = arg[2:], extra[i + 1]
            i += 2
        else:
            raise CLIError(f"option '{arg}' has no value: write {arg}=VALUE")
        if key in overrides and overrides[key] != value:
            raise CLIError(f"--{key} given twice with different values ({overrides[key]!r}, {value!r})")
        overrides[key] = value
    return overrides


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, Dict[str, str]]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    return args, parse_config_overrides(extra)


def split_config_files(value: Optional[str]) -> List[str]:
    if not value:
        return []
    return [part for part in value.replace(",", " ").split() if part]


def format_metrics(result: dict) -> str:
    """A metrics table: one row per metric, validation (best epoch) and test columns."""
    from tabulate import tabulate

    valid, test = result["best_valid_result"], result["test_result"]
    rows = [(metric, valid.get(metric), test.get(metric)) for metric in sorted(set(valid) | set(test))]
    header = f"{result['model']} on {result['dataset']} (best epoch on validation, test read once)"
    return header + "\n" + tabulate(rows, headers=["metric", "valid", "test"], floatfmt=".4f", tablefmt="github")


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; a bad input or a stopped run is one ``run_recbole_llmkd.py: error: ...`` line (see errors)."""
    return run_reporting_errors(_main, argv, PROG)


def _main(argv: List[str]) -> int:
    args, overrides = parse_args(argv)
    if args.list_models:
        print(_models_epilog().split("\n\n")[0])
        return 0
    if args.export_teacher:
        from recbole_llmkd.data.export import export_teacher

        path = export_teacher(args.export_teacher, output=args.export_output, topk=args.export_topk,
                              item_text=args.export_item_text, overwrite=args.export_overwrite,
                              text_encoder=args.export_text_encoder, compare_with=args.export_compare_with,
                              ray_address=args.ray_address, num_workers=args.export_workers)
        print(f"teacher artifacts: {path}")
        return 0
    if args.pipeline:
        return run_pipeline(args, overrides)
    if not args.model or not args.dataset:
        build_parser().print_usage(sys.stderr)
        raise CLIError("--model and --dataset are required")
    if args.tune:
        return run_tune(args, overrides)

    from recbole_llmkd.quick_start import run_recbole_llmkd

    result = run_recbole_llmkd(
        model=args.model,
        dataset=args.dataset,
        config_file_list=split_config_files(args.config_files),
        cmd_args=overrides,
    )
    print(format_metrics(result))
    print(f"run directory: {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
