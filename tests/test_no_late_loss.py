"""Issue 13, no late loss: checkpoints know their run, unreadable files and full disks are clear errors."""

from __future__ import annotations

import errno

import pytest
import torch

from medanomaly.errors import ModelError
from medanomaly.registry import create
from medanomaly.training import TrainConfig, Trainer


def _fit(images, tmp_path, max_epochs=1, **params):
    config = TrainConfig(max_epochs=max_epochs, batch_size=32, progress=False, patience=None,
                         checkpoint_dir=str(tmp_path))
    return create("conv_ae", depth=2, width=4, latent_dim=8, **params).fit(images, trainer=Trainer(config))


def test_checkpoint_of_other_data_is_refused(phantom_train, tmp_path) -> None:
    _fit(phantom_train[:64], tmp_path)
    with pytest.raises(ModelError, match="training data differs"):
        _fit(phantom_train[64:128], tmp_path, max_epochs=2)


def test_checkpoint_of_other_configuration_is_refused(phantom_train, tmp_path) -> None:
    _fit(phantom_train[:64], tmp_path)
    with pytest.raises(ModelError, match="method configuration differs"):
        _fit(phantom_train[:64], tmp_path, max_epochs=2, learning_rate=0.5)


def test_same_run_still_resumes(phantom_train, tmp_path) -> None:
    _fit(phantom_train[:64], tmp_path)
    assert _fit(phantom_train[:64], tmp_path, max_epochs=2).history_.resumed_from_epoch == 1


def test_empty_checkpoint_is_a_clear_error(phantom_train, tmp_path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="last.pt: unreadable checkpoint .*empty.*delete it"):
        _fit(phantom_train[:64], tmp_path)
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelError, match="unreadable checkpoint"):
        _fit(phantom_train[:64], tmp_path)


def test_disk_full_while_checkpointing_names_the_file(phantom_train, tmp_path, monkeypatch) -> None:
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ModelError, match="last.pt: cannot write the checkpoint .No space left on device"):
        _fit(phantom_train[:64], tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "last.pt").exists()
