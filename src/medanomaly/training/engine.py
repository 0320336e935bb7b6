"""One training loop for every torch method.

Phases, epochs, optimiser updates, device, seeding, validation, early stopping, checkpoints, resuming, a progress bar
and a wall-clock safety net (anomalib's Engine / PyOD's template method, much smaller).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medanomaly.data.identity import check_identity, load_checkpoint, run_identity, save_checkpoint
from medanomaly.training.context import RunConfig, StepContext, optimise
from medanomaly.training.device import select_device

if TYPE_CHECKING:
    from medanomaly.detectors.torch_base import TorchDetector

logger = logging.getLogger(__name__)
_CHECKPOINT = "last.pt"
#: Called by the Trainer after each epoch with (phase, epochs done, max epochs of the phase).
EpochCallback = Callable[[str, int, int], None]
#: The ``stopped_because`` of a run that the wall-clock budget ended (printed by the CLI, shown by the workstation).
BUDGET_STOP = "stopped by the time budget before converging"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop (not of a method).

    Attributes:
        max_epochs: Upper bound on epochs (the schedule; early stopping usually ends training before it).
        max_steps: When set, the schedule is counted in optimisation steps (batches) instead: the phase runs
            ``ceil(max_steps / batches per epoch)`` epochs, whatever ``max_epochs`` says.
        max_minutes: Wall-clock safety net; training stops at the end of the batch that crosses it and the history
            says it did not converge. None = no limit.
        batch_size: Images per step.
        val_fraction: Fraction of the training images held out for validation / early stopping.
        patience: Epochs without improvement of the validation metric before stopping; None disables.
        min_delta: Smallest relative change of the monitored metric that counts as an improvement (0.001: a loss
            must fall below its best value by 0.1 % of it within ``patience`` epochs); smaller changes neither reset
            the patience nor replace the best weights, so a loss that only creeps down still ends training.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        checkpoint_dir: Where ``last.pt`` is written after each epoch; None = no checkpoints.
        resume: Continue from ``checkpoint_dir/last.pt`` when it exists.
        progress: Show a progress bar.
    """

    max_epochs: int = 50
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 32
    val_fraction: float = 0.1
    patience: int | None = 8
    min_delta: float = 0.0
    device: str = "auto"
    checkpoint_dir: str | None = None
    resume: bool = True
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def run(self) -> RunConfig:
        """The part that methods without gradient steps use."""
        return RunConfig(self.batch_size, self.device, self.progress, self.max_minutes)


@dataclass
class TrainingHistory:
    """What happened during training, saved with the model.

    ``converged`` is True when early stopping or the epoch schedule ended training, False when the time budget cut
    it (``stopped_because`` then starts with :data:`BUDGET_STOP`).
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = math.nan
    monitor: str = "val_loss"
    stopped_because: str = ""
    converged: bool = True
    seconds: float = 0.0
    steps: int = 0
    resumed_from_epoch: int | None = None
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class _Phase:
    """One phase's loop state: its settings, optimisers, loader and clock."""

    name: str
    config: TrainConfig
    optimizers: dict[str, torch.optim.Optimizer]
    loader: DataLoader
    generator: torch.Generator
    started: float = 0.0
    budget: float = math.inf  # seconds this phase may use
    total: float = math.inf  # seconds of the whole run's budget
    used_before: float = 0.0  # seconds of the earlier phases


