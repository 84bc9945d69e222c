"""The control that proves the distillation machinery: a teacher known to be stronger -> a small student.

A large SASRec (the teacher, trained to convergence) is exported like any teacher (``--export-teacher`` reads any
RecBole sequential checkpoint) and distilled into a small SASRec (hidden 32; ``--student GRU4Rec`` or ``BERT4Rec``
for the other students) with ``kd_method`` none / rd /
logit / dllm2rec (and dllm2rec without ED, and with ``ed_scale: id_norm``) over several seeds. If KD does not beat the plain small student here, the machinery is the suspect; if
it does, a teacher that fails to transfer knows nothing the student does not.

    .venv/bin/python benchmarks/bench_kd_control.py [--out-dir runs/bench_kd_control] [--seeds 2020 2021 2022]
        [--slice "[0,60]"] [--teacher-hidden 128] [--teacher-layers 2] [--student SASRec|GRU4Rec|BERT4Rec]
        [--student-hidden 32] [--epochs 50] [--stopping-step 5] [--teacher-budget EPOCHS PATIENCE] [--valid-smoothing 1]
        [--methods none rd dllm2rec dllm2rec-noed ...] [--teacher-seeds 2020 2021 2022]

Every run has its own directory under ``--out-dir``; a run whose ``results.json`` exists is reused, so an
interrupted benchmark continues where it stopped (an exported artifact too, once its diagnostics are written: one
of another ``--topk`` is refused, not reused). ``--teacher-kind sasrec`` (ID only) or ``semantic`` (the same
SASRec with its item table initialised from MiniLM title embeddings, and those embeddings as the ED source);
``--ed-source item_table|text_encoder`` exports the same teacher with the other ED source, an artifact of its own.
``--teacher-seeds 2020 2021 ...``: the teacher is an ensemble of its recipe trained once per seed (``export
--ensemble``: the lists rank the mean of the members' softmax probabilities; with ``--cross-fit`` each fold's lists
come from the members' fold runs), meant as a teacher further ahead than one of them (on full ml-100k three SASRec-32s
were not: RESULTS.md); its row's metrics are those of its exported valid/test lists (``list_metrics``), its name
``...-ens<M>``.
Writes ``control-<kind>[-<layers>x<hidden>][-h<history>][-xfit<K>][-ed<source>][-<student>][-student<hidden>][-e<epochs>p<patience>][-teacher-e<epochs>p<patience>].json`` (every run, the
teacher included; the optional parts when not the default) into out-dir, merges its rows into ``benchmarks/results/kd_quality.json`` (issue 14's format: dataset, student,
kd_method, teacher, hidden_size, seed, ndcg@10, hit@10, ndcg@20, hit@20) and prints a markdown table: mean ± std
over the seeds and the paired per-seed difference against the plain student. Protocol: ml-100k (the slice given),
leave-one-out in time order, RecBole full ranking, best epoch on validation NDCG@10, test read once per run.
Not part of ``make test``.
"""
import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from typing import List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from recbole_llmkd.data.keys import DEFAULT_KEY_HISTORY  # noqa: E402
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path  # noqa: E402
from recbole_llmkd.measure import device_description, git_commit  # noqa: E402

