import math

import torch

from medanomaly.registry import create
from medanomaly.training import BUDGET_STOP, TrainConfig, Trainer, select_device, training_status


def _detector():
    return create("conv_ae", depth=2, width=4, latent_dim=8)


def test_auto_device_is_usable() -> None:
    device = select_device("auto")
    assert torch.zeros(1, device=device).device.type == device.type


def test_time_budget_stops_training(phantom_train) -> None:
    config = TrainConfig(max_epochs=10_000, max_minutes=0.02, batch_size=8, progress=False, patience=None)
    detector = _detector().fit(phantom_train, trainer=Trainer(config))
    assert detector.history_.stopped_because.startswith(BUDGET_STOP)
    assert detector.history_.converged is False
    assert len(detector.history_.epochs) < 100  # stopped by the clock long before its 10,000 epochs (load-independent)


def test_early_stopping_restores_best_epoch(phantom_train) -> None:
    config = TrainConfig(max_epochs=200, batch_size=64, progress=False, patience=1)
    detector = create("conv_ae", depth=2, width=4, latent_dim=8, learning_rate=0.5).fit(
        phantom_train[:128], trainer=Trainer(config)
    )
    history = detector.history_
    assert "no improvement" in history.stopped_because
    assert history.converged is True
    best = min(epoch["val_loss"] for epoch in history.epochs)
    assert math.isclose(history.best_metric, best)


def test_checkpoint_resume_continues(phantom_train, tmp_path) -> None:
    base = dict(batch_size=32, progress=False, patience=None, checkpoint_dir=str(tmp_path))
    first = _detector().fit(phantom_train[:64], trainer=Trainer(TrainConfig(max_epochs=2, **base)))
    assert (tmp_path / "last.pt").exists()
    assert len(first.history_.epochs) == 2
    second = _detector().fit(phantom_train[:64], trainer=Trainer(TrainConfig(max_epochs=4, **base)))
    assert second.history_.resumed_from_epoch == 2
    assert [e["epoch"] for e in second.history_.epochs] == [0, 1, 2, 3]


def test_an_epoch_cut_by_the_budget_is_not_compared_by_its_training_loss(phantom_train, monkeypatch) -> None:
    clock = iter(range(1_000_000))  # every clock reading advances one second: the cut is deterministic
    monkeypatch.setattr("medanomaly.training.engine.time.monotonic", lambda: float(next(clock)))
    config = TrainConfig(max_epochs=50, max_minutes=0.2, batch_size=8, val_fraction=0.0, progress=False, patience=None)
    history = _detector().fit(phantom_train[:32], trainer=Trainer(config)).history_
    assert "time budget" in history.stopped_because
    assert history.epochs[-1].get("partial") is True
    assert not any(epoch.get("partial") for epoch in history.epochs[:-1])
    assert history.best_epoch < history.epochs[-1]["epoch"]


def test_training_status_of_old_and_missing_histories() -> None:
    assert training_status(None)["converged"] is True
    assert training_status({"stopped_because": "time budget of 5 min reached"})["converged"] is False
    assert training_status({"stopped_because": "max_epochs=3 reached"})["converged"] is True


def test_each_step_gets_its_context(phantom_train, monkeypatch) -> None:
    seen = []
    detector = _detector()
    original = type(detector).training_step

    def spy(self, batch, context):
        seen.append(context)
        return original(self, batch, context)

    monkeypatch.setattr(type(detector), "training_step", spy)
    config = TrainConfig(max_epochs=2, batch_size=8, val_fraction=0.25, progress=False, patience=None)
    detector.fit(phantom_train[:32], trainer=Trainer(config))
    assert [context.step for context in seen] == list(range(6))  # 24 training images: 3 batches per epoch
    assert [context.epoch for context in seen] == [0, 0, 0, 1, 1, 1]
    assert {context.phase for context in seen} == {"train"} and seen[4].epochs_done == 1 + 1 / 3
    assert all(context.budget_used == 0.0 for context in seen)  # no budget given
    assert detector.history_.steps == 6


def _scripted_metric(monkeypatch, detector, values) -> None:
    """Make ``detector``'s epoch metric follow ``values`` (one per epoch)."""
    metrics = iter(values)
    monkeypatch.setattr(type(detector), "epoch_metric", lambda self, val_set, record: next(metrics))


def test_min_delta_ends_a_metric_that_only_creeps(phantom_train, monkeypatch) -> None:
    creeping = [0.9998**epoch for epoch in range(6)]  # falls by 0.02 % per epoch: 0.06 % within the patience
    base = dict(max_epochs=6, batch_size=16, progress=False, patience=3)
    detector = _detector()
    _scripted_metric(monkeypatch, detector, creeping)
    history = detector.fit(phantom_train[:32], trainer=Trainer(TrainConfig(min_delta=0.001, **base))).history_
    assert history.stopped_because == "no improvement of val_loss by more than 0.10% for 3 epochs"
    assert (history.best_epoch, len(history.epochs)) == (0, 4)
    detector = _detector()
    _scripted_metric(monkeypatch, detector, creeping)
    history = detector.fit(phantom_train[:32], trainer=Trainer(TrainConfig(**base))).history_
    assert history.stopped_because == "max_epochs=6 reached" and history.best_epoch == 5  # any fall counts


def test_max_steps_sets_the_epochs_from_the_loader(phantom_train) -> None:
    config = TrainConfig(max_steps=7, batch_size=8, val_fraction=0.25, progress=False, patience=None)
    history = _detector().fit(phantom_train[:32], trainer=Trainer(config)).history_
    assert history.stopped_because == "max_steps=7 reached (3 epochs)"  # 24 training images: 3 batches per epoch
    assert (len(history.epochs), history.steps) == (3, 9)