class Trainer:
    """Runs a :class:`TorchDetector`'s phases and steps over its data until done, out of patience or out of time.

    The detector declares its ``phases`` (one, ``"train"``, for most methods), its optimisers per phase and a
    ``training_step(batch, context)``; the Trainer owns epochs, the optimiser updates (through
    :meth:`StepContext.update`), validation, early stopping, checkpoints (``last.pt``, one per phase in a folder of
    the phase's name when there are several) and the wall-clock safety net shared by all phases.
    """

    def __init__(self, config: TrainConfig | None = None, on_epoch: EpochCallback | None = None) -> None:
        self.config = config or TrainConfig()
        self.device = select_device(self.config.device)
        self.on_epoch = on_epoch  # (phase, epochs done, max epochs) after each epoch: progress of background jobs

    def fit(self, detector: TorchDetector, train_set: Dataset, val_set: Dataset | None) -> TrainingHistory:
        """Train ``detector`` (whose modules are already built) and leave it with its best weights, in eval mode."""
        detector.to(self.device)
        identify = self.config.checkpoint_dir is not None
        self._identity = run_identity(detector, train_set, self.config.batch_size) if identify else {}
        histories: dict[str, TrainingHistory] = {}
        for name in detector.phases:
            detector.start_phase(name)
            phase = self._phase(detector, name, train_set, sum(h.seconds for h in histories.values()))
            histories[name] = self._fit_phase(detector, phase, val_set)
            logger.info("%s %s phase: %s", detector.name, name, histories[name].stopped_because)
        for module in detector.modules().values():
            module.eval()
        return _merge(histories)

    def _phase(self, detector: TorchDetector, name: str, train_set: Dataset, used_before: float) -> _Phase:
        config = detector.phase_config(name, self.config)
        generator = torch.Generator().manual_seed(int(detector.random_state or 0))
        drop_last = len(train_set) > config.batch_size
        loader = DataLoader(train_set, config.batch_size, shuffle=True, drop_last=drop_last, generator=generator)
        if config.max_steps is not None:
            config = replace(config, max_epochs=max(math.ceil(config.max_steps / max(len(loader), 1)), 1))
        total = self.config.max_minutes * 60.0 if self.config.max_minutes else math.inf
        own = config.max_minutes * 60.0 if config.max_minutes else math.inf
        budget = min(own, max(total - used_before, 0.06))
        return _Phase(name, config, detector.configure_optimizers(), loader, generator, 0.0, budget, total, used_before)

    def _checkpoint(self, detector: TorchDetector, phase: str) -> Path | None:
        if self.config.checkpoint_dir is None:
            return None
        folder = Path(self.config.checkpoint_dir)
        return (folder / phase if len(detector.phases) > 1 else folder) / _CHECKPOINT

    def _later_phase_started(self, detector: TorchDetector, phase: str) -> bool:
        """Whether a later phase has a checkpoint (this phase then ended in an earlier run)."""
        later = detector.phases[detector.phases.index(phase) + 1 :]
        return any((path := self._checkpoint(detector, name)) is not None and path.exists() for name in later)

    def _fit_phase(self, detector: TorchDetector, phase: _Phase, val_set: Dataset | None) -> TrainingHistory:
        config = phase.config
        history, start_epoch, best_state = TrainingHistory(monitor=detector.monitor), 0, None
        checkpoint = self._checkpoint(detector, phase.name)
        if checkpoint is not None and config.resume and checkpoint.exists():
            if self._later_phase_started(detector, phase.name):
                return TrainingHistory(**load_checkpoint(checkpoint, self.device)["history"])
            start_epoch, best_state = self._resume(checkpoint, detector, phase, history)
        phase.started = time.monotonic() - history.seconds
        epochs = tqdm(
            range(start_epoch, config.max_epochs),
            desc=f"train {detector.name}" + (f" ({phase.name})" if len(detector.phases) > 1 else ""),
            disable=not config.progress,
            unit="epoch",
        )
        for epoch in epochs:
            out_of_time = self._run_epoch(detector, phase, epoch, history)
            metric = detector.epoch_metric(val_set, history.epochs[-1])
            history.epochs[-1][detector.monitor] = metric
            # an epoch cut by the budget has a training loss over fewer batches: not comparable with full epochs
            comparable = val_set is not None or not out_of_time or best_state is None
            if out_of_time:
                history.epochs[-1]["partial"] = True
            if comparable and _improved(metric, history.best_metric, detector.monitor_mode, config.min_delta):
                history.best_metric, history.best_epoch = metric, epoch
                best_state = copy.deepcopy(detector.training_state())
            history.seconds = time.monotonic() - phase.started
            epochs.set_postfix({k: f"{v:.4g}" for k, v in history.epochs[-1].items() if k != "epoch"})
            logger.info("epoch %d: %s", epoch, history.epochs[-1])
            if checkpoint is not None:
                self._save(checkpoint, detector, phase, history, best_state)
            if self.on_epoch is not None:
                self.on_epoch(phase.name, epoch + 1, config.max_epochs)
            history.stopped_because = self._stop_reason(out_of_time, epoch, history, config)
            if history.stopped_because:
                break
        history.stopped_because = history.stopped_because or _schedule_end(config)
        if best_state is not None:
            detector.load_training_state(best_state)
        history.seconds = time.monotonic() - phase.started
        return history

    def _stop_reason(self, out_of_time: bool, epoch: int, history: TrainingHistory, config: TrainConfig) -> str:
        """Why training should stop after ``epoch`` ("" to go on)."""
        if out_of_time:
            history.converged = False
            return f"{BUDGET_STOP} ({self.config.max_minutes:g} min)"
        if config.patience is not None and epoch - history.best_epoch >= config.patience:
            by = f" by more than {config.min_delta:.2%}" if config.min_delta else ""
            return f"no improvement of {history.monitor}{by} for {config.patience} epochs"
        return ""

    def _run_epoch(self, detector: TorchDetector, phase: _Phase, epoch: int, history: TrainingHistory) -> bool:
        """One pass over the phase's loader; returns True when the time budget ran out."""
        for module in detector.modules().values():
            module.train()
        sums: dict[str, float] = {}
        n_batches, out_of_time, loader = 0, False, phase.loader
        progress = phase.config.progress
        bar = tqdm(loader, f"epoch {epoch}", leave=False, disable=not progress, unit="batch", mininterval=2)

        def update(name: str, loss: torch.Tensor) -> None:
            optimise(phase.optimizers[name], loss)

        for index, batch in enumerate(bar):
            elapsed = time.monotonic() - phase.started
            used = (phase.used_before + elapsed) / phase.total if math.isfinite(phase.total) else 0.0
            context = StepContext(phase.name, epoch, history.steps, index, len(loader), used, update)
            logs = detector.training_step(_to_device(batch, self.device), context)
            if detector.automatic_optimization:
                context.update(next(iter(phase.optimizers)), logs["loss"])  # type: ignore[arg-type]
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach() if isinstance(value, torch.Tensor) else value)
            n_batches, history.steps = n_batches + 1, history.steps + 1
            if time.monotonic() - phase.started > phase.budget:
                out_of_time = True
                break
        history.epochs.append({"epoch": epoch, **{key: value / max(n_batches, 1) for key, value in sums.items()}})
        return out_of_time

    def _save(
        self, path: Path, detector: TorchDetector, phase: _Phase, history: TrainingHistory, best_state: dict | None
    ) -> None:
        payload = {
            "identity": self._identity,
            "state": detector.training_state(),
            "optimizers": {name: opt.state_dict() for name, opt in phase.optimizers.items()},
            "history": history.to_dict(),
            "best_state": best_state,
            "generator": phase.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        save_checkpoint(payload, path)

    def _resume(self, path: Path, detector: TorchDetector, phase: _Phase, history: TrainingHistory) -> tuple[int, Any]:
        payload = load_checkpoint(path, self.device)
        check_identity(path, payload.get("identity"), self._identity)
        detector.load_training_state(payload["state"])
        for name, opt in phase.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        for key, value in payload["history"].items():
            setattr(history, key, value)
        phase.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        next_epoch = history.epochs[-1]["epoch"] + 1 if history.epochs else 0
        history.resumed_from_epoch = int(next_epoch)
        logger.info("resumed from %s at epoch %d", path, next_epoch)
        return int(next_epoch), payload["best_state"]


def _schedule_end(config: TrainConfig) -> str:
    """Why a phase that ran its whole schedule stopped."""
    if config.max_steps is not None:
        return f"max_steps={config.max_steps} reached ({config.max_epochs} epochs)"
    return f"max_epochs={config.max_epochs} reached"


def _merge(histories: dict[str, TrainingHistory]) -> TrainingHistory:
    """One history of several phases: epochs tagged with their phase, the last phase's best epoch and monitor."""
    if len(histories) == 1:
        return next(iter(histories.values()))
    last = list(histories.values())[-1]
    summaries = {name: {k: v for k, v in h.to_dict().items() if k != "epochs"} for name, h in histories.items()}
    return TrainingHistory(
        epochs=[{**epoch, "phase": name} for name, h in histories.items() for epoch in h.epochs],
        best_epoch=last.best_epoch,
        best_metric=last.best_metric,
        monitor=last.monitor,
        stopped_because="; ".join(f"{name}: {h.stopped_because}" for name, h in histories.items()),
        converged=all(h.converged for h in histories.values()),
        seconds=sum(h.seconds for h in histories.values()),
        steps=sum(h.steps for h in histories.values()),
        resumed_from_epoch=last.resumed_from_epoch,
        phases=summaries,
    )


def training_status(history: TrainingHistory | dict[str, Any] | None) -> dict[str, Any]:
    """``{"converged": bool, "stopped_because": str}`` of a detector's history (None: nothing iterative to stop).

    Histories saved before ``converged`` existed count as not converged when the time budget stopped them.
    """
    if history is None:
        return {"converged": True, "stopped_because": "fitted in one pass (no iterative training)"}
    record = history.to_dict() if isinstance(history, TrainingHistory) else history
    reason = str(record.get("stopped_because", ""))
    return {"converged": bool(record.get("converged", "time budget" not in reason)), "stopped_because": reason}


def _improved(metric: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``metric`` beats ``best`` by more than ``min_delta`` of ``|best|`` in the direction of ``mode``."""
    if math.isnan(metric):
        return False
    if math.isnan(best):
        return True
    margin = min_delta * abs(best)
    return metric < best - margin if mode == "min" else metric > best + margin


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch
