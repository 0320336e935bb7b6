"""The part of the detector contract that the shared :class:`~medanomaly.training.Trainer` drives."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split

from medanomaly.detectors.base import BaseDetector, reject_options
from medanomaly.training.context import StepContext
from medanomaly.training.engine import TrainConfig, Trainer


class TorchDetector(BaseDetector):
    """A detector trained by gradient steps.

    Subclasses implement ``_build`` (create modules for an input shape), ``configure_optimizers``,
    ``training_step(batch, context)`` and ``validation_loss`` (or override ``validation_metric``), and
    ``_score_batch``. With ``automatic_optimization`` the trainer updates the single optimiser on
    ``training_step``'s ``"loss"``; GANs set it to False and ask for their updates by optimiser name with
    ``context.update(name, loss)`` (the Trainer does zero_grad / backward / step). Methods trained in several phases
    list them in ``phases`` and switch in :meth:`start_phase`; :meth:`phase_config` adapts a phase's settings.
    """

    automatic_optimization: ClassVar[bool] = True
    phases: ClassVar[tuple[str, ...]] = ("train",)
    monitor: ClassVar[str] = "val_loss"
    monitor_mode: ClassVar[str] = "min"
    random_state: int | None = 0

    def fit(
        self,
        normal: Tensor,
        *,
        mixed: Tensor | None = None,
        abnormal: Tensor | None = None,
        trainer: Trainer | None = None,
        warm_start: bool = False,
        **options: Any,
    ) -> Self:
        """Build the networks for ``normal``'s shape and train them with ``trainer`` (default settings if None).

        With ``warm_start`` a fitted detector keeps its networks and weights and trains on from them (fine-tuning,
        e.g. on feedback; fresh optimisers); the input shape must be the one it was fitted on. Unknown keyword
        options raise TypeError (see :meth:`BaseDetector.fit`).
        """
        reject_options(self, options)
        trainer = trainer or Trainer()
        self._validate_training_data(normal, mixed, abnormal)
        shape = tuple(int(size) for size in normal.shape[1:])
        if warm_start:
            self.check_is_fitted()
            self._check_input(normal)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.random_state or 0))
            if not warm_start:
                self.input_shape_ = shape
                self._build(self.input_shape_, {})
            self._start_fit(normal, trainer.config)
            train_set, val_set = self.make_datasets(normal, mixed, abnormal, trainer.config.val_fraction)
            self.history_ = trainer.fit(self, train_set, val_set)
            self._end_fit()
        self.to("cpu" if trainer.device.type == "cpu" else trainer.device)
        return self

    def _start_fit(self, normal: Tensor, config: TrainConfig) -> None:
        """Set up training-only state once the modules are built (random generators, schedules); default none."""

    def _end_fit(self) -> None:
        """Finish after training (fit what follows the networks, check what training reached); default nothing."""

    def _validate_training_data(self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None) -> None:
        given = {"normal": normal, "mixed": mixed, "abnormal": abnormal}
        for name in self.needs:
            data = given[name]
            if data is None or len(data) == 0:
                msg = f"{self.name} needs {name} training images, none were given"
                raise ValueError(msg)
            if data.ndim != 4:
                msg = f"{self.name}: {name} images must be (N, C, H, W), got {tuple(data.shape)}"
                raise ValueError(msg)

    def make_datasets(
        self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None, val_fraction: float
    ) -> tuple[Dataset, Dataset | None]:
        """Training and validation sets; by default normals only, a seeded random hold-out for validation."""
        return split_dataset(TensorDataset(normal), val_fraction, int(self.random_state or 0))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers of the current phase (one for automatic optimisation)."""
        raise NotImplementedError

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor | float]:
        """One step on a batch; returns named losses (``"loss"`` is the trainer's update when automatic)."""
        raise NotImplementedError

    def start_phase(self, phase: str) -> None:
        """Switch to training phase ``phase`` (one of :attr:`phases`); default nothing to switch."""

    def phase_config(self, phase: str, config: TrainConfig) -> TrainConfig:
        """The training settings of ``phase`` (default: ``config`` unchanged)."""
        return config

    def epoch_metric(self, val_set: Dataset | None, logs: dict[str, float]) -> float:
        """The monitored value after an epoch: :meth:`validation_metric`, or the epoch's mean ``loss`` without one."""
        return self.validation_metric(val_set) if val_set is not None else logs["loss"]

    def validation_loss(self, batch: Any) -> Tensor:
        """(B,) or scalar validation loss of a batch (lower is better)."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_metric(self, val_set: Dataset) -> float:
        """Mean validation loss over ``val_set`` (override for other metrics, e.g. a pseudo-AUC)."""
        for module in self.modules().values():
            module.eval()
        total, count = 0.0, 0
        for batch in DataLoader(val_set, batch_size=64):
            batch = [item.to(self.device) for item in batch]
            loss = self.validation_loss(batch)
            total += float(loss.sum()) if loss.ndim else float(loss) * len(batch[0])
            count += len(batch[0])
        return total / max(count, 1)

    def training_state(self) -> dict[str, dict[str, Tensor]]:
        """What checkpoints and best-epoch snapshots keep.

        The trained modules' weights as nested state dicts, and the state of the method's own random generator
        ``_generator`` (augmentation, sampling) when it has one, so that a resumed run draws what an uninterrupted
        one would.
        """
        state = {name: module.state_dict() for name, module in self.trained_modules().items()}
        generator = getattr(self, "_generator", None)
        if isinstance(generator, torch.Generator):
            state["rng"] = {"generator": generator.get_state()}
        return state

    def load_training_state(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Inverse of :meth:`training_state` (a state without ``rng`` leaves the generator as it is)."""
        for name, module in self.trained_modules().items():
            module.load_state_dict(state[name])
        generator = getattr(self, "_generator", None)
        if "rng" in state and isinstance(generator, torch.Generator):
            generator.set_state(state["rng"]["generator"])

    def trained_modules(self) -> dict[str, nn.Module]:
        """The modules the trainer updates (default: all of :meth:`modules`)."""
        return self.modules()

    def fitted_config(self) -> dict[str, Any]:
        """Input shape plus the training history and the fit's ``warnings_`` (what training found wrong)."""
        config = super().fitted_config()
        history = getattr(self, "history_", None)
        if history is not None:
            config["history"] = history.to_dict() if hasattr(history, "to_dict") else history
        config["warnings"] = list(getattr(self, "warnings_", []))
        return config

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> Self:
        """Rebuild, load weights and keep the saved history and warnings."""
        super().restore(fitted, state)
        self.history_ = fitted.get("history")
        self.warnings_ = list(fitted.get("warnings", []))
        return self


def split_dataset(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Seeded random split into (train, validation); no validation when the fraction or the set is too small."""
    n_val = int(round(len(dataset) * val_fraction))
    if n_val < 1 or len(dataset) - n_val < 1:
        return dataset, None
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
    return train, val