RESULTS_JSON = os.path.join(REPO_ROOT, "benchmarks", "results", "kd_quality.json")
METRICS = ("ndcg@10", "hit@10", "ndcg@20", "hit@20")
HISTORY = 10  # the students' MAX_ITEM_LIST_LENGTH (the DLLM2Rec protocol), and the teacher's by default
# Teacher kind -> (model, its extra config, --export-item-text): what the teacher knows.
TEACHERS = {
    # ID only: a larger SASRec; its item table is the ED source
    "sasrec": ("SASRec", {}, "item_table"),
    # semantic: the same larger SASRec whose item table starts from the MiniLM title embeddings; the ED source is
    # the 384-d MiniLM embeddings themselves
    "semantic": ("KDSASRec", {"kd_method": "none", "teacher": None, "ed_weight": 0.0, "item_init": "text_encoder"},
                 "text_encoder"),
}
# --ed-source -> its short name in artifact, directory and teacher names (when not the kind's default)
ED_SOURCES = {"item_table": "table", "text_encoder": "minilm"}
# Row label -> KDSASRec config on top of the common one (the label is the kd_method column of the results).
# Rows that never read the teacher: trained once, shared by every teacher's table.
NO_TEACHER = {"none", "none-textinit"}
STUDENTS = ("SASRec", "GRU4Rec", "BERT4Rec")
METHODS = {
    "none": {"kd_method": "none", "teacher": None, "ed_weight": 0.0},  # the plain small SASRec
    # the plain small SASRec whose item table starts from the MiniLM title embeddings (no teacher)
    "none-textinit": {"kd_method": "none", "teacher": None, "ed_weight": 0.0, "item_init": "text_encoder"},
    "rd": {"kd_method": "rd"},  # Tang & Wang ranking distillation
    "logit": {"kd_method": "logit", "ed_weight": 0.0},  # Hinton KD on the teacher's top-K scores, no ED
    "dllm2rec": {"kd_method": "dllm2rec"},  # importance-aware RD + ED at the defaults (ed_scale: fixed)
    "dllm2rec-noed": {"kd_method": "dllm2rec", "ed_weight": 0.0},  # ranking distillation only
    "dllm2rec-idnorm": {"kd_method": "dllm2rec", "ed_scale": "id_norm"},  # ED offset sized by the ID table
    # ED offset sized by the ID table times a learned scalar that starts at 0.1 (the offset starts at 0.02 × b)
    "dllm2rec-learned": {"kd_method": "dllm2rec", "ed_scale": "learned"},
    # ranking distillation only, the teacher's lists without the target and the history items (rd_filter_candidates)
    "dllm2rec-noed-filter": {"kd_method": "dllm2rec", "ed_weight": 0.0, "rd_filter_candidates": True},
    "dllm2rec-filter": {"kd_method": "dllm2rec", "rd_filter_candidates": True},  # the same, with ED
    # the student's item table from MiniLM (as none-textinit) plus the teacher's ranking (and ED)
    "dllm2rec-noed-textinit": {"kd_method": "dllm2rec", "ed_weight": 0.0, "item_init": "text_encoder"},
    "dllm2rec-textinit": {"kd_method": "dllm2rec", "item_init": "text_encoder"},
    # dllm2rec at its defaults plus Hinton KD over the same top-K at the weight it has alone (logit_weight)
    "dllm2rec-logit": {"kd_method": "dllm2rec", "logit_weight": 0.8},
    # the same at smaller logit weights: the popularity profile moves less towards the teacher's (RESULTS.md)
    "dllm2rec-logit0.2": {"kd_method": "dllm2rec", "logit_weight": 0.2},
    "dllm2rec-logit0.4": {"kd_method": "dllm2rec", "logit_weight": 0.4},
}


def _count(text: str, minimum: int, what: str) -> int:
    value = int(text)
    if value < minimum:  # refused by the parser, before any training
        raise argparse.ArgumentTypeError(f"{value}: {what}, at least {minimum}")
    return value


def evaluation_count(text: str) -> int:
    """``--valid-smoothing``'s argparse type: the number of validation scores averaged, at least 1."""
    return _count(text, 1, "the number of evaluations averaged")


