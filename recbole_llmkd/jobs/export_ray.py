"""Distributed teacher export on Ray: the pending chunks of ``export_teacher`` computed by model replicas.

``export_teacher(..., ray_address=..., num_workers=...)`` (``--ray-address`` / ``--export-workers`` on the command
line) hands the chunk loop to ``compute_chunks_on_ray``; everything else (dataset, metadata, ``item_text_emb``,
``finalize``, diagnostics) stays in the driver, exactly as in the single-process export.

- **Workers**: one Ray actor per worker, each holding one replica of the teacher. An actor loads it once, with
  ``read_teacher_checkpoint`` + ``run.load_model`` (the checkpoint path, and an LLM backbone's files, must be readable
  at the same path on every node: a shared filesystem on a multi-node cluster). The RecBole training dataset the
  model is built from is shipped once with ``ray.put`` (pickled by the driver, which built it anyway), not rebuilt in
  every actor: no second ``data_preparation`` per worker.
- **Chunks**: the driver sends each pending chunk ``(split, start, rows)`` (``rows``: the chunk's slice of the
  split's ``inter_feat``) to an idle actor and collects the results with ``ray.wait``; the actor runs
  ``export._teacher_rows`` over batches of ``batch_size`` rows starting at the chunk's first row, exactly the
  batching of the local loop, so the rows are the same numbers (same batch composition; only the BLAS thread count
  may differ, hence float noise at most).
- **Resume**: the driver writes each chunk with ``ArtifactWriter.write_chunk`` as soon as it arrives (any order):
  an interruption loses at most the chunks in flight (one per worker); a rerun with the same arguments computes
  only the chunks still missing, on Ray or locally.
- **Failures**: an actor that dies (killed, out of memory, node lost) is restarted by Ray and its chunk retried
  (``max_restarts`` / ``max_task_retries`` = ``max_retries``); after that many failures, or on an exception raised
  by the teacher code itself (not retried: it would fail again), the export stops with ``RayExportError`` naming
  the chunk; the chunks written so far stay for the resume.
- **Ray**: without ``ray_address``, Ray is started embedded in this process (``tune.sweep._start_ray``: no
  dashboard, worker logs not forwarded) and shut down at the end; with ``auto``, ``HOST:PORT`` or
  ``ray://HOST:PORT`` the export joins that cluster (``recbole_llmkd`` must be importable there). An address where
  nothing listens is a one-line ``RayAddressError``, checked before Ray tries (and hangs for minutes).
- **Resources**: ``num_cpus=cpus_per_worker`` (default 1; torch in the actor then uses that many threads, so 2
  workers on 2 cores do not oversubscribe them) and ``num_gpus=gpus_per_worker`` (default 1 when the export's
  device is CUDA, else 0); an actor runs on ``cuda`` when Ray gave it a GPU (``ray.get_gpu_ids()``), else on CPU.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import torch

from recbole_llmkd.errors import RecboleLLMKDError

logger = logging.getLogger("recbole_llmkd")

DEFAULT_MAX_RETRIES = 3
# Test hook: when this variable names a file that exists, the first actor that sees it deletes it and exits hard
# (os._exit) on its chunk, like a worker killed mid-way; Ray restarts the actor and retries the chunk.
CRASH_ONCE_ENV = "RECBOLE_LLMKD_EXPORT_CRASH_ONCE"
RAY_CLIENT_DEFAULT_PORT = 10001


class RayExportError(RecboleLLMKDError, RuntimeError):
    """The distributed export could not finish (a chunk failed too often, no resources for a worker, ...)."""


class RayAddressError(RayExportError):
    """No Ray cluster at the given address."""


# ----- Ray start / join --------------------------------------------------------------------------------------------
def _host_port(address: str) -> Optional[tuple[str, int]]:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST[:PORT]``; None for ``auto`` / ``local``."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError as error:
        raise RayAddressError(f"bad Ray address {address!r}: {error}") from error
    if not parts.hostname:
        raise RayAddressError(f"bad Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    if port is None:
        if parts.scheme != "ray":
            raise RayAddressError(f"bad Ray address {address!r}: no port (expected HOST:PORT or ray://HOST:PORT)")
        port = RAY_CLIENT_DEFAULT_PORT
    return parts.hostname, port


def _resolve_auto_address() -> Optional[str]:
    """The ``HOST:PORT`` that ``ray.init(address="auto")`` would join (RAY_ADDRESS, else the latest ``ray start`` of
    this machine); None when there is none or Ray's private helper is unavailable."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # private API, or nothing started: ray.init reports it
        return None


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A ``RayAddressError`` naming ``address`` unless something listens there. ``ray.init`` on a dead address
    retries for minutes and then exits the process; this check answers at once."""
    if address == "auto":
        resolved = _resolve_auto_address()
        if resolved is None:
            raise RayAddressError(
                "--ray-address=auto: no running Ray cluster found on this machine (start one with `ray start "
                "--head`, set RAY_ADDRESS, or omit --ray-address to run Ray embedded)"
            )
        target = _host_port(resolved)
    else:
        target = _host_port(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise RayAddressError(
            f"no Ray cluster at --ray-address={address}: cannot connect to {host}:{port} ({error.strerror or error})"
        ) from error


def start_ray(ray_address: Optional[str], embedded_cpus: Optional[int] = None) -> bool:
    """Join the cluster at ``ray_address`` (checked first) or start Ray embedded here (the sweeps' way); returns
    whether this call started Ray (and so must ``ray.shutdown()`` it)."""
    from recbole_llmkd.tune.sweep import _start_ray

    if ray_address:
        check_ray_address(ray_address)
    try:
        return _start_ray(ray_address, embedded_cpus)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        where = f"--ray-address={ray_address}" if ray_address else "embedded Ray"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise RayAddressError(
            f"cannot start or join Ray ({where}): {lines[-1] if lines else type(error).__name__}"
        ) from error
    except SystemExit as error:  # ray.init exits the process when the GCS never answers
        raise RayAddressError(f"cannot join Ray at --ray-address={ray_address}: the cluster did not answer") from error


# ----- the actor ---------------------------------------------------------------------------------------------------
def _crash_if_asked() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.remove(marker)  # only one actor wins the removal: exactly one crash per marker file
    except FileNotFoundError:
        return
    os._exit(17)


class ExportWorker:
    """One teacher replica (a Ray actor: ``ray.remote(ExportWorker)``); ``compute`` gives one chunk's rows."""

    def __init__(self, checkpoint: str, train_dataset: Any, num_threads: Optional[int] = None):
        import ray

        import recbole_llmkd  # noqa: F401  (numpy-2 shims before RecBole, in a worker that has not imported it yet)
        from recbole_llmkd.jobs.export import read_teacher_checkpoint
        from recbole_llmkd.run import load_model

        if num_threads:
            torch.set_num_threads(num_threads)
        gpu_ids = ray.get_gpu_ids()
        device = torch.device("cuda") if gpu_ids and torch.cuda.is_available() else torch.device("cpu")
        path = Path(checkpoint)
        self.model, config = load_model(read_teacher_checkpoint(path), train_dataset, device=device)
        self.device = config["device"]

    def describe(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.device), "threads": torch.get_num_threads()}

    def compute(self, split: str, start: int, rows: Any, topk: int, with_user_state: bool,
                batch_size: int) -> tuple[str, int, dict[str, torch.Tensor]]:
        """``(split, start, tensors)`` for the chunk whose rows (an ``Interaction`` of n rows) start at ``start``:
        ``topk_ids`` / ``topk_scores`` / ``confidence`` [n, K], ``target_score`` [n], optionally ``user_state``
        [n, d_llm]; CPU tensors. Batches of ``batch_size`` from the chunk's first row, as in the local loop."""
        from recbole_llmkd.jobs.export import _teacher_rows

        _crash_if_asked()
        parts: dict[str, list[torch.Tensor]] = {}
        n_rows = len(rows)
        for batch_start in range(0, n_rows, batch_size):
            batch = rows[batch_start:min(batch_start + batch_size, n_rows)].to(self.device)
            for name, tensor in _teacher_rows([self.model], batch, topk, with_user_state).items():
                parts.setdefault(name, []).append(tensor)
        return split, start, {name: torch.cat(tensors) for name, tensors in parts.items()}


