"""Package layout rules that the code must keep (issue 15): ``data/`` sits below ``model/``, and every
``docs/METHODS.md §N`` cited in the package names a section that exists."""
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


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported by statements at module level, including inside top-level ``if``/``try`` blocks, but not
    inside functions or classes."""
    imported = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, (ast.If, ast.Try)):
            pending += node.body + node.orelse + getattr(node, "finalbody", [])
            pending += [statement for handler in getattr(node, "handlers", []) for statement in handler.body]
    return imported


def test_data_modules_do_not_import_model_at_module_level():
    """No module of ``recbole_llmkd/data/`` imports ``recbole_llmkd.model`` when it is imported.

    Only module-level imports are checked: ``data/export.py`` and ``data/export_ray.py`` still import the models
    lazily inside their job functions (the jobs are to move above ``model/``); such function-level imports are not
    counted here.
    """
    offenders = {}
    for path in sorted((PACKAGE / "data").glob("*.py")):
        imported = _module_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        bad = [name for name in imported if name == "recbole_llmkd.model" or name.startswith("recbole_llmkd.model.")]
        if bad:
            offenders[path.name] = bad
    assert not offenders, f"data/ modules import recbole_llmkd.model at module level: {offenders}"


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