def fold_count(text: str) -> int:
    """``--cross-fit``'s argparse type (every bench): the number of fold teachers, at least 2 (``cross_fit_folds``)."""
    return _count(text, 2, "the number of folds")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/bench_kd_control")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--teacher-kind", default="sasrec", choices=list(TEACHERS))
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k (inside RecBole) or a dataset under --data-path")
    parser.add_argument("--data-path", default=None,
                        help="folder holding <dataset>/ (e.g. ../shared/data for lastfm); RecBole's own for ml-100k")
    parser.add_argument("--slice", default="[0,60]", help="user_inter_num_interval ('[0,inf)': every user)")
    parser.add_argument("--teacher-hidden", type=int, default=128)
    parser.add_argument("--teacher-layers", type=int, default=2)
    parser.add_argument("--teacher-history", type=int, default=HISTORY,
                        help=f"the teacher's MAX_ITEM_LIST_LENGTH (the students keep {HISTORY}): a teacher that reads "
                             f"a longer history knows what the student cannot see; its lists still match the "
                             f"students' examples (keys use the last {DEFAULT_KEY_HISTORY} items, so at least that)")
    parser.add_argument("--student", default="SASRec", choices=STUDENTS,
                        help="the small student (its KD twin KD<student> is trained for every kd_method)")
    parser.add_argument("--student-hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--teacher-budget", type=int, nargs=2, default=None, metavar=("EPOCHS", "PATIENCE"),
                        help="the teacher's (and fold teachers') max epochs and patience (default: the students' "
                             "--epochs and --stopping-step); in the teacher's directory name when not 50 5")
    parser.add_argument("--valid-smoothing", type=evaluation_count, default=1, metavar="N",
                        help="the students' valid_smoothing: early stopping and their checkpoint go by the mean of "
                             "the last N validation scores (the teacher keeps RecBole's rule); N > 1 is another run "
                             "(<run>-vs<N>) and its rows carry valid_smoothing")
    parser.add_argument("--topk", type=int, default=50, help="teacher items exported per example")
    parser.add_argument("--config-files", nargs="*", default=[], metavar="YAML",
                        help="RecBole property files applied to every run (e.g. load_col of your own dataset)")
    parser.add_argument("--results-json", default=RESULTS_JSON,
                        help="the kd_quality.json the rows are merged into (default the repository's)")
    parser.add_argument("--cross-fit", type=fold_count, default=None, metavar="K",
                        help="cross-fitted teacher lists: K fold teachers (each without one fold of users) give the "
                             "training rows (data/folds.py); the students' rows are labelled <teacher>-xfit<K>")
    parser.add_argument("--ed-source", default=None, choices=list(ED_SOURCES),
                        help="the ED source z_i in the teacher's artifact (--export-item-text): item_table (the "
                             "teacher's learned item embeddings) or text_encoder (the MiniLM title embeddings); "
                             "default the kind's (sasrec: item_table, semantic: text_encoder). Another source is "
                             "another artifact, and the students' rows are labelled <teacher>-ed<source>")
    parser.add_argument("--teacher-seeds", type=int, nargs="+", default=[2020], metavar="SEED",
                        help="2020 (the default: one teacher); 2020 2021 ... 2020+M-1: an ensemble of M teachers, "
                             "the teacher's recipe trained once per seed; the first member gives the ED source")
    parser.add_argument("--ensemble-with", nargs="+", default=[], metavar="TEACHER_DIR",
                        help="an ensemble of this teacher and other recipes: run directories in --out-dir that an "
                             "earlier call trained (e.g. teacher-sasrec-1x32-e150p20; with --cross-fit, its fold runs "
                             "<dir>-fold<k>of<K> too), each reading at most this teacher's history items; the rows "
                             "name the teacher <teacher>-with-<dir without 'teacher-'>")
    args = parser.parse_args(argv)
    if args.ensemble_with and len(args.teacher_seeds) > 1:
        parser.error("--ensemble-with: not with --teacher-seeds (one ensemble per call)")
    if args.ensemble_with and args.topk < 20:  # as for --teacher-seeds
        parser.error(f"--topk {args.topk}: an ensemble teacher's row is scored from its top-K lists, so K >= 20")
    if len(set(args.teacher_seeds)) != len(args.teacher_seeds):
        parser.error(f"--teacher-seeds {' '.join(map(str, args.teacher_seeds))}: an ensemble's seeds must differ")
    if len(args.teacher_seeds) == 1 and args.teacher_seeds != [2020]:  # its runs and rows are named without a seed
        parser.error(f"--teacher-seeds {args.teacher_seeds[0]}: a single teacher is trained with seed 2020; give "
                     "several seeds for an ensemble")
    if args.teacher_seeds != list(range(2020, 2020 + len(args.teacher_seeds))):  # -ens<M> names seeds 2020 ...
        parser.error(f"--teacher-seeds {' '.join(map(str, args.teacher_seeds))}: an ensemble of M teachers has the "
                     f"seeds 2020 ... 2020 + M - 1 (its runs and rows are named -ens<M>), e.g. 2020 2021 2022")
    if len(args.teacher_seeds) > 1 and args.topk < 20:  # its row's HR/NDCG@20 are read off its lists
        parser.error(f"--topk {args.topk}: an ensemble teacher's row is scored from its top-K lists, so K >= 20")
    if args.teacher_history < DEFAULT_KEY_HISTORY:  # the export could not key its lists; fail before any training
        parser.error(f"--teacher-history {args.teacher_history}: the teacher's lists are keyed on the last "
                     f"{DEFAULT_KEY_HISTORY} history items, so it must read at least {DEFAULT_KEY_HISTORY}")
    return args


