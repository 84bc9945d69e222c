"""Package layout rules that the code must keep (issue 15): ``data/`` sits below ``model/`` and ``jobs/``, models open
no file, and every ``docs/METHODS.md §N`` cited in the package names a section that exists."""
import ast
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = Path(REPO_ROOT) / "recbole_llmkd"
METHODS_DOC = Path(REPO_ROOT) / "docs" / "METHODS.md"
# A section number after a citation of the methods document, e.g. "docs/METHODS.md §1.2-§1.8, §2.7".
CITATION = re.compile(r"docs/METHODS\.md((?:[ ,\-–]*§\d+(?:\.\d+)*)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


# The former homes of the jobs, kept in data/ as compatibility modules (cli.forward_to_jobs, cli.former_job_main).
FORMER_JOB_MODULES = {"export.py", "export_ray.py", "importer.py", "convert.py"}
ABOVE_DATA = ("recbole_llmkd.model", "recbole_llmkd.jobs")


def _imports(tree: ast.Module) -> list:
    """Every module an ``import`` statement anywhere in ``tree`` names (module level, functions, classes, branches):
    ``import a.b`` -> ``a.b``; ``from a import b`` -> ``a`` and ``a.b``."""
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    return imported


def _names_something_above_data(name: str) -> bool:
    return any(name == above or name.startswith(above + ".") for above in ABOVE_DATA)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def test_data_modules_do_not_import_model_or_jobs():
    """``data/`` sits below ``model/`` and ``jobs/``: no module of ``recbole_llmkd/data/`` imports
    ``recbole_llmkd.model`` or ``recbole_llmkd.jobs``, at module level or inside a function, and none imports by name
    (``importlib`` or ``__import__``).

    The one way from ``data/`` up to a job is the documented compatibility mechanism of the jobs' former homes
    (``FORMER_JOB_MODULES``): such a module sets ``__getattr__ = cli.forward_to_jobs(<module>)`` (PEP 562, the job
    module is imported by ``recbole_llmkd.cli`` when a name is first asked for) and, for a job with a program,
    ``main = cli.former_job_main(<job>, <module>)``. It holds nothing else: its docstring, imports, those
    assignments and the ``if __name__ == "__main__"`` call of ``main``; no function or class of its own.
    """
    offenders, by_name, forwarding = {}, {}, set()
    for path in sorted((PACKAGE / "data").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad = [name for name in _imports(tree) if _names_something_above_data(name)]
        if bad:
            offenders[path.name] = bad
        dynamic = [name for name in _imports(tree) if name.split(".")[0] == "importlib"]
        dynamic += [node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name) and node.func.id == "__import__"]
        if dynamic:
            by_name[path.name] = dynamic
        calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        if "forward_to_jobs" in calls:
            forwarding.add(path.name)
            extra = [type(node).__name__ for node in tree.body
                     if not (_is_docstring(node) or isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.If)))]
            extra += [target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                      if not (isinstance(target, ast.Name) and target.id in ("__getattr__", "main"))]
            assert not extra, f"data/{path.name} forwards to a job and must hold nothing else, found: {extra}"
    assert not offenders, f"data/ modules import a model or a job: {offenders}"
    assert not by_name, f"data/ modules import by name: {by_name}"
    assert forwarding == FORMER_JOB_MODULES, f"the compatibility modules of data/: {sorted(forwarding)}"


def test_the_jobs_former_paths_still_work(tmp_path):
    """``from recbole_llmkd.data.<module> import <name>`` gives the job's own object, and ``python -m
    recbole_llmkd.data.<module>`` runs the job under its former program name."""
    import subprocess
    import sys

    from recbole_llmkd.data.export import export_teacher
    from recbole_llmkd.data.export_ray import compute_chunks_on_ray
    from recbole_llmkd.data.importer import import_teacher
    from recbole_llmkd.jobs import export, export_ray, importer

    assert export_teacher is export.export_teacher and import_teacher is importer.import_teacher
    assert compute_chunks_on_ray is export_ray.compute_chunks_on_ray
    for module in ("data", "jobs"):
        proc = subprocess.run(
            [sys.executable, "-m", f"recbole_llmkd.{module}.convert", "--input", str(tmp_path / "no"), "--output",
             str(tmp_path / "out"), "--name", "toy"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, cwd=REPO_ROOT,
        )
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"python -m recbole_llmkd.{module}.convert: error: input folder not found: {tmp_path / 'no'}"
        ], proc.stderr


def test_methods_citations_name_existing_sections():
    """Every ``docs/METHODS.md §N`` cited in the package is a numbered heading of docs/METHODS.md, and the package
    never cites the document without its ``docs/`` folder."""
    headings = set(HEADING.findall(METHODS_DOC.read_text(encoding="utf-8")))
    assert {"1", "1.4", "2", "2.7", "3.1"} <= headings, f"unexpected headings in {METHODS_DOC}: {sorted(headings)}"
    missing, bare = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            where = f"{path.relative_to(Path(REPO_ROOT))}:{line_number}"
            if re.search(r"(?<!docs/)METHODS\.md", line):
                bare.append(where)
            for citation in CITATION.finditer(line):
                missing += [f"{where} §{number}" for number in SECTION.findall(citation.group(1))
                            if number not in headings]
    assert not bare, f"cite the methods document as docs/METHODS.md: {bare}"
    assert not missing, f"cited sections not in docs/METHODS.md: {missing}"


# What reads or writes a file: a model that names one of these opens a file (issue 15: models receive what they need
# from ``recbole_llmkd.run.build_model``; folding and saving live in ``recbole_llmkd.jobs.fold``). tests/test_build_model.py
# builds each model family with the file functions patched to fail (it also covers Hugging Face's loaders, whose name
# ``from_pretrained`` torch's in-memory ``nn.Embedding.from_pretrained`` shares).
FILE_IO_NAMES = {
    "open", "load_file", "save_file", "safe_open", "load", "save", "load_checkpoint", "read_checkpoint",
    "load_backbone", "backbone_from_config", "lora_backbone_from_config", "load_text_encoder",
    "item_text_embeddings", "encode_item_texts", "item_titles_for_dataset", "read_item_text", "load_artifacts",
    "resolve_teacher_artifacts", "resolve_checkpoint", "sha256_file", "create_dataset", "isfile", "exists",
    "mkdir", "makedirs", "read_text", "write_text", "read_csv", "safe_load", "fromfile", "listdir", "glob",
    "import_module", "__import__",
}
# Above the models: what hands them their inputs, and the jobs' former homes in data/ that forward to jobs/.
ABOVE_MODELS = ("recbole_llmkd.run", "recbole_llmkd.jobs", "recbole_llmkd.pipeline", "recbole_llmkd.quick_start",
                "recbole_llmkd.cli", "recbole_llmkd.tune", "recbole_llmkd.report",
                *(f"recbole_llmkd.data.{name[:-3]}" for name in FORMER_JOB_MODULES))


def test_models_open_no_file():
    """No module under ``recbole_llmkd/model/`` names anything that reads or writes a file (``FILE_IO_NAMES``, as a
    name or an attribute, called or not: ``torch.load``, ``os.path.isfile``, ...), nor imports the run, the jobs, the
    pipeline or the front ends, which sit above the models and hand them what they need."""
    offenders = {}
    for path in sorted((PACKAGE / "model").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        named |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        imported = [name for name in _imports(tree) if any(name == up or name.startswith(up + ".") for up in ABOVE_MODELS)]
        imported_io = [name.rsplit(".", 1)[-1] for name in _imports(tree) if name.rsplit(".", 1)[-1] in FILE_IO_NAMES]
        bad = sorted(named & FILE_IO_NAMES) + imported + imported_io
        if bad:
            offenders[str(path.relative_to(PACKAGE / "model"))] = bad
    assert not offenders, f"model/ modules open files or reach above the models: {offenders}"
