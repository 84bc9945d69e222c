"""The main job: LLM teacher -> artifacts -> plain and distilled students -> SLMRec -> report, in one run directory.

    run_recbole_llmkd.py --pipeline=auto|tiny|cpu|full|PROFILE.yaml [--dataset=ml-100k] [--run_dir=...]
                         [--config_files=a.yaml,b.yaml] [--llm_backbone=...] [--key=value ...]

A profile (``properties/pipeline/<name>.yaml``) fixes every step's config. Each step runs in its own
sub-directory; a step whose ``results.json`` exists is reused, so a rerun after an interruption continues where it
stopped (the artifact export resumes chunk by chunk).

Precedence in every model step, lowest first: the property files of the step's model and dataset < the profile's
``common`` section < the profile's section for the step < ``--config_files`` (in order; every step) < ``--key=value``
on the command line (every step). So ``--config_files=properties/dllm2rec_protocol.yaml`` runs any profile on data
converted by ``python -m recbole_llmkd.jobs.convert``. A dataset read from benchmark files (``benchmark_filename``)
is already split and filtered: RecBole ignores the filter keys then, so the profile's filters
(``BENCHMARK_IGNORED_KEYS``) are dropped from every step and reported once (stderr, the log and the report).

The teacher is ``LLMRec`` unless the profile says ``teacher_model: BIGRec`` (the generative teacher,
``model/bigrec.py``): then the KD students read its ``neg_l2`` artifacts with ``confidence_mode: code`` (DLLM2Rec's
own setting; a ``kd`` section may still say otherwise), and the SLMRec steps, which distil an LLMRec's hidden states,
are left out (the ``slmrec`` section is then optional and ignored).

The job is a declared list of ``Step``s (``Pipeline.plan()``): each has a kind (``train`` a model, ``export`` the
teacher's artifact), a model and a config, its ``inputs`` (config key -> ``Ref(earlier step, output)``: a plain
student's checkpoint for the teacher's ``item_table``, the teacher's run directory for the export and SLMRec, the
artifact for the KD students), its ``outputs`` (a train step's run directory, ``results.json`` and checkpoint; the
artifact file) and the report row it yields (``Row``: role, plain twin). ``run()`` walks the list: a step whose outputs
exist is reused, each input is read from the outputs of the earlier step, and the report's rows are the steps' rows.
``Pipeline.validate()`` (run first by ``run()``) rejects an impossible profile, or an input that no earlier step
writes, before anything trains.
"""
import copy
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Optional

import torch
import yaml
from tqdm import tqdm

from recbole_llmkd import compat
from recbole_llmkd.config import load_yaml_file, plugin_property_keys, properties_dir, unknown_keys_with_hints
from recbole_llmkd.config_schema import Key
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path
from recbole_llmkd.errors import Interrupted, RecboleLLMKDError
from recbole_llmkd.measure import device_description, git_commit
from recbole_llmkd.report import ReportRow, write_pipeline_report
from recbole_llmkd.run import RESULTS_FILE, RunInterrupted

logger = logging.getLogger("recbole_llmkd")

PROFILE_KEYS = {"profile", "description", "dataset", "common", "teacher_model", "teacher", "export", "students", "kd",
                "slmrec", "seed_noise_pct"}
TEACHER_MODELS = ("LLMRec", "BIGRec")  # teacher_model: the LLM teacher of the profile
SEED_NOISE_PCT = Key("number", minimum=0.0)  # seed_noise_pct: the report's "within seed noise" band, % of NDCG@10


# RecBole 1.2.1 skips Dataset._data_filtering when benchmark_filename is set: these keys have no effect on such data.
BENCHMARK_IGNORED_KEYS = (
    "rm_dup_inter", "val_interval", "filter_inter_by_user_or_item", "user_inter_num_interval", "item_inter_num_interval",
)

EXPORT_STEP = "export"  # the model name plan() gives the artifact export step (not a model: export_teacher's kwargs)

# The kinds of step, what each writes (its outputs, by name) and which of those marks it finished (then it is reused).
TRAIN = "train"  # run_recbole_llmkd(model, config): outputs run_dir, results (its results.json), checkpoint
EXPORT = "export"  # export_teacher(**config): output artifact (the safetensors file)
FINISHED_BY = {TRAIN: "results", EXPORT: "artifact"}


class PipelineError(RecboleLLMKDError, ValueError):
    """A profile or pipeline input that cannot run."""


