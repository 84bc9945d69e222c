"""Teacher artifacts: the file that carries an LLM teacher's knowledge to the cheap students.

One file per (teacher run, dataset), ``<name>.safetensors``. Tensors are stored with
``safetensors.torch.save_file``; all metadata is ONE JSON string in the safetensors header metadata under the
key ``"recbole_llmkd"``. No pickle anywhere. The format is documented in ``docs/ARTIFACTS.md``.

Tensors (``s`` in train / valid / test; only train is required)::

    {s}.key           int64   [N]          example key (see ``example_key``)
    {s}.topk_ids      int64   [N, K]       artifact item indices, best first
    {s}.topk_scores   float32 [N, K]       teacher score of each listed item (higher is better)
    {s}.confidence    float32 [N, K]       optional, per-candidate confidence
    {s}.target_score  float32 [N]          optional, teacher score of the ground-truth target
    {s}.user_state    float32 [N, d]       optional, teacher user vector
    item_text_emb     float32 [n_items, d] optional, row = artifact item index, row 0 ([PAD]) zeros

Artifact item index ``j`` is the position of the raw item token in ``metadata["item_tokens"]`` (index 0 =
``"[PAD]"``). Rows are keyed by raw tokens, never by RecBole internal ids, which change with filtering;
``TeacherArtifacts.align`` maps both back onto the current dataset.

This module is the public face of the format and holds no logic; each concern lives in its own file:

    keys.py      example keys and the dataset fingerprint (raw-token view of a RecBole dataset)
    validate.py  format constants, ``ArtifactError`` and the checks shared by writer and reader
    writer.py    ``ArtifactWriter``, the resumable export, and ``dataset_metadata``
    reader.py    ``load_artifacts`` and ``TeacherArtifacts``
    align.py     ``AlignedTeacher``, ``align_artifacts`` and ``ArtifactMismatchError``
    paths.py     the artifact file name of a teacher run and ``resolve_teacher_artifacts``
"""

from recbole_llmkd.data.align import AlignedTeacher, ArtifactMismatchError, align_artifacts
from recbole_llmkd.data.keys import (
    DEFAULT_KEY_HISTORY,
    PAD_TOKEN,
    dataset_example_keys,
    dataset_fingerprint,
    example_key,
    example_keys,
    item_tokens,
)
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path, resolve_teacher_artifacts
from recbole_llmkd.data.reader import TeacherArtifacts, load_artifacts
from recbole_llmkd.data.validate import (
    FORMAT_VERSION,
    GLOBAL_TENSORS,
    METADATA_KEY,
    OPTIONAL_ROW_TENSORS,
    REQUIRED_ROW_TENSORS,
    SCORE_KINDS,
    SPLITS,
    USER_METADATA_OPTIONAL,
    USER_METADATA_REQUIRED,
    WRITER_METADATA_KEYS,
    ArtifactError,
)
from recbole_llmkd.data.writer import ArtifactWriter, dataset_metadata

__all__ = [
    "DEFAULT_KEY_HISTORY",
    "FORMAT_VERSION",
    "GLOBAL_TENSORS",
    "METADATA_KEY",
    "OPTIONAL_ROW_TENSORS",
    "PAD_TOKEN",
    "REQUIRED_ROW_TENSORS",
    "SCORE_KINDS",
    "SPLITS",
    "TEACHER_RUN_ARTIFACT",
    "USER_METADATA_OPTIONAL",
    "USER_METADATA_REQUIRED",
    "WRITER_METADATA_KEYS",
    "AlignedTeacher",
    "ArtifactError",
    "ArtifactMismatchError",
    "ArtifactWriter",
    "TeacherArtifacts",
    "align_artifacts",
    "dataset_example_keys",
    "dataset_fingerprint",
    "dataset_metadata",
    "diagnostics_path",
    "example_key",
    "example_keys",
    "item_tokens",
    "load_artifacts",
    "resolve_teacher_artifacts",
]
