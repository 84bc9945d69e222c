"""Distributed teacher export on Ray (jobs/export_ray.py): the same artifact as the single-process export, resumed
after an interrupted run while a worker is killed, and a clear one-line error for a Ray address where nothing listens.

One embedded Ray (2 CPUs) serves the whole module; each export uses 2 workers on the tiny LLMRec teacher of
tests/test_export.py, with chunks of 300 rows (several chunks per split).
"""
import os

import pytest
import torch

from tests.test_export import data_root, sasrec_run, teacher_run  # noqa: F401  (module fixtures: the slice, teachers)

CHUNK_ROWS = 300
EXPORT_ARGS = {"topk": 8, "batch_size": 128, "chunk_rows": CHUNK_ROWS, "show_progress": False}
DEAD_ADDRESS = "127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Embedded Ray for the module, its workers armed with the crash-once hook: ``marker`` is the file whose
    existence makes the next actor that sees it exit hard on its chunk (once)."""
    import ray

    from recbole_llmkd.jobs.export_ray import CRASH_ONCE_ENV, start_ray

    marker = tmp_path_factory.mktemp("ray_hook") / "crash_once"
    previous = os.environ.get(CRASH_ONCE_ENV)
    os.environ[CRASH_ONCE_ENV] = str(marker)  # inherited by the raylet, hence by every worker
    assert start_ray(None, embedded_cpus=2)
    try:
        yield {"marker": marker}
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop(CRASH_ONCE_ENV, None)
        else:
            os.environ[CRASH_ONCE_ENV] = previous


@pytest.fixture(scope="module")
def reference(teacher_run, tmp_path_factory):  # noqa: F811
    """The single-process export (same chunking) every distributed one must equal."""
    from recbole_llmkd.jobs.export import export_teacher

    output = tmp_path_factory.mktemp("reference") / "reference.safetensors"
    return export_teacher(teacher_run["run_dir"], output=output, **EXPORT_ARGS)


def assert_same_artifact(path, reference_path):
    from recbole_llmkd.data.artifacts import load_artifacts

    got, expected = load_artifacts(path), load_artifacts(reference_path)
    assert set(got.tensors) == set(expected.tensors)
    for name, tensor in expected.tensors.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(got.tensors[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        else:  # key, topk_ids: the same rows in the same order, the same teacher lists
            assert torch.equal(got.tensors[name], tensor), name
    for key in ("item_tokens", "splits", "fingerprint", "has", "key_history", "score_kind", "teacher"):
        assert got.metadata[key] == expected.metadata[key], key


def test_an_interrupted_export_resumes_on_ray_and_a_killed_worker_is_retried(ray_cluster, teacher_run,  # noqa: F811
                                                                              reference, tmp_path, monkeypatch):
    """An export interrupted after 2 chunks is finished by 2 Ray workers, computing only the missing chunks (each
    once), while one worker is killed (os._exit) on its first chunk: Ray restarts it and retries that chunk. The
    result is the single-process artifact (the chunks from the local run and from both workers side by side)."""
    from recbole_llmkd.data.artifacts import ArtifactWriter
    from recbole_llmkd.jobs.export import export_teacher

    output = tmp_path / "resumed.safetensors"
    original, written = ArtifactWriter.write_chunk, []

    class Interrupted(Exception):
        pass

    def write_two_then_stop(self, split, start, tensors):
        if len(written) == 2:
            raise Interrupted("simulated interruption after 2 chunks")
        written.append((split, start))
        return original(self, split, start, tensors)

    monkeypatch.setattr(ArtifactWriter, "write_chunk", write_two_then_stop)
    with pytest.raises(Interrupted):  # the local export stops after its first 2 chunks
        export_teacher(teacher_run["run_dir"], output=output, **EXPORT_ARGS)
    assert written == [("train", 0), ("train", CHUNK_ROWS)] and not output.exists()

    marker = ray_cluster["marker"]
    marker.write_text("kill the worker of the next chunk")
    resumed = []
    monkeypatch.setattr(ArtifactWriter, "write_chunk", lambda self, split, start, tensors: (
        resumed.append((split, start)) or original(self, split, start, tensors)))
    export_teacher(teacher_run["run_dir"], output=output, num_workers=2, **EXPORT_ARGS)
    from recbole_llmkd.data.artifacts import load_artifacts

    splits = load_artifacts(reference).metadata["splits"]
    n_chunks = sum(-(-split["n_rows"] // CHUNK_ROWS) for split in splits.values())
    assert not marker.exists()  # a worker took the hook and died on its chunk ...
    assert n_chunks >= 4 and splits["train"]["n_rows"] > 2 * CHUNK_ROWS  # several chunks, on both workers
    assert len(resumed) == n_chunks - 2 and len(set(resumed)) == len(resumed)  # ... every chunk was written once
    assert not set(resumed) & set(written)  # only the missing chunks were computed
    assert_same_artifact(output, reference)


def test_a_recbole_sasrec_teacher_goes_the_same_way(ray_cluster, sasrec_run, tmp_path):  # noqa: F811
    """Any RecBole sequential checkpoint is a worker's teacher too: the worker (run in-process here; an actor runs
    exactly this) loads the SASRec and computes a chunk equal to the single-process export's rows."""
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.jobs.export_ray import ExportWorker
    from pathlib import Path

    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_llmkd.jobs.export import read_teacher_checkpoint

    local = load_artifacts(export_teacher(sasrec_run["run_dir"], output=tmp_path / "local.safetensors",
                                          **EXPORT_ARGS))
    config = read_teacher_checkpoint(Path(sasrec_run["checkpoint"]))["config"]  # the dataset the export builds
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    worker = ExportWorker(sasrec_run["checkpoint"], train_data._dataset)
    rows = train_data._dataset.inter_feat[CHUNK_ROWS: 2 * CHUNK_ROWS]
    split, start, tensors = worker.compute("train", CHUNK_ROWS, rows, EXPORT_ARGS["topk"], False,
                                           EXPORT_ARGS["batch_size"])
    expected = local.split_tensors("train")
    assert (split, start) == ("train", CHUNK_ROWS)
    assert torch.equal(tensors["topk_ids"], expected["topk_ids"][CHUNK_ROWS: 2 * CHUNK_ROWS])
    torch.testing.assert_close(tensors["topk_scores"], expected["topk_scores"][CHUNK_ROWS: 2 * CHUNK_ROWS],
                               rtol=1e-5, atol=1e-6)


