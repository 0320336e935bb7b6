"""What the Trainer hands to a method: the context of each step, and the run settings of methods that do not train.

:class:`StepContext` is the torch methods' side of the training contract (PyTorch Lightning's ``manual_backward`` /
``optimizer.step`` pair, much smaller): a step reads where the run stands and asks the Trainer for optimiser updates
by name, so no method writes the zero_grad / backward / step sequence itself. :class:`RunConfig` is the plain
configuration a method without gradient steps (PatchCore, PaDiM, Firefly-SVM) receives instead of a Trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from medanomaly.training.device import select_device


@dataclass(frozen=True)
class StepContext:
    """Where a training step stands, given by the Trainer to ``training_step``.

    Attributes:
        phase: Training phase (``"train"`` for one-phase methods; f-AnoGAN: ``"gan"``, then ``"encoder"``).
        epoch: Epoch within the phase, from 0.
        step: Steps (batches) of the phase done before this one, over all its epochs; resuming keeps the count.
        batch: Index of this batch in its epoch.
        n_batches: Batches per epoch.
        budget_used: Share of the wall-clock budget used so far (0 without ``max_minutes``).
    """

    phase: str
    epoch: int
    step: int
    batch: int
    n_batches: int
    budget_used: float = 0.0
    _update: Callable[[str, Tensor], None] | None = field(default=None, repr=False, compare=False)

    @property
    def epochs_done(self) -> float:
        """Epochs of the phase completed before this step, fractional (``epoch + batch / n_batches``)."""
        return self.epoch + self.batch / max(self.n_batches, 1)

    @classmethod
    def for_optimizers(
        cls, optimizers: dict[str, torch.optim.Optimizer], phase: str = "train", step: int = 0
    ) -> StepContext:
        """A context outside the Trainer (tests, notebooks) whose updates step ``optimizers``."""
        return cls(phase, 0, step, 0, 1, 0.0, lambda name, loss: optimise(optimizers[name], loss))

    def update(self, optimizer: str, loss: Tensor) -> None:
        """One step of the optimiser named ``optimizer`` (see ``configure_optimizers``) on the scalar ``loss``."""
        if self._update is None:
            msg = "this StepContext has no optimisers: only the Trainer's contexts can update"
            raise RuntimeError(msg)
        self._update(optimizer, loss)


def optimise(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """Zero the gradients of ``optimizer``'s parameters, back-propagate ``loss`` and step (the one place it is done)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@dataclass(frozen=True)
class RunConfig:
    """The settings a method without gradient steps uses (feature extraction, a search), taken from the CLI's.

    Attributes:
        batch_size: Images per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        progress: Show progress bars.
        max_minutes: Wall-clock safety net of a search (None = no limit).
    """

    batch_size: int = 32
    device: str = "auto"
    progress: bool = True
    max_minutes: float | None = None

    @property
    def torch_device(self) -> torch.device:
        """The resolved device."""
        return select_device(self.device)
