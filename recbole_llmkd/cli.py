"""``run_recbole_llmkd.py``: RecBole's run script for RecBole's models and the plugin's, and the data jobs.

    run_recbole_llmkd.py --model=SASRec --dataset=ml-100k [--config_files=a.yaml,b.yaml] [--key=value ...]
    run_recbole_llmkd.py --model=SASRec --dataset=ml-100k --run_dir=DIR --resume   # an interrupted run goes on
    run_recbole_llmkd.py export|import|convert ...      # the data jobs, each with its own --help

``--model NAME`` and ``--model=NAME`` both work, for every option. Any other ``--key=value`` (or
``--key value``) sets a config key with the highest precedence, exactly like RecBole's command line.

Every command-line parser of the package is defined here, once per job: the runs (``build_parser``) and the data
jobs (``DATA_JOBS``: a teacher's artifact export, an external teacher's import, the converter of published splits).
``python -m recbole_llmkd.jobs.export|importer|convert`` are the same jobs under their own program names
(``data_job_main``), and so are ``python -m recbole_llmkd.data.export|importer|convert``, the former homes of the
jobs, kept as compatibility modules (``forward_to_jobs``, ``former_job_main``).
"""
import argparse
import functools
import importlib
import logging
import sys
import textwrap
from typing import Any, Callable, Dict, List, Optional, Tuple

from recbole_llmkd import registry
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT
from recbole_llmkd.errors import DEBUG_FLAG, RecboleLLMKDError, run_reporting_errors

PROG = "run_recbole_llmkd.py"
# The item_text_emb sources of the export; the same tuple as jobs.export.ITEM_TEXT_SOURCES (not imported here:
# building the parser, and so --help, stays free of torch).
ITEM_TEXT_SOURCES = ("auto", "titles", "item_table", "text_encoder", "none")
# The export job's options, defined once as (option, export_teacher keyword, argparse keywords): the export job
# spells them --OPTION, the main parser --export-OPTION beside --export-teacher.
EXPORT_OPTIONS = (
    ("output", "output", dict(metavar="FILE", help="artifact file (default: <teacher run dir>/"
                                                      f"{TEACHER_RUN_ARTIFACT})")),
    ("topk", "topk", dict(metavar="K", type=int, default=50, help="teacher items per example (default 50)")),
    ("batch-size", "batch_size", dict(metavar="N", type=int, help="rows per teacher forward (default: eval_batch_size)")),
    ("with-user-state", "with_user_state", dict(action="store_true", help="also store the teacher's user states")),
    ("item-text", "item_text", dict(
        choices=ITEM_TEXT_SOURCES, default="auto",
        help="item_text_emb: LLM on titles (auto with an .item file), the teacher's item table, the titles through "
        "a sentence encoder (text_encoder), or none")),
    ("text-encoder", "text_encoder", dict(metavar="NAME|DIR", default="minilm",
                                          help="the sentence encoder for item text text_encoder (default minilm)")),
    ("overwrite", "overwrite", dict(action="store_true", help="replace an existing artifact file")),
    ("compare-with", "compare_with", dict(
        metavar="RUN_DIR|PTH", help="a plain student's run dir or checkpoint: the diagnostics also give how much of "
        "each teacher list it ranks in its own top-K already")),
    ("cross-fit", "cross_fit", dict(
        metavar="RUN_DIR|PTH", nargs="+", help="cross-fitting: the K fold teachers (trained with cross_fit_folds: K, "
        "cross_fit_fold: 0..K-1); each training row then comes from the teacher that never trained on its user; "
        "with --ensemble, each fold's teachers joined by commas, in the ensemble's order")),
    ("ensemble", "ensemble", dict(
        metavar="RUN_DIR|PTH", nargs="+", help="further trained teachers on the same dataset: the lists then rank "
        "the mean of all the teachers' softmax probabilities (an ensemble distilled into one student); each reads at "
        "most the first teacher's MAX_ITEM_LIST_LENGTH, a shorter one each row's last items")),
    ("workers", "num_workers", dict(
        metavar="N", type=int, help="compute the export on N Ray workers (teacher replicas; Ray embedded here unless "
        "--ray-address names a cluster, whose size is then the default)")),
)


class CLIError(RecboleLLMKDError, ValueError):
    """Command-line input that cannot be turned into a run."""


