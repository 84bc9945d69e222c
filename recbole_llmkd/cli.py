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


class CLIError(ValueError):
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
    return parser


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
    try:
        args, overrides = parse_args(argv)
    except CLIError as err:
        print(f"run_recbole_llmkd.py: error: {err}", file=sys.stderr)
        return 2
    if args.list_models:
        print(_models_epilog().split("\n\n")[0])
        return 0
    if not args.model or not args.dataset:
        build_parser().print_usage(sys.stderr)
        print("run_recbole_llmkd.py: error: --model and --dataset are required", file=sys.stderr)
        return 2

    from recbole_llmkd.config import ConfigFileError
    from recbole_llmkd.quick_start import DatasetNotFoundError, run_recbole_llmkd

    try:
        result = run_recbole_llmkd(
            model=args.model,
            dataset=args.dataset,
            config_file_list=split_config_files(args.config_files),
            cmd_args=overrides,
        )
    except (registry.UnknownModelError, DatasetNotFoundError, ConfigFileError, FileNotFoundError) as err:
        print(f"run_recbole_llmkd.py: error: {err}", file=sys.stderr)
        return 2
    print(format_metrics(result))
    print(f"run directory: {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
