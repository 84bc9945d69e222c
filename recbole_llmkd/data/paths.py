"""Where artifacts live: the one file name a teacher run directory uses, and how ``--teacher`` is resolved.

``TEACHER_RUN_ARTIFACT`` is the only spelling of the artifact file name in the package and the benchmarks; the
export writes it, the pipeline and the students look for it.
"""
from __future__ import annotations

import os
from pathlib import Path

from recbole_llmkd.errors import FIRST_FEW

# File name of the artifact inside a teacher run directory (the export's default output).
TEACHER_RUN_ARTIFACT = "teacher_artifacts.safetensors"


def diagnostics_path(artifact_path: str | os.PathLike) -> Path:
    """Where the teacher lists' diagnostics of an artifact are written: ``<stem>.diagnostics.json`` beside it
    (``teacher_artifacts.safetensors`` -> ``teacher_artifacts.diagnostics.json``)."""
    artifact_path = Path(artifact_path)
    return artifact_path.with_name(artifact_path.stem + ".diagnostics.json")


def resolve_teacher_artifacts(path: str | os.PathLike | None) -> Path:
    """The artifact file behind ``--teacher``: an artifact file itself, or a teacher run directory holding
    ``TEACHER_RUN_ARTIFACT``. Raises ``FileNotFoundError`` naming what was looked for."""
    if path is None or str(path).strip() in ("", "None", "~"):
        raise FileNotFoundError(
            "no teacher given: pass --teacher=<artifact file or teacher run dir holding "
            f"{TEACHER_RUN_ARTIFACT}>"
        )
    candidate = Path(os.path.expanduser(str(path)))
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        inside = candidate / TEACHER_RUN_ARTIFACT
        if inside.is_file():
            return inside
        found = sorted(p.name for p in candidate.glob("*.safetensors"))
        raise FileNotFoundError(
            f"teacher run directory {candidate} holds no {TEACHER_RUN_ARTIFACT}"
            + (f" (it has: {', '.join(found[:FIRST_FEW])}); pass the artifact file itself" if found else
               "; export the teacher's artifacts first or pass the artifact file")
        )
    raise FileNotFoundError(f"teacher artifact not found: {candidate} is neither a file nor a directory")