def common_config(args) -> dict:
    import yaml

    data_path = {"data_path": os.path.abspath(args.data_path)} if args.data_path else {}
    from_files = {}
    for path in getattr(args, "config_files", None) or []:
        with open(path, encoding="utf-8") as f:
            from_files.update(yaml.safe_load(f) or {})
    return {**from_files, **data_path,
        "gpu_id": "", "show_progress": False, "user_inter_num_interval": args.slice, "MAX_ITEM_LIST_LENGTH": HISTORY,
        "epochs": args.epochs, "stopping_step": args.stopping_step, "train_batch_size": 512, "eval_batch_size": 1024,
        "metrics": ["Hit", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@10",
    }


def sasrec_size(hidden: int, layers: int) -> dict:
    return {"hidden_size": hidden, "inner_size": 2 * hidden, "n_layers": layers, "n_heads": 2 if hidden >= 64 else 1}


def student_size(student: str, hidden: int) -> dict:
    """The small student's config: SASRec and BERT4Rec one layer of width ``hidden``, GRU4Rec embeddings of
    ``hidden`` and a GRU of twice that (RecBole's default ratio, 64 / 128)."""
    if student == "GRU4Rec":
        return {"embedding_size": hidden, "hidden_size": 2 * hidden}
    return sasrec_size(hidden, 1)


def teacher_name(kind: str, layers: int, hidden: int, history: int = HISTORY) -> str:
    """The teacher column of the results: ``SASRec-<layers>x<hidden>``, ``-minilm-init`` for the semantic kind,
    ``-h<history>`` for a teacher that reads more history items than the students."""
    return (f"SASRec-{layers}x{hidden}" + ("-minilm-init" if kind == "semantic" else "")
            + (f"-h{history}" if history != HISTORY else ""))


def teacher_tag(args) -> str:
    """``<kind>``, plus ``-<layers>x<hidden>`` and ``-h<history>`` when they are not the defaults (2 x 128, history
    10): the teacher's part of the run directories and of the control JSON's name."""
    size = (args.teacher_layers, args.teacher_hidden) != (2, 128)
    return (args.teacher_kind + (f"-{args.teacher_layers}x{args.teacher_hidden}" if size else "")
            + (f"-h{args.teacher_history}" if args.teacher_history != HISTORY else ""))


def teacher_dir_name(args) -> str:
    """``teacher-<tag>[-e<epochs>p<patience>]``, the teacher's budget (``--teacher-budget``, else the students'): so
    teachers of other sizes, histories or budgets in one out-dir share the plain students and never each other's
    runs."""
    return f"teacher-{teacher_tag(args)}{budget_suffix(args, teacher=True)}"


def ed_source(args) -> str:
    """The ED source exported (``--export-item-text``): ``--ed-source``, else the teacher kind's own."""
    return args.ed_source or TEACHERS[args.teacher_kind][2]


def ed_suffix(args) -> str:
    """``-ed<source>`` when the ED source is not the teacher kind's own, else empty."""
    source = ed_source(args)
    return "" if source == TEACHERS[args.teacher_kind][2] else f"-ed{ED_SOURCES[source]}"


def ensemble_suffix(args) -> str:
    """``-ens<M>`` for an ensemble of M teachers (``--teacher-seeds``), ``-with-<tag>`` per further recipe
    (``--ensemble-with``, the run directory without ``teacher-``), else empty."""
    seeds = getattr(args, "teacher_seeds", None) or [2020]
    others = "".join(f"-with-{os.path.basename(os.path.normpath(run)).removeprefix('teacher-')}"
                     for run in getattr(args, "ensemble_with", None) or [])
    return (f"-ens{len(seeds)}" if len(seeds) > 1 else "") + others


def finished_run(run_dir: str, what: str) -> dict:
    """The ``results.json`` of a run an earlier call trained (``--ensemble-with``); a clear exit when it is missing."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise SystemExit(f"--ensemble-with: {run_dir} has no results.json: train {what} first (the earlier "
                         f"bench_kd_control call that names it, with the same --cross-fit)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def member_dir(teacher_dir: str, seed: int) -> str:
    """The run directory of the teacher's recipe trained with ``seed``: ``teacher_dir`` itself for 2020 (the single
    teacher's seed, so an ensemble reuses it), else ``<teacher_dir>-seed<seed>``."""
    return teacher_dir if seed == 2020 else f"{teacher_dir}-seed{seed}"


def lists_suffix(args) -> str:
    """What the students learn from beyond the teacher itself: ``[-ens<M>][-xfit<K>][-ed<source>]``."""
    return ensemble_suffix(args) + (f"-xfit{args.cross_fit}" if args.cross_fit else "") + ed_suffix(args)


def artifact_path(teacher_dir: str, ed: str = "") -> str:
    """The teacher's ordinary artifact; ``ed`` (an ``ed_suffix``) names one with another ED source."""
    stem, ext = os.path.splitext(TEACHER_RUN_ARTIFACT)
    return os.path.join(teacher_dir, f"{stem}{ed}{ext}")


def cross_fit_artifact_path(teacher_dir: str, folds: int, ed: str = "") -> str:
    """The cross-fitted artifact beside the ordinary one: ``teacher_artifacts-xfit<K>[-ed<source>].safetensors``."""
    return artifact_path(teacher_dir, f"-xfit{folds}{ed}")


def cross_fitted_artifact(model: str, dataset: str, config: dict, teacher_dir: str, folds: int, topk: int,
                          item_text: str, ed: str = "", compare_with: Optional[str] = None,
                          member_seeds: Optional[List[int]] = None, others: Optional[List[str]] = None) -> str:
    """The cross-fitted artifact of the teacher in ``teacher_dir`` (trained with ``config``): its recipe trained
    once per fold without that fold's users (``<teacher_dir>-fold<k>of<K>``), then exported by
    ``export_cross_fitted``. ``member_seeds`` (several): the teacher is the ensemble of its recipe with these
    seeds (``member_dir``), and each member is trained once per fold (``<member dir>-fold<k>of<K>``). ``others``:
    further members trained by earlier calls (``--ensemble-with``), whose fold runs must exist. Fold runs and the
    artifact are reused when they exist."""
    members = [teacher_dir] if not member_seeds else [member_dir(teacher_dir, seed) for seed in member_seeds]
    member_configs = [config] if not member_seeds else [{**config, "seed": seed} for seed in member_seeds]
    fold_groups = [[f"{member}-fold{fold}of{folds}" for member in members] for fold in range(folds)]
    for fold, group in enumerate(fold_groups):
        for member_config, fold_dir in zip(member_configs, group):
            run_once(model, dataset, {**member_config, "cross_fit_folds": folds, "cross_fit_fold": fold}, fold_dir)
        for other in others or []:
            group.append(f"{other}-fold{fold}of{folds}")
            finished_run(group[-1], f"fold {fold} of {other}")
    return export_cross_fitted(members[0], fold_groups, topk, item_text, ed=ed, compare_with=compare_with,
                               ensemble=(members[1:] + list(others or [])) or None)


def export_cross_fitted(teacher_dir: str, fold_dirs: List, topk: int, item_text: str, ed: str = "",
                        compare_with: Optional[str] = None, ensemble: Optional[List[str]] = None) -> str:
    """The teacher in ``teacher_dir`` exported with ``cross_fit``: each training row's list from the fold teacher
    (``fold_dirs``, trained already, fold k without fold k's users; with ``ensemble``, the further members, each
    entry the members' fold runs) that never saw its user (``compare_with``: a plain student's run for the lists'
    overlap diagnostic). The artifact is reused when it exists."""
    from recbole_llmkd.jobs.export import export_teacher

    artifact = cross_fit_artifact_path(teacher_dir, len(fold_dirs), ed)
    if export_needed(artifact, topk):
        export_teacher(teacher_dir, output=artifact, topk=topk, item_text=item_text, show_progress=False,
                       cross_fit=fold_dirs, compare_with=compare_with, ensemble=ensemble,
                       overwrite=os.path.isfile(artifact))
    return artifact


def export_needed(artifact: str, topk: int) -> bool:
    """Whether ``artifact`` must be exported: not when it and its diagnostics exist (it is reused, and must hold
    top-``topk`` lists: the students' rows would otherwise name lists they never read); yes when it is missing, or
    when its diagnostics are (an export interrupted between the two: exported again, over the finished file)."""
    if not (os.path.isfile(artifact) and os.path.isfile(diagnostics_path(artifact))):
        return True
    with open(diagnostics_path(artifact), encoding="utf-8") as f:
        stored_topk = json.load(f)["K"]
    if stored_topk != topk:
        raise SystemExit(f"{artifact} holds top-{stored_topk} lists, --topk is {topk}: give another --out-dir, "
                         f"or delete the artifact to export it again")
    return False


def run_once(model: str, dataset: str, config: dict, run_dir: str) -> dict:
    """The run in ``run_dir``: reused when it finished, resumed when it was interrupted, else run."""
    from recbole_llmkd.quick_start import run_or_reuse

    return run_or_reuse(model, dataset, run_dir, config_dict=config)[0]


def ensemble_result(artifact: str, member_results: List[dict]) -> dict:
    """An ensemble teacher's ``results.json``-like result: the metrics of its exported valid and test lists (the
    export's ``list_metrics``, which for one teacher equal RecBole's evaluation), the first member's seed, and the
    members' training times summed."""
    with open(diagnostics_path(artifact), encoding="utf-8") as f:
        lists = json.load(f)["list_metrics"]
    return {"seed": member_results[0]["seed"], "test_result": lists["test"], "best_valid_result": lists["valid"],
            "train_time_s": sum(float(result["train_time_s"]) for result in member_results)}


def teacher_budget(args) -> tuple:
    """(max epochs, patience) of the teacher and its fold teachers: ``--teacher-budget``, else the students'."""
    return tuple(getattr(args, "teacher_budget", None) or (args.epochs, args.stopping_step))


def training_budget(args, teacher: bool = False) -> dict:
    """``max_epochs`` and ``patience`` of the students' runs (``teacher``: of the teacher's) when they are not the
    default 50 / 5 (else empty): part of a run's name and of its row, so runs with another budget are other runs."""
    epochs, patience = teacher_budget(args) if teacher else (args.epochs, args.stopping_step)
    if (epochs, patience) == (50, 5):
        return {}
    return {"max_epochs": epochs, "patience": patience}


def selection(args) -> dict:
    """The students' ``valid_smoothing`` when it is not RecBole's rule (1), else empty: in their run names and rows."""
    return {"valid_smoothing": args.valid_smoothing} if args.valid_smoothing != 1 else {}


def selection_suffix(args) -> str:
    return f"-vs{args.valid_smoothing}" if selection(args) else ""


def budget_suffix(args, teacher: bool = False) -> str:
    budget = training_budget(args, teacher)
    return f"-e{budget['max_epochs']}p{budget['patience']}" if budget else ""


def measured(result: dict) -> dict:
    """The measured part of a kd_quality.json row, from a run's ``results.json``: its seed, the test metrics, the best
    validation NDCG@10 and the training time (``train_time_s``, as the run records it: for a run resumed after an
    interruption, the time up to its checkpoint plus the time since the resume, and the row says from which epoch,
    ``resumed_at_epoch``)."""
    test = result["test_result"]
    return {"seed": int(result["seed"]), **{m: float(test[m]) for m in METRICS},
            "best_valid_ndcg@10": float(result["best_valid_result"]["ndcg@10"]),
            "train_time_s": float(result["train_time_s"]),
            **({"resumed_at_epoch": int(result["resumed_at_epoch"])} if "resumed_at_epoch" in result else {})}


def row(result: dict, args, student: str, kd_method: str, teacher: str, hidden: int) -> dict:
    return {"dataset": args.dataset, "users": args.slice, "student": student, "kd_method": kd_method, "teacher": teacher,
            "hidden_size": hidden, **measured(result)}


def merge_results(rows: list, results_json: str = RESULTS_JSON) -> None:
    """Replace rows of the same (dataset, users, student, kd_method, teacher, hidden_size, seed, device, max_epochs,
    patience, valid_smoothing) in kd_quality.json (rows without ``device`` are the CPU VM's, without a budget 50
    epochs / patience 5, without ``valid_smoothing`` RecBole's rule; a GPU run, or another budget or selection rule,
    of the same setting is another row)."""
    key = lambda r: (r["dataset"], r.get("users", "[0,60]"), r["student"], r["kd_method"], r["teacher"], r["hidden_size"], r["seed"], r.get("device", ""), r.get("max_epochs", 50), r.get("patience", 5), r.get("valid_smoothing", 1))  # noqa: E731
    existing = []
    if os.path.isfile(results_json):
        with open(results_json, encoding="utf-8") as f:
            existing = json.load(f)
    new_keys = {key(r) for r in rows}
    merged = [r for r in existing if key(r) not in new_keys] + rows
    os.makedirs(os.path.dirname(os.path.abspath(results_json)), exist_ok=True)
    with open(results_json, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2)


def relative(delta: float, base: list) -> str:
    """``delta`` relative to the mean of ``base`` (``+4.5%``), or ``n/a`` when that mean is 0."""
    mean = statistics.mean(base)
    return f"{delta / mean:+.1%}" if mean > 0 else "n/a"


def mean_std(values: list) -> str:
    """A table cell: ``mean ± std`` of ``values`` (one value: the value alone, one run has no std)."""
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def markdown(rows: list, teacher_row: dict, seeds: list) -> str:
    plain = {r["seed"]: r for r in rows if r["kd_method"] == "none"}
    lines = ["| student | kd_method | NDCG@10 | HR@10 | NDCG@20 | HR@20 | Δ NDCG@10 vs plain, per seed | mean Δ |",
             "|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["kd_method"] for r in rows):
        runs = sorted((r for r in rows if r["kd_method"] == method), key=lambda r: r["seed"])
        deltas = [r["ndcg@10"] - plain[r["seed"]]["ndcg@10"] for r in runs if r["seed"] in plain]
        per_seed = ", ".join(f"{d:+.4f}" for d in deltas) if method != "none" else "–"
        mean_delta = (f"{statistics.mean(deltas):+.4f} ({relative(statistics.mean(deltas), [p['ndcg@10'] for p in plain.values()])})"
                      if method != "none" and deltas else "–")
        lines.append(f"| {runs[0]['student']}-{runs[0]['hidden_size']} | {method} | " + " | ".join(mean_std([r[m] for r in runs]) for m in METRICS)
                     + f" | {per_seed} | {mean_delta} |")
    seeds, others = teacher_row.get("ensemble_seeds"), teacher_row.get("ensemble_with")
    what = (f"an ensemble, seeds {', '.join(map(str, seeds))}" if seeds else
            f"an ensemble with {', '.join(others)}" if others else "one run, seed 2020")
    lines.append(f"| teacher {teacher_row['teacher']} | – | " + " | ".join(f"{teacher_row[m]:.4f}" for m in METRICS)
                 + f" | {what} | – |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from recbole_llmkd.jobs.export import export_teacher

    args = parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    common = common_config(args)
    teacher_model, teacher_extra, _ = TEACHERS[args.teacher_kind]
    item_text = ed_source(args)
    name = teacher_name(args.teacher_kind, args.teacher_layers, args.teacher_hidden, args.teacher_history)

    # 1. the teacher: a large SASRec trained to convergence, exported like any teacher
    teacher_dir = os.path.join(out_dir, teacher_dir_name(args))
    teacher_epochs, teacher_patience = teacher_budget(args)
    own_budget = (teacher_epochs, teacher_patience) != (args.epochs, args.stopping_step)  # not the students'
    teacher_config = {**common, **sasrec_size(args.teacher_hidden, args.teacher_layers), **teacher_extra, "seed": 2020,
                      "MAX_ITEM_LIST_LENGTH": args.teacher_history, "epochs": teacher_epochs,
                      "stopping_step": teacher_patience}
    members = [member_dir(teacher_dir, seed) for seed in args.teacher_seeds]  # one, or an ensemble's
    member_results = [run_once(teacher_model, args.dataset, {**teacher_config, "seed": seed}, member)
                      for seed, member in zip(args.teacher_seeds, members)]
    others = [os.path.join(out_dir, run) for run in args.ensemble_with]  # other recipes, trained by earlier calls
    member_results += [finished_run(run, run) for run in others]
    ensemble = ensemble_suffix(args)
    artifact = artifact_path(teacher_dir, ensemble + ed_suffix(args))
    if export_needed(artifact, args.topk):
        export_teacher(members[0], output=artifact, topk=args.topk, item_text=item_text, show_progress=False,
                       ensemble=(members[1:] + others) or None, overwrite=os.path.isfile(artifact))
    teacher = member_results[0] if not ensemble else ensemble_result(artifact, member_results)
    teacher_row = {**row(teacher, args, "SASRec", "teacher", name + ensemble, args.teacher_hidden),
                   **training_budget(args, teacher=True),
                   **({"ensemble_seeds": list(args.teacher_seeds)} if len(args.teacher_seeds) > 1 else {}),
                   **({"ensemble_with": list(args.ensemble_with)} if args.ensemble_with else {})}
    if args.cross_fit:  # the students learn from the lists of fold teachers that never saw the row's user
        artifact = cross_fitted_artifact(teacher_model, args.dataset, teacher_config, teacher_dir, args.cross_fit,
                                         args.topk, item_text, ensemble + ed_suffix(args),
                                         member_seeds=list(args.teacher_seeds), others=others)
    name += lists_suffix(args)
    if own_budget:  # the students' rows name the teacher's budget
        name += f"-e{teacher_epochs}p{teacher_patience}"

    # 2. the small students
    rows = []
    student = student_size(args.student, args.student_hidden)
    for seed in args.seeds:
        for method in args.methods:
            config = {**common, **student, "seed": seed, "teacher": artifact, **METHODS[method], **selection(args)}
            where = "no-teacher" if method in NO_TEACHER else teacher_dir_name(args) + lists_suffix(args)
            result = run_once(f"KD{args.student}", args.dataset, config,
                              os.path.join(out_dir, where, f"{args.student}{args.student_hidden}-{method}-seed{seed}"
                                                           f"{budget_suffix(args)}{selection_suffix(args)}"))
            rows.append({**row(result, args, args.student, method, "none" if method in NO_TEACHER else name,
                                args.student_hidden), **training_budget(args), **selection(args)})
            print(f"{method} seed {seed}: test ndcg@10 {rows[-1]['ndcg@10']:.4f}", flush=True)

    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "device": device_description(torch_threads=True), "args": vars(args), "teacher": teacher_row}
    suffix = lists_suffix(args) + (
        f"-{args.student.lower()}" if args.student != "SASRec" else "") + (
        f"-student{args.student_hidden}" if args.student_hidden != 32 else "") + budget_suffix(args) + selection_suffix(
        args)  # one file per setting
    if own_budget:
        suffix += f"-teacher-e{teacher_epochs}p{teacher_patience}"
    control_json = f"control-{teacher_tag(args)}{suffix}.json"
    with open(os.path.join(out_dir, control_json), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    merge_results([teacher_row] + rows, args.results_json)
    with open(diagnostics_path(artifact), encoding="utf-8") as f:
        lists = json.load(f)  # the lists the students learn from (cross-fitted ones with --cross-fit)
    print(f"\n{meta['date']}, commit {meta['commit']}, {meta['device']}")
    print(f"teacher lists (train): {lists['target_in_list']:.1%} contain the target, "
          f"{lists['history_in_list']:.1%} contain history items\n")
    print(markdown(rows, teacher_row, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