def _models_epilog() -> str:
    models = registry.available_models()
    plugin = ", ".join(models["recbole_llmkd"]) or "(none registered yet)"
    recbole = ", ".join(models["recbole"]) or "(RecBole is not installed: pip install --no-deps recbole==1.2.1)"
    wrap = lambda text: textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    ")  # noqa: E731
    return (
        "available models:\n  recbole_llmkd:\n" + wrap(plugin) + "\n  RecBole:\n" + wrap(recbole) + "\n\n"
        "Any other --key=value sets a RecBole/plugin config key (highest precedence), e.g. --epochs=50,\n"
        "--gpu_id=0, or --run_dir=DIR: where a run writes run.log, its checkpoint and results.json\n"
        "(default runs/<Model>-<dataset>-<time>; a sweep's runs/sweep-<Model>-<dataset>-<time>; a pipeline's\n"
        "runs/pipeline-<profile>-<dataset>); with --resume, the run or sweep to continue.\n"
        "Config precedence, lowest first: RecBole defaults < RecBole yaml of the model's RecBole parent class <\n"
        "properties/overall.yaml < properties/model/<Model>.yaml < properties/dataset/<name>.yaml <\n"
        "--config_files (in order) < config dict < command line."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and evaluate RecBole models and recbole_llmkd's LLM teachers and distilled students.\n\n"
        "data jobs (each with its own --help):\n" + "\n".join(
            f"  {PROG} {job:<7} ...  {summary}" for job, (_, _, summary) in DATA_JOBS.items()),
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
    add_export_options(parser, prefix="export-")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue the interrupted run in --run_dir from its best epoch so far (or from CHECKPOINT); with "
        "--tune, the interrupted sweep in --run_dir"
    )
    parser.add_argument(
        "--pipeline", metavar="PROFILE",
        help="run the main job (teacher -> export -> students -> SLMRec -> report): auto|tiny|cpu|full|FILE.yaml",
    )
    add_tune_arguments(parser)
    return parser


def add_export_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The ``EXPORT_OPTIONS``, each spelled ``--<prefix><option>``."""
    for option, _, keywords in EXPORT_OPTIONS:
        parser.add_argument(f"--{prefix}{option}", **keywords)


def export_with_options(teacher: str, args: argparse.Namespace, prefix: str = "") -> str:
    """The export job: ``teacher``'s artifacts with the ``EXPORT_OPTIONS`` of ``args`` (spelled ``prefix`` + option)."""
    from recbole_llmkd.jobs.export import export_teacher

    options = {keyword: getattr(args, (prefix + option).replace("-", "_")) for option, keyword, _ in EXPORT_OPTIONS}
    return export_teacher(teacher, ray_address=args.ray_address, **options)


# ----- the data jobs: run_recbole_llmkd.py export|import|convert, python -m recbole_llmkd.jobs.<module> --------
def build_export_parser(prog: str) -> argparse.ArgumentParser:
    """``export RUN_DIR_OR_CHECKPOINT [--EXPORT_OPTIONS] [--ray-address ...]``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Export a trained teacher's artifacts (LLMRec or any RecBole sequential model)."
    )
    parser.add_argument("teacher", help="the teacher's run directory or checkpoint (.pth)")
    add_export_options(parser)
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                        help="compute the rows on this Ray cluster (with --workers alone: Ray embedded here)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="on an error, also print the full traceback")
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Export the teacher's artifacts and print the file's path."""
    logging.basicConfig(level=logging.INFO)
    print(export_with_options(args.teacher, args))
    return 0


def build_import_parser(prog: str) -> argparse.ArgumentParser:
    """``import --rankings F [--item-emb F --item-tokens F] --dataset NAME [--config_files ...] --output F``."""
    from recbole_llmkd.data.artifacts import DEFAULT_KEY_HISTORY

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert an external teacher's rankings (+ item embeddings) into a recbole_llmkd teacher artifact.",
    )
    parser.add_argument("--rankings", required=True, help="rankings file, .csv or .jsonl (see docs/ARTIFACTS.md)")
    parser.add_argument("--item-emb", help="item embeddings: .npy [n, d] (with --item-tokens) or .csv (item_id + dims)")
    parser.add_argument("--item-tokens", help=".txt with one raw item token per line, rows of --item-emb .npy")
    parser.add_argument("--dataset", required=True, help="RecBole dataset name (its item tokens are checked)")
    parser.add_argument("--config_files", nargs="*", default=[],
                        help="RecBole config files (the dataset's filtering), comma- or space-separated")
    parser.add_argument(
        "--model", default="SASRec", help="RecBole model used only to build the dataset (default SASRec)"
    )
    parser.add_argument("--output", required=True, help="artifact file to write (.safetensors)")
    parser.add_argument("--K", type=int, default=None, help="teacher items per row (default: all, equal in every row)")
    parser.add_argument("--key-history", type=int, default=DEFAULT_KEY_HISTORY, help="history items in the example key")
    parser.add_argument("--teacher-name", default="external", help="teacher name stored in the metadata")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="on an error, also print the full traceback")
    return parser