def output_placeholder(step: str, output: str) -> str:
    """What ``Pipeline.plan()`` writes where an output of a step goes before that step has run."""
    return f"<{output} of step {step}>"


def checkpoint_placeholder(step: str) -> str:
    """What ``Pipeline.plan()`` writes where a step's checkpoint goes before that step has run."""
    return output_placeholder(step, "checkpoint")


@dataclass(frozen=True)
class Ref:
    """An input of a step: the output ``output`` (``run_dir``, ``checkpoint``, ``artifact``) of the earlier ``step``.

    ``plan()`` builds configs with ``Ref`` values; each becomes an entry of the step's ``inputs``."""

    step: str
    output: str


def read_output(produced: Dict[str, Dict[str, str]], ref: Ref) -> str:
    """``ref``'s value in ``produced`` (step name -> its outputs); its placeholder when that is not there (yet)."""
    return produced.get(ref.step, {}).get(ref.output, output_placeholder(ref.step, ref.output))


@dataclass(frozen=True)
class Row:
    """The report row a step yields: its ``model`` column, its role, the step it is compared with and its place."""

    name: str  # e.g. "LLMRec (teacher)", "KDSASRec"
    role: str  # teacher | student | kd-student | slm-twin | slm-student
    position: int  # rows are listed by position: the teacher, each student beside its KD twin, the twin, SLMRec
    plain_twin: Optional[str] = None  # the step whose row this one is compared with (``ndcg@10_gain_vs_twin_%``)


@dataclass(frozen=True)
class Step:
    """One declared step of the job: what runs, on which config, what it reads and writes, what it reports.

    Unpacks and indexes as ``(name, model, config)``.
    """

    name: str  # its directory under the pipeline's run_dir (the export writes into the teacher's)
    kind: str  # TRAIN or EXPORT
    model: str  # the model trained; EXPORT_STEP for the export
    config: dict  # run_recbole_llmkd's config_dict, or export_teacher's keyword arguments; inputs at plan-time values
    inputs: Dict[str, Ref] = field(default_factory=dict)  # config key -> the earlier step's output it reads
    outputs: Dict[str, str] = field(default_factory=dict)  # output name -> path (a placeholder until the step ran)
    row: Optional[Row] = None  # its report row, if it has one

    def __iter__(self):
        return iter((self.name, self.model, self.config))

    def __getitem__(self, index):
        return tuple(self)[index]

    def __len__(self) -> int:
        return 3

    def finished(self) -> bool:
        """Whether a previous run left this step's outputs (its results.json, or the artifact file)."""
        return os.path.isfile(self.outputs[FINISHED_BY[self.kind]])

    def resolved_config(self, produced: Dict[str, Dict[str, str]]) -> dict:
        """``config`` with every input read from ``produced`` (step name -> its outputs, as they are after it ran)."""
        return {**self.config, **{key: read_output(produced, ref) for key, ref in self.inputs.items()}}

    def outputs_after(self, result: Optional[dict]) -> Dict[str, str]:
        """Its outputs once it ran (``result``: a train step's results, which name its checkpoint)."""
        return {**self.outputs, "checkpoint": result["checkpoint"]} if self.kind == TRAIN else dict(self.outputs)


def fill_checkpoints(config_dict: dict, checkpoints: Dict[str, str]) -> dict:
    """``config_dict`` with each ``checkpoint_placeholder(step)`` value replaced by ``checkpoints[step]``."""
    by_placeholder = {checkpoint_placeholder(step): path for step, path in checkpoints.items()}
    return {key: by_placeholder.get(value, value) if isinstance(value, str) else value
            for key, value in config_dict.items()}


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
    noise = profile.get("seed_noise_pct")
    if noise is not None and not SEED_NOISE_PCT.accepts(noise):  # a finite number >= 0, not a bool
        raise PipelineError(f"{path}: seed_noise_pct must be a number >= 0 (a percentage of NDCG@10), got {noise!r}")
    teacher_model = profile.setdefault("teacher_model", "LLMRec")
    if teacher_model not in TEACHER_MODELS:
        raise PipelineError(f"{path}: teacher_model must be one of {list(TEACHER_MODELS)}, got {teacher_model!r}")
    for key in ("teacher", "students") + (("slmrec",) if teacher_model == "LLMRec" else ()):
        if key not in profile:
            raise PipelineError(f"{path}: profile needs a '{key}' section")
    if not isinstance(profile["students"], dict):
        raise PipelineError(f"{path}: 'students' maps each RecBole student (SASRec, GRU4Rec, BERT4Rec) to its config")
    kd = profile.get("kd") or {}
    if not isinstance(kd, dict):
        raise PipelineError(f"{path}: 'kd' maps KD keys to values (every KD student), got {kd!r}")
    for student in profile["students"]:
        if student in kd and not isinstance(kd[student], dict):
            raise PipelineError(f"{path}: kd.{student} holds keys for KD{student} only (a mapping), got {kd[student]!r}")
    if teacher_model != "LLMRec":
        profile.pop("slmrec", None)  # SLMRec distils an LLMRec's hidden states
    elif "llm_n_layers" not in profile["slmrec"]:
        raise PipelineError(f"{path}: 'slmrec' needs llm_n_layers (the student's decoder layers)")
    return profile


