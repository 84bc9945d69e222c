"""The data jobs as subcommands: ``run_recbole_llmkd.py export|import|convert`` run the same job, parsed by the same
parser, as ``python -m recbole_llmkd.jobs.export|importer|convert`` (and, for the export, ``--export-teacher``); bad
input is one ``run_recbole_llmkd.py: error: <message>`` line with exit status 2.
"""
import os
import subprocess
import sys

import pytest

from recbole_llmkd import cli
from recbole_llmkd.jobs import convert as convert_module, export as export_module, importer as importer_module
from tests.conftest import REPO_ROOT
from tests.test_convert import write_fixture

PROG = "run_recbole_llmkd.py"


@pytest.fixture
def recorded_exports(monkeypatch):
    """Every call of ``export_teacher`` as ``(args, kwargs)``; nothing is exported."""
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return "artifact.safetensors"

    monkeypatch.setattr(export_module, "export_teacher", record)
    return calls


def test_export_forms_reach_the_same_job(recorded_exports, capsys):
    options = ["--topk", "4", "--item-text", "none", "--workers", "2", "--overwrite", "--output", "a.safetensors"]
    assert cli.main(["export", "teacher_run", *options]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "artifact.safetensors"
    assert export_module.main(["teacher_run", *options]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "artifact.safetensors"
    assert cli.main(["--export-teacher=teacher_run", "--export-topk=4", "--export-item-text=none",
                     "--export-workers=2", "--export-overwrite", "--export-output=a.safetensors"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "teacher artifacts: artifact.safetensors"
    assert len(recorded_exports) == 3
    assert recorded_exports[0] == recorded_exports[1] == recorded_exports[2]
    args, kwargs = recorded_exports[0]
    assert args == ("teacher_run",)
    assert kwargs["topk"] == 4 and kwargs["item_text"] == "none" and kwargs["num_workers"] == 2
    assert kwargs["overwrite"] is True and kwargs["output"] == "a.safetensors" and kwargs["ray_address"] is None


def test_export_subcommand_bad_input_is_one_error_line(tmp_path, capsys):
    status = cli.main(["export", str(tmp_path / "nowhere")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and "nowhere" in lines[0]


def test_export_item_text_choices_are_the_exporters():
    assert cli.ITEM_TEXT_SOURCES == export_module.ITEM_TEXT_SOURCES


def test_import_forms_reach_the_same_job(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(importer_module, "build_dataset", lambda *args: ("dataset", *args))

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return kwargs["output"]

    monkeypatch.setattr(importer_module, "import_teacher", record)
    options = ["--rankings", "r.csv", "--dataset", "ml-100k", "--output", "x.safetensors", "--K", "3",
               "--config_files", "a.yaml b.yaml", "c.yaml,d.yaml"]  # space- or comma-separated, as the main CLI
    assert cli.main(["import", *options]) == 0
    assert importer_module.main(options) == 0
    assert capsys.readouterr().out.splitlines() == ["wrote x.safetensors", "wrote x.safetensors"]
    assert len(calls) == 2 and calls[0] == calls[1]
    args, kwargs = calls[0]
    assert args == ("r.csv", None, None)
    assert kwargs["dataset"] == ("dataset", "ml-100k", ["a.yaml", "b.yaml", "c.yaml", "d.yaml"], "SASRec") and kwargs["K"] == 3


def test_convert_subcommand_prints_what_the_module_prints(tmp_path, capsys):
    write_fixture(tmp_path / "in")
    assert convert_module.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "a"), "--name", "toy"]) == 0
    by_module = capsys.readouterr().out
    assert cli.main(["convert", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "b"), "--name", "toy"]) == 0
    by_subcommand = capsys.readouterr().out
    assert by_subcommand == by_module.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    for name in os.listdir(tmp_path / "a" / "toy"):
        assert (tmp_path / "a" / "toy" / name).read_bytes() == (tmp_path / "b" / "toy" / name).read_bytes()


def test_convert_subcommand_bad_input_is_one_error_line(tmp_path, capsys):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "test_data.df").unlink()
    status = cli.main(["convert", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--name", "toy"])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{PROG}: error: {tmp_path / 'in'}: missing the test split file (test_data.df)"
    ]


def test_a_subcommand_missing_an_option_is_argparses_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["import", "--dataset", "ml-100k"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"{PROG} import: error: the following arguments are required: --rankings, --output"
    )


def test_the_script_runs_a_subcommand(tmp_path):
    """The real script, in a subprocess: the subcommand's bad input is one line on stderr and exit status 2."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_llmkd.py"), "convert", "--input", str(tmp_path / "no"),
         "--output", str(tmp_path / "out"), "--name", "toy"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and str(tmp_path / "no") in lines[0], proc.stderr