# ----- the driver --------------------------------------------------------------------------------------------------
def _workers_that_fit(requested: Optional[int], cpus: float, gpus: float, n_chunks: int) -> int:
    """Workers to start: ``requested`` (default: as many as the cluster's resources hold), at most one per chunk;
    a warning when the cluster holds fewer than requested, an error when it holds none."""
    import ray

    resources = ray.cluster_resources()
    fits = [resources.get("CPU", 0.0) / cpus] if cpus > 0 else []
    if gpus > 0:
        fits.append(resources.get("GPU", 0.0) / gpus)
    capacity = int(math.floor(min(fits) + 1e-9)) if fits else (requested or 1)
    if capacity < 1:
        raise RayExportError(
            f"the Ray cluster cannot hold one export worker ({cpus:g} CPU, {gpus:g} GPU each; it has "
            f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU)"
        )
    workers = requested or capacity
    if workers > capacity:
        logger.warning(f"export: {workers} workers requested, the Ray cluster holds {capacity}; using {capacity}")
        workers = capacity
    return max(1, min(workers, n_chunks))


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def compute_chunks_on_ray(
    checkpoint: Path,
    train_dataset: Any,
    chunks: list[tuple[str, int, int]],
    rows_of: Callable[[str, int, int], Any],
    write: Callable[[str, int, dict[str, torch.Tensor]], Any],
    topk: int,
    with_user_state: bool,
    batch_size: int,
    *,
    ray_address: Optional[str] = None,
    num_workers: Optional[int] = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: Optional[float] = None,
    use_gpu: bool = False,
    max_retries: int = DEFAULT_MAX_RETRIES,
    on_rows: Optional[Callable[[int], Any]] = None,
) -> int:
    """Compute ``chunks`` (``(split, start, end)`` row ranges) on Ray actors and hand each result to
    ``write(split, start, tensors)`` in the driver as it arrives; returns the number of chunks computed.

    ``rows_of(split, start, end)``: the chunk's rows (that slice of the split's ``inter_feat``), sliced only when the
    chunk is sent. Each actor computes one chunk at a time (``ray.wait`` over the actors' ``compute`` calls), so at
    most ``num_workers`` chunks are in flight. See the module docstring (workers, retries, resources)."""
    if not chunks:
        return 0
    from collections import deque

    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if use_gpu else 0.0
    if cpus_per_worker <= 0 and gpus_per_worker <= 0:
        raise RayExportError("an export worker needs cpus_per_worker > 0 or gpus_per_worker > 0")
    if num_workers is not None and int(num_workers) < 1:
        raise RayExportError(f"num_workers must be at least 1, got {num_workers!r}")
    # embedded Ray: enough CPU slots for the requested workers even on a smaller machine (they then share cores)
    embedded_cpus = None
    if not ray_address and num_workers:
        embedded_cpus = max(os.cpu_count() or 1, int(math.ceil(int(num_workers) * cpus_per_worker)))
    started = time.perf_counter()
    owns_ray = start_ray(ray_address, embedded_cpus)
    actors = []
    try:
        n_workers = _workers_that_fit(num_workers, cpus_per_worker, gpus_per_worker, len(chunks))
        threads = max(1, int(cpus_per_worker)) if cpus_per_worker > 0 else None
        worker_class = ray.remote(ExportWorker).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_retries,
            max_task_retries=max_retries,  # a dead actor is restarted and its chunk sent again, this many times
        )
        dataset_ref = ray.put(train_dataset)  # pickled once, shared by every actor (and every restart)
        actors = [worker_class.remote(str(Path(checkpoint).resolve()), dataset_ref, threads) for _ in range(n_workers)]
        try:  # wait for every replica: the start-up cost is then logged apart from the rows' cost
            ray.get([actor.describe.remote() for actor in actors])
        except RayActorError as error:
            raise RayExportError(
                f"distributed export stopped: a worker could not load the teacher: {_last_line(error)}"
            ) from error
        logger.info(
            f"export: {len(chunks)} chunk(s) on {n_workers} Ray worker(s) ({cpus_per_worker:g} CPU, "
            f"{gpus_per_worker:g} GPU each{', ' + str(threads) + ' torch thread(s)' if threads else ''}); "
            f"Ray and the teacher replicas ready in {time.perf_counter() - started:.1f} s"
        )
        queue = deque(chunks)
        idle = list(actors)
        in_flight: dict[Any, tuple[tuple[str, int, int], Any]] = {}  # ObjectRef -> (chunk, its actor)
        done = 0
        while queue or in_flight:
            while idle and queue:
                actor, (split, start, end) = idle.pop(), queue.popleft()
                ref = actor.compute.remote(split, start, rows_of(split, start, end), topk, with_user_state, batch_size)
                in_flight[ref] = ((split, start, end), actor)
            (ready, *_), _ = ray.wait(list(in_flight), num_returns=1)
            (split, start, end), actor = in_flight.pop(ready)
            try:
                result_split, result_start, tensors = ray.get(ready)
            except RayActorError as error:
                if getattr(error, "actor_init_failed", False):  # the teacher did not load: not retried
                    raise RayExportError(
                        f"distributed export stopped: a worker could not load the teacher: {_last_line(error)}"
                    ) from error
                raise RayExportError(
                    f"distributed export stopped: chunk {split}[{start}:{end}] lost its worker {max_retries + 1} "
                    f"times ({_last_line(error)}); the {done} chunk(s) written are kept: rerun to resume"
                ) from error
            except RayTaskError as error:  # the teacher code raised: deterministic, not retried
                raise RayExportError(
                    f"distributed export stopped: chunk {split}[{start}:{end}] failed in its worker: "
                    f"{_last_line(error)}; the {done} chunk(s) written are kept: rerun to resume"
                ) from error
            assert (result_split, result_start) == (split, start)
            write(split, start, tensors)
            done += 1
            idle.append(actor)
            if on_rows is not None:
                on_rows(end - start)
        return done
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if owns_ray:
            ray.shutdown()