def kd_keys(profile: dict, student: str) -> dict:
    """The profile's ``kd`` keys that ``KD<student>`` reads: the shared ones (every key that does not name a student),
    then its own subsection ``kd.<student>`` (e.g. ``kd: {GRU4Rec: {rd_neg_term: none}}``) on top."""
    kd = profile.get("kd") or {}
    shared = {key: value for key, value in kd.items() if key not in profile["students"]}
    return {**shared, **kd.get(student, {})}


def check_inputs(steps: List[Step]) -> None:
    """``PipelineError`` unless every input of every step is an output that an earlier step declares."""
    declared: Dict[str, Dict[str, str]] = {}
    for step in steps:
        for key, ref in step.inputs.items():
            if ref.output not in declared.get(ref.step, {}):
                raise PipelineError(f"step '{step.name}': {key} reads the {ref.output} of step '{ref.step}', which no "
                                    f"earlier step writes (earlier steps: {', '.join(declared) or 'none'})")
        declared[step.name] = step.outputs


def report_rows(steps: List[Step], results: Dict[str, dict]) -> List[ReportRow]:
    """The report's rows, as the steps declare them (``Step.row``), with their results; in ``Row.position`` order."""
    reported = sorted((step for step in steps if step.row is not None), key=lambda step: step.row.position)
    row_names = {step.name: step.row.name for step in reported}
    return [ReportRow(step.row.name, step.row.role, results[step.name], plain_twin=row_names.get(step.row.plain_twin))
            for step in reported]