def test_a_dead_ray_address_is_one_error_line(teacher_run, tmp_path, capsys):  # noqa: F811
    from recbole_llmkd import cli
    from recbole_llmkd.jobs import export as export_module
    from tests.test_cli_errors import assert_one_error_line

    output = tmp_path / "never.safetensors"
    status = cli.main([f"--export-teacher={teacher_run['run_dir']}", f"--export-output={output}",
                       f"--ray-address={DEAD_ADDRESS}", "--export-workers=2"])
    assert status == 2
    assert_one_error_line(capsys.readouterr().err.strip().splitlines(),
                          r"no Ray cluster at --ray-address=127\.0\.0\.1:1: cannot connect")

    status = export_module.main([teacher_run["run_dir"], "--output", str(output), "--ray-address", "ray://127.0.0.1:1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and lines[-1].startswith(f"{export_module.EXPORT_PROG}: error: no Ray cluster at ")
    assert "ray://127.0.0.1:1" in lines[-1] and not any("Traceback" in line for line in lines)
    assert not output.exists() and not list(tmp_path.glob("*.partial*"))  # refused before any row


def test_bad_ray_addresses_are_recognised():
    from recbole_llmkd.jobs.export_ray import RayAddressError, _host_port

    assert _host_port("ray://head:10002") == ("head", 10002)
    assert _host_port("ray://head") == ("head", 10001)
    assert _host_port("10.0.0.2:6379") == ("10.0.0.2", 6379)
    with pytest.raises(RayAddressError, match="no port"):
        _host_port("head")
    with pytest.raises(RayAddressError, match="bad Ray address"):
        _host_port("head:port")


def test_the_pipeline_accepts_export_workers(tmp_path):
    from recbole_llmkd.pipeline import Pipeline
    from tests.test_pipeline import _write_profile

    pipeline = Pipeline(_write_profile(tmp_path, export={"num_workers": 2, "ray_address": "auto"}),
                        run_dir=str(tmp_path / "pipe"))
    export = {step: config for step, _, config in pipeline.validate()}["export"]
    assert export["num_workers"] == 2 and export["ray_address"] == "auto"