def run_import(args: argparse.Namespace) -> int:
    """Build the dataset (its tokens after filtering), write the external teacher's artifact, print its path."""
    from recbole_llmkd.jobs.importer import build_dataset, import_teacher

    config_files = [name for entry in args.config_files for name in split_config_files(entry)]
    dataset = build_dataset(args.dataset, config_files, args.model)
    path = import_teacher(
        args.rankings, args.item_emb, args.item_tokens, dataset=dataset, output=args.output, K=args.K,
        key_history=args.key_history, teacher_name=args.teacher_name, overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0


def build_convert_parser(prog: str) -> argparse.ArgumentParser:
    """``convert --input DIR --output DIR --name NAME [--n-items N]``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert DLLM2Rec/BIGRec/LLaRA splits (train/val/test_data.df + id2name.txt) "
        "into RecBole atomic benchmark files <output>/<name>/<name>.{train,valid,test}.inter and <name>.item.",
    )
    parser.add_argument("--input", required=True, help="folder with train_data.df, val_data.df, test_data.df, id2name.txt")
    parser.add_argument("--output", required=True, help="parent folder of the dataset folder (RecBole data_path)")
    parser.add_argument("--name", required=True, help="dataset name (RecBole 'dataset')")
    parser.add_argument("--n-items", type=int, default=None, help="number of items (default: names in id2name.txt)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="on an error, also print the full traceback")
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Convert the published splits and print what was written (``convert.describe_conversion``)."""
    from recbole_llmkd.jobs.convert import convert_dllm2rec, describe_conversion

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    dataset_dir = convert_dllm2rec(args.input, args.output, args.name, n_items=args.n_items)
    print("\n".join(describe_conversion(dataset_dir, args.name)))
    return 0


# job -> (its parser, given the program name; what runs it on the parsed arguments; one line for --help)
DATA_JOBS = {
    "export": (build_export_parser, run_export, "a trained teacher's artifacts (= --export-teacher)"),
    "import": (build_import_parser, run_import, "an external teacher's rankings as a teacher artifact"),
    "convert": (build_convert_parser, run_convert, "published DLLM2Rec/LLaRA/BIGRec splits as RecBole atomic files"),
}


def run_data_job(job: str, argv: List[str], prog: str) -> int:
    """Parse ``argv`` with ``job``'s parser (named ``prog``) and run the job."""
    build_job_parser, run_job, _ = DATA_JOBS[job]
    return run_job(build_job_parser(prog).parse_args(argv))


def data_job_main(job: str, argv: Optional[List[str]], prog: str) -> int:
    """A data job as a program of its own (``python -m recbole_llmkd.jobs.<module>``): errors are ``<prog>: error:``."""
    return run_reporting_errors(functools.partial(run_data_job, job, prog=prog), argv, prog)


# ----- the former homes of the jobs: recbole_llmkd/data/{export,export_ray,importer,convert}.py -----------------
def forward_to_jobs(module: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` (PEP 562) of the compatibility module ``recbole_llmkd.data.<module>``.

    The jobs (export, export_ray, importer, convert) used to live in ``data/``; they sit above the models now, in
    ``recbole_llmkd/jobs/``, and ``data/`` holds only the artifact formats. Their former modules stay, as
    ``__getattr__ = forward_to_jobs(<module>)`` (plus ``main = former_job_main(...)`` for a job with a program):
    a name such a module does not define is looked up in ``recbole_llmkd.jobs.<module>`` when it is first asked for.
    So ``from recbole_llmkd.data.export import export_teacher`` and ``python -m recbole_llmkd.data.export`` keep
    working while no module of ``data/`` imports a job or a model (tests/test_layout.py).
    """

    def job_attribute(name: str) -> Any:
        return getattr(importlib.import_module(f"recbole_llmkd.jobs.{module}"), name)

    return job_attribute


def former_job_main(job: str, module: str) -> Callable[..., int]:
    """``main(argv=None)`` of the compatibility module ``recbole_llmkd.data.<module>``: the data job ``job`` under
    its former program name ``python -m recbole_llmkd.data.<module>``."""

    def main(argv: Optional[List[str]] = None) -> int:
        return data_job_main(job, argv, f"python -m recbole_llmkd.data.{module}")

    return main


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


# options read only by a sweep (--ray-address also serves --export-teacher)
SWEEP_ONLY_OPTIONS = ("num_samples", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "search_alg", "trial_seeds",
                      "time_budget")


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
    group.add_argument(
        "--trial-seeds", type=_seed_list, metavar="S1,S2,...",
        help="train every trial once per seed and compare trials on the mean validation metric; the best trial's "
        "test split is read once per seed (the space file's search.seeds)",
    )
    group.add_argument(
        "--time-budget", type=_time_budget, metavar="DURATION",
        help="stop the sweep after this long (seconds, or e.g. 45m, 2h) and choose the best among the trials that "
        "finished (the space file's search.time_budget)",
    )


def _space_option(parser_name: str, option: str, text: str):
    """An option with the same rules as its space-file key: ``recbole_llmkd.tune.space.<parser_name>(option, text)``,
    its SpaceError as argparse's error for the option (the space module is imported only when the option is given)."""
    from recbole_llmkd.tune import space

    try:
        return getattr(space, parser_name)(option, text)
    except space.SpaceError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None


def _seed_list(text: str) -> List[int]:
    """``--trial-seeds=2020,2021,2022`` -> [2020, 2021, 2022] (the space file's ``search.seeds`` rules)."""
    return _space_option("parse_run_seeds", "--trial-seeds", text)


def _time_budget(text: str) -> float:
    """``--time-budget=2h`` -> 7200.0 seconds (the space file's ``search.time_budget`` rules)."""
    return _space_option("parse_time_budget", "--time-budget", text)


def run_tune(args, overrides: Dict[str, str]) -> int:
    """``--tune``: run (or ``--resume``) a sweep and print the best trial's validation and test metrics."""
    from recbole_llmkd.tune import run_sweep

    if args.resume and not overrides.get("run_dir"):
        raise CLIError("--resume needs --run_dir=<the sweep directory>")
    if isinstance(args.resume, str):  # --resume=CHECKPOINT
        raise CLIError(f"--resume={args.resume}: a sweep resumes from its directory, give --resume alone")
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
        trial_seeds=args.trial_seeds,
        time_budget=args.time_budget,
        resume=args.resume,
    )
    print(format_metrics(result))
    print(f"best trial: {result['best_trial_id']}  {result['best_params']}")
    print(f"trials ({result['status_counts']}): {result['trials_md']}")
    if result.get("time_budget_reached"):
        print(f"time budget of {result['time_budget_s']:g} s reached: {result['trials_with_results']} of "
              f"{result['expected_trials']} trial(s) reported a result; the best was chosen among those that finished")
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
    if result.get("seeds"):
        header = (f"{result['model']} on {result['dataset']} (mean over seeds {', '.join(map(str, result['seeds']))}: "
                  "each seed's best epoch on validation, its test read once)")
    return header + "\n" + tabulate(rows, headers=["metric", "valid", "test"], floatfmt=".4f", tablefmt="github")


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; a bad input or a stopped run is one ``run_recbole_llmkd.py: error: ...`` line (see errors)."""
    return run_reporting_errors(_main, argv, PROG)


def _main(argv: List[str]) -> int:
    if argv and argv[0] in DATA_JOBS:
        return run_data_job(argv[0], argv[1:], prog=f"{PROG} {argv[0]}")
    args, overrides = parse_args(argv)
    if args.list_models:
        print(_models_epilog().split("\n\n")[0])
        return 0
    sweep_only = [f"--{name.replace('_', '-')}" for name in SWEEP_ONLY_OPTIONS if getattr(args, name) is not None]
    if sweep_only and not args.tune:
        raise CLIError(f"{', '.join(sweep_only)}: sweep option(s), given without --tune=SPACE (they would be ignored)")
    if args.resume == "":
        raise CLIError("--resume= names no checkpoint: give --resume alone (the run directory's checkpoint) or "
                       "--resume=PATH")
    if args.export_teacher:
        if args.resume:
            raise CLIError("--export-teacher resumes by itself: run the same command again (the chunks written are "
                           "kept)")
        print(f"teacher artifacts: {export_with_options(args.export_teacher, args, prefix='export-')}")
        return 0
    if args.pipeline:
        if args.resume:
            raise CLIError("--pipeline resumes by itself: run the same command again (finished steps are reused, "
                           "an interrupted one goes on from its checkpoint)")
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
        resume=args.resume,
    )
    print(format_metrics(result))
    print(f"run directory: {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
