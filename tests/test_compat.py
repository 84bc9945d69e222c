"""The RecBole 1.2.1 workarounds of ``recbole_llmkd.compat``: installed by importing the package, idempotent."""
import os
import subprocess
import sys

from recbole_llmkd import compat
from tests.conftest import REPO_ROOT


def test_importing_the_package_installs_the_patches_without_importing_recbole():
    """A fresh process (as a Ray worker is): RecBole is patched as soon as it is imported, never before."""
    code = (
        "import sys, recbole_llmkd\n"
        "assert 'recbole' not in sys.modules and 'torch' not in sys.modules\n"
        "import recbole.trainer.trainer as trainer, recbole.config.configurator as configurator\n"
        "from recbole_llmkd import compat\n"
        "assert trainer.get_tensorboard is compat._tensorboard_beside_log\n"
        "assert configurator.Config._init_parameters_category._recbole_llmkd_copy\n"
        "import torch, recbole.model.sequential_recommender  # imports sine.py, which turns anomaly detection on\n"
        "assert not torch.is_anomaly_enabled()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_anomaly_detection_is_off_when_recbole_was_imported_before_the_plugin():
    """RecBole's sine.py switches anomaly detection on at import; imported before the plugin, install() undoes it
    once, and a later install() leaves a user's own set_detect_anomaly(True) alone."""
    code = (
        "import torch, recbole.model.sequential_recommender\n"
        "assert torch.is_anomaly_enabled()  # RecBole's doing\n"
        "import recbole_llmkd\n"
        "from recbole_llmkd import compat\n"
        "assert not torch.is_anomaly_enabled()\n"
        "torch.autograd.set_detect_anomaly(True)  # the user's own choice\n"
        "compat.install()\n"
        "assert torch.is_anomaly_enabled()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_install_is_idempotent():
    import recbole.trainer.trainer as trainer

    compat.install()
    compat.install()
    assert sum(isinstance(finder, compat._PatchOnImport) for finder in sys.meta_path) == 1
    assert trainer.get_tensorboard is compat._tensorboard_beside_log
    assert compat._recbole_get_tensorboard is not compat._tensorboard_beside_log


def test_cuda_visible_devices_kept(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with compat.cuda_visible_devices_kept():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with compat.cuda_visible_devices_kept():
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_recbole_models_are_found_without_exlib():
    assert compat.recbole_model_module("SASRec") == "recbole.model.sequential_recommender.sasrec"
    assert compat.recbole_model_module("LightGBM") is None  # an exlib model: never probed


def test_trainers_that_save_their_own_way_keep_it():
    """RecBole's Trainer and the plugin's trainers get TrainerStateCheckpoint's checkpoints (whole, with the
    trainer's state); a trainer with its own _save_checkpoint keeps it and gets the loading fix alone."""
    from recbole.trainer import Trainer

    from recbole_llmkd.compat import TrainerStateCheckpoint, _CheckpointLoading, checkpoint_safe_trainer
    from recbole_llmkd.trainer.kd_trainer import KDTrainer

    class OwnSaving(Trainer):
        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            return "own"

    for trainer_class in (Trainer, KDTrainer):
        assert issubclass(checkpoint_safe_trainer(trainer_class), TrainerStateCheckpoint)
    own = checkpoint_safe_trainer(OwnSaving)
    assert issubclass(own, _CheckpointLoading) and not issubclass(own, TrainerStateCheckpoint)
    assert own._save_checkpoint(None, 0) == "own"