class Pipeline:
    """Runs the steps of one profile in ``run_dir``; every step is skipped when its results already exist."""

    def __init__(self, profile_path: str, run_dir: Optional[str] = None, dataset: Optional[str] = None,
                 overrides: Optional[Dict[str, str]] = None, config_files: Optional[List[str]] = None):
        self.profile_path = profile_path
        self.profile = load_profile(profile_path)
        self.config_files = [os.path.abspath(path) for path in (config_files or [])]
        self.file_config: dict = {}  # --config_files merged in order: applied to every step above the profile
        for path in self.config_files:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file not found: {path}")
            self.file_config.update(load_yaml_file(path, yaml.FullLoader))
        self.dataset = dataset or self.profile.get("dataset", "ml-100k")
        name = self.profile.get("profile", os.path.splitext(os.path.basename(profile_path))[0])
        self.run_dir = os.path.abspath(run_dir or os.path.join("runs", f"pipeline-{name}-{self.dataset}"))
        self.overrides = dict(overrides or {})
        self.ignored_keys = self._benchmark_ignored_keys()
        self.overrides = {key: value for key, value in self.overrides.items() if key not in self.ignored_keys}
        self.steps_reused: List[str] = []
        self.steps_run: List[str] = []

    # ----- one step ---------------------------------------------------------------------------------
    def step_dir(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def artifact_path(self) -> str:
        return os.path.join(self.step_dir("teacher"), TEACHER_RUN_ARTIFACT)

    def step_outputs(self, name: str, kind: str) -> Dict[str, str]:
        """What a step writes, by output name; the checkpoint (RecBole names its file) is a placeholder until then."""
        if kind == EXPORT:
            return {"artifact": self.artifact_path()}
        return {"run_dir": self.step_dir(name), "results": os.path.join(self.step_dir(name), RESULTS_FILE),
                "checkpoint": checkpoint_placeholder(name)}

    def step_config(self, step: str, config: dict) -> dict:
        """One step's config_dict: the profile's ``common``, the step's own keys, ``--config_files``, its run directory.

        Keys that a benchmark-file dataset cannot honour (``self.ignored_keys``) are left out.
        """
        merged = {**copy.deepcopy(self.profile.get("common") or {}), **copy.deepcopy(config),
                  **copy.deepcopy(self.file_config)}
        merged = {key: value for key, value in merged.items() if key not in self.ignored_keys}
        return {**merged, "run_dir": self.step_dir(step), "measure_throughput": True}

    def _benchmark_ignored_keys(self) -> Dict[str, object]:
        """``{key: value}`` of the filter keys the profile or the config files set while the data come from
        benchmark files (RecBole ignores them there); empty for ordinary atomic data."""
        benchmark = self.overrides.get("benchmark_filename", self.file_config.get("benchmark_filename"))
        if benchmark is None:
            benchmark = (self.profile.get("common") or {}).get("benchmark_filename")
        if not benchmark or benchmark in ("~", "None", "null"):
            return {}
        students = self.profile["students"]
        sections = [self.profile.get("common") or {}, self.profile.get("teacher") or {},
                    self.profile.get("slmrec") or {}, *[c or {} for c in students.values()],
                    *[kd_keys(self.profile, student) for student in students],
                    self.file_config, self.overrides]
        return {key: section[key] for section in sections for key in BENCHMARK_IGNORED_KEYS if key in section}

    def report_ignored_keys(self) -> Optional[str]:
        """The one line that says which settings were dropped for benchmark-file data (None when none were)."""
        if not self.ignored_keys:
            return None
        settings = ", ".join(f"{key}={value}" for key, value in sorted(self.ignored_keys.items()))
        return (f"dataset '{self.dataset}' is read from benchmark files (benchmark_filename): already split and "
                f"filtered, so these settings are not applied to any step: {settings}")

    def run_model(self, step: str, model: str, config_dict: dict) -> dict:
        """Train/evaluate ``model`` in ``<run_dir>/<step>``, or reuse the results a previous run left there."""
        return self.run_step(Step(step, TRAIN, model, config_dict, outputs=self.step_outputs(step, TRAIN)),
                             config_dict)

    def run_step(self, step: Step, config: dict) -> Optional[dict]:
        """Run ``step`` on ``config`` (its inputs resolved), or reuse it when it is ``finished()``; a train step
        returns its results (``results.json``), the export None."""
        from recbole_llmkd.jobs.export import export_teacher
        from recbole_llmkd.quick_start import run_or_reuse

        if step.kind == EXPORT and step.finished():
            self.steps_reused.append(step.name)
            return None
        try:
            if step.kind == EXPORT:
                export_teacher(**config)  # an interrupted export resumes by itself
                result, reused = None, False
            else:
                # validate() checked the overrides against every step; a step that was interrupted goes on from its
                # best checkpoint so far
                result, reused = run_or_reuse(step.model, self.dataset, step.outputs["run_dir"], config_dict=config,
                                              cmd_args=self.overrides, check_cmd_keys=False)
        except Interrupted as stop:  # its message names a run's or an export's command, not the pipeline's
            raise RunInterrupted(f"pipeline interrupted in step {step.name}; the same command again goes on "
                                 "where it stopped (finished steps are reused)") from stop
        (self.steps_reused if reused else self.steps_run).append(step.name)
        return result

    # ----- the plan and its checks ------------------------------------------------------------------
    def plan(self) -> List[Step]:
        """Every step in run order, declared as a ``Step``: exactly what ``run()`` executes.

        A step unpacks as ``(step name, model, config_dict)``: ``config_dict`` is what the step passes to
        ``run_recbole_llmkd`` (the command-line overrides go on top of it as ``cmd_args``); the export step is
        ``("export", "export", keyword arguments of export_teacher)``. What a step reads of an earlier one is in its
        ``inputs`` and stands in ``config_dict`` at its value before the run: a path (the teacher's run directory, the
        artifact), or the placeholder ``checkpoint_placeholder(step)`` for a checkpoint (the teacher's
        ``item_table: SASRec`` is that step's checkpoint); ``run()`` fills it in.
        """
        profile = self.profile
        students = profile["students"]
        teacher_model = profile["teacher_model"]
        steps: List[Step] = []

        def add(name: str, model: str, config: dict, row: Optional[Row] = None, kind: str = TRAIN) -> None:
            if kind == TRAIN:  # + common, --config_files, its run directory
                config = self.step_config(name, config)
            steps.append(self._declare(name, kind, model, config, row, earlier=steps))

        # report rows: the teacher, then each student beside its KD twin (in the profile's order), then SLMRec's
        position = {student: 1 + 2 * index for index, student in enumerate(students)}

        def add_plain(student: str) -> None:
            add(student, student, students[student] or {}, Row(student, "student", position[student]))

        # E4SRec: an LLMRec teacher may read a plain student's item table (frozen): `teacher: {item_table: SASRec}`
        teacher = dict(profile["teacher"])
        table_source = teacher.get("item_table")
        if not isinstance(table_source, str) or table_source not in students or teacher_model != "LLMRec":
            table_source = None
        if table_source is not None:
            add_plain(table_source)
            teacher["item_table"] = Ref(table_source, "checkpoint")
        add("teacher", teacher_model, teacher, Row(f"{teacher_model} (teacher)", "teacher", 0))
        export = {**(profile.get("export") or {}), "checkpoint_or_run_dir": Ref("teacher", "run_dir"),
                  "output": self.artifact_path()}
        if table_source is not None:  # the diagnostics: how much of each teacher list that plain student ranks anyway
            export.setdefault("compare_with", Ref(table_source, "checkpoint"))
        add("export", EXPORT_STEP, export, kind=EXPORT)
        for student, student_config in students.items():
            if student != table_source:
                add_plain(student)
            kd_defaults = {"confidence_mode": "code"} if teacher_model == "BIGRec" else {}  # distances: DLLM2Rec's own
            kd_config = {**(student_config or {}), **kd_defaults, **kd_keys(profile, student),
                         "teacher": Ref("export", "artifact")}
            add(f"KD{student}", f"KD{student}", kd_config,
                Row(f"KD{student}", "kd-student", position[student] + 1, plain_twin=student))
        if "slmrec" not in profile:
            return steps
        slm = profile["slmrec"]
        last = 1 + 2 * len(students)
        twin = {**teacher, **(slm.get("twin") or {}), "llm_n_layers": slm["llm_n_layers"]}
        add("slm_twin", "LLMRec", twin, Row(f"LLMRec-{slm['llm_n_layers']}L (no KD)", "slm-twin", last))
        slm_config = {key: value for key, value in slm.items() if key != "twin"}
        add("SLMRec", "SLMRec", {**teacher, **slm_config, "teacher": Ref("teacher", "run_dir")},
            Row("SLMRec", "slm-student", last + 1, plain_twin="slm_twin"))
        return steps

    def _declare(self, name: str, kind: str, model: str, config: dict, row: Optional[Row],
                 earlier: List[Step]) -> Step:
        """The ``Step``: every ``Ref`` value of ``config`` becomes an input, written into the config as that earlier
        step declares the output (a placeholder if none does: ``validate()`` rejects that)."""
        declared = {done.name: done.outputs for done in earlier}
        inputs = {key: value for key, value in config.items() if isinstance(value, Ref)}
        config = {key: read_output(declared, value) if isinstance(value, Ref) else value
                  for key, value in config.items()}
        return Step(name, kind, model, config, inputs, self.step_outputs(name, kind), row)

    def validate(self) -> List[Step]:
        """Check the whole job before anything trains; returns ``plan()``. Cheap: no data loading, no model.

        Raises ``PipelineError`` naming the step and the key when
        - a step's input is not an output of an earlier step;
        - a student is not a RecBole/plugin model, or has no registered ``KD<name>`` twin;
        - a step's recbole_llmkd ``Config`` cannot be built, or its config_dict has a key no property file of its
          model defines (a typo would be ignored silently), or a command-line override is known to no step;
        - the dataset's atomic files are missing;
        - the steps would not see the same data (dataset keys such as filters and ``MAX_ITEM_LIST_LENGTH``, or
          ``eval_args``, differ between steps), or ``MAX_ITEM_LIST_LENGTH`` < the export's ``key_history``;
        - the teacher's ``item_table`` is neither ``trainable``, a student of the profile, nor an existing file;
        - the export options are not export_teacher's;
        - ``valid_smoothing`` > 1 for a step that trains with RecBole's own trainer (a plain student), or a KD
          student / SLMRec selected by another ``valid_smoothing`` than its plain twin;
        - a model's own ``check_options(config)`` rejects the step's config (e.g. SLMRec's ``slm_blocks: 1`` with
          multi-supervision on, KD weights that are all 0);
        - SLMRec: ``slm_blocks`` B does not divide the student's ``llm_n_layers`` N and the teacher's depth M (its
          ``llm_n_layers``, else ``slm_teacher_n_layers``; not checked when both are ~ = the backbone's depth).
        """
        import inspect

        from recbole_llmkd import registry
        from recbole_llmkd.config import Config
        from recbole_llmkd.jobs.export import export_teacher
        from recbole_llmkd.distill.hidden import block_layer_pairs
        from recbole_llmkd.run import DatasetNotFoundError, check_dataset_files
        from recbole_llmkd.trainer.selection import check_valid_smoothing, valid_smoothing

        steps = self.plan()
        check_inputs(steps)
        for student in self.profile["students"]:
            try:
                registry.get_model(student)
            except registry.UnknownModelError as err:
                raise PipelineError(f"students: unknown student model '{student}': {err}") from None
            if f"KD{student}" not in registry.plugin_model_names():
                raise PipelineError(
                    f"students: '{student}' has no distilled twin KD{student} registered; students with one: "
                    f"{sorted(name[2:] for name in registry.plugin_model_names() if name.startswith('KD'))}"
                )

        configs = {}
        known_anywhere = set()
        with compat.cuda_visible_devices_kept():
            for declared in steps:
                step, model, config_dict = declared
                if declared.kind == EXPORT:
                    parameters = inspect.signature(export_teacher).parameters
                    accepted = set(parameters)
                    unknown = sorted(set(config_dict) - accepted)
                    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                        raise PipelineError(
                            f"step 'export': unknown export option(s) {unknown}; allowed: {sorted(accepted)}"
                        )
                    continue
                try:
                    config = Config(model, self.dataset, config_dict=copy.deepcopy(config_dict),  # Config edits it
                                    cmd_args=self.overrides)
                except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
                    raise PipelineError(f"step '{step}' ({model}): invalid config: {err}") from err
                known = config.known_keys()
                known_anywhere |= known
                # a --config_files key of another model (e.g. a dataset file's BIGRec prompts) is not this step's
                # typo: RecBole config files hold keys of several models; one that no property file defines is
                unknown = sorted(key for key in config_dict if key not in known
                                 and not (key in self.file_config and key in plugin_property_keys()))
                if unknown:
                    raise PipelineError(
                        f"step '{step}' ({model}): config key(s) {unknown} are not defined by any property file "
                        f"of {model} (typo, or a key of another model in the wrong profile section?)"
                    )
                if hasattr(config.model_class, "check_options"):  # the model's own checks, as run.build_model does
                    try:
                        config.model_class.check_options(config)
                    except RecboleLLMKDError as err:
                        raise PipelineError(f"step '{step}' ({model}): {err}") from None
                try:  # as run.prepare will, before anything trains
                    check_valid_smoothing(config, registry.get_trainer(config["MODEL_TYPE"], model))
                except RecboleLLMKDError as err:
                    raise PipelineError(f"step '{step}' ({model}): {err}") from None
                configs[step] = config
        for declared in steps:  # a gain compares two runs selected by the same rule
            twin = declared.row.plain_twin if declared.row else None
            if twin not in configs:
                continue
            own, twins = valid_smoothing(configs[declared.name]), valid_smoothing(configs[twin])
            if own != twins:
                raise PipelineError(
                    f"step '{declared.name}': valid_smoothing={own} but its plain twin '{twin}' selects with {twins}: "
                    "the report's gain would compare two selection rules; set it alike for both (the 'common' section)"
                )
        unknown_overrides = sorted(key for key in self.overrides if key not in known_anywhere)
        if unknown_overrides:
            raise PipelineError(f"command line: {unknown_keys_with_hints(unknown_overrides, known_anywhere)}: a key of no "
                                "step's model")

        first_step = next(iter(configs))
        try:
            check_dataset_files(configs[first_step])
        except DatasetNotFoundError as err:
            raise PipelineError(f"step '{first_step}': {err}") from None

        # Every step must see the same interactions and splits: the artifacts are matched row by row.
        reference = configs["teacher"]
        for step, config in configs.items():
            for key in sorted(set(config.parameters["Dataset"]) | {"eval_args"}):
                if config[key] != reference[key]:
                    raise PipelineError(
                        f"step '{step}': {key}={config[key]!r} differs from the teacher's {reference[key]!r}; every "
                        f"step must see the same data (set {key} in the profile's 'common' section)"
                    )
        key_history = int((self.profile.get("export") or {}).get("key_history", 10))
        if int(reference["MAX_ITEM_LIST_LENGTH"]) < key_history:
            raise PipelineError(
                f"every step: MAX_ITEM_LIST_LENGTH={reference['MAX_ITEM_LIST_LENGTH']} < export key_history="
                f"{key_history}: the artifact keys need that many history items"
            )

        item_table = reference["item_table"] if "item_table" in reference else None
        placeholders = {checkpoint_placeholder(student) for student in self.profile["students"]}
        if item_table not in (None, "trainable") and item_table not in placeholders \
                and not os.path.isfile(str(item_table)):
            raise PipelineError(
                f"step 'teacher': item_table={item_table!r} is neither 'trainable', a student of this profile "
                f"({', '.join(self.profile['students'])}) nor an existing checkpoint file"
            )

        if "SLMRec" not in configs:
            return steps
        slm = configs["SLMRec"]
        n_student, n_blocks = slm["llm_n_layers"], slm["slm_blocks"]
        if n_student is None:
            raise PipelineError("step 'SLMRec': llm_n_layers (the student's decoder layers N) is required")
        n_teacher = reference["llm_n_layers"] if slm["kd_mode"] != "online" else None
        n_teacher = n_teacher if n_teacher is not None else slm["slm_teacher_n_layers"]
        try:
            block_layer_pairs(n_teacher if n_teacher is not None else n_blocks, n_student, n_blocks)
        except ValueError as err:
            depth = f"the teacher's depth M={n_teacher}" if n_teacher is not None else "(teacher depth ~: unchecked)"
            raise PipelineError(
                f"step 'SLMRec': slm_blocks={n_blocks!r} must divide the student's llm_n_layers N={n_student!r} and "
                f"{depth}: {err}"
            ) from None
        return steps

    # ----- the job ----------------------------------------------------------------------------------
    def run(self) -> dict:
        steps = self.validate()
        os.makedirs(self.run_dir, exist_ok=True)  # only once the job is possible: a refused one writes nothing
        ignored = self.report_ignored_keys()
        if ignored:  # once, here and in the report
            print(f"recbole_llmkd pipeline: {ignored}", file=sys.stderr, flush=True)
        progress = tqdm(total=len(steps), desc="pipeline", unit="step", file=sys.stderr)
        started = time.perf_counter()
        produced: Dict[str, Dict[str, str]] = {}  # step name -> its outputs (the checkpoint's real path)
        results: Dict[str, dict] = {}  # step name -> results of a train step
        for step in steps:
            result = self.run_step(step, step.resolved_config(produced))
            produced[step.name] = step.outputs_after(result)
            if result is not None:
                results[step.name] = result
            progress.update(1)
        progress.close()

        profile = self.profile
        rows = report_rows(steps, results)

        meta = {
            "profile": profile.get("profile"),
            "teacher_model": profile["teacher_model"],
            "profile_description": profile.get("description", ""),
            "profile_dataset": profile.get("dataset"),
            "seed_noise_pct": profile.get("seed_noise_pct"),
            "profile_file": self.profile_path,
            "dataset": self.dataset,
            "device": device_description(),
            "date": datetime.now().isoformat(timespec="seconds"),
            "commit": git_commit(),
            "seeds": sorted({int(r.result.get("seed", -1)) for r in rows}),
            "steps_run": self.steps_run,
            "steps_reused": self.steps_reused,
            "pipeline_wall_time_s": time.perf_counter() - started,
            "overrides": self.overrides,
            "config_files": self.config_files,
            "not_applied": ignored,
            "teacher_lists": self._teacher_list_diagnostics(),
        }
        return self.write_report(rows, meta)

    def _teacher_list_diagnostics(self) -> Optional[dict]:
        """What the export measured of the teacher's lists on the training split (None if it did not)."""
        path = diagnostics_path(self.artifact_path())
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_report(self, rows: List[ReportRow], meta: dict) -> dict:
        """The report files in ``run_dir`` (``report.write_pipeline_report``); returns their paths, table and meta."""
        return write_pipeline_report(self.run_dir, rows, meta)
