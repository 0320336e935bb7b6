"""What the weight-averaged GAN baselines (``ganomaly``, ``alad``, ``alocc``) share, written once.

Each of them builds one network holding all its players for a square input (:mod:`.gan_blocks`), keeps a moving
average of its weights (:class:`~medanomaly.detectors.gan_blocks.WeightAverage`, updated after every training step)
and scores with that average. The method itself only says which network, which updates one batch makes (through
:meth:`~medanomaly.training.StepContext.update`, so the Trainer does zero_grad / backward / step) and how it scores.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from medanomaly.detectors.gan_blocks import WeightAverage, check_square, stage_plan
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.training.context import StepContext


class AveragedGan(TorchDetector):
    """A GAN baseline scored with the moving average of its weights.

    Subclasses have ``width`` and ``ema_decay`` hyper-parameters and implement :meth:`_network`,
    :meth:`adversarial_step` and ``_score_batch`` (from :meth:`averaged`); :meth:`_check_hyperparameters` validates
    their own ones. Early stopping monitors a label-free reconstruction error of held-out normals.
    """

    automatic_optimization: ClassVar[bool] = False
    monitor: ClassVar[str] = "val_reconstruction"
    #: The size the DCGAN networks are built for on a CPU (docs/methods/); 128 px costs about 4x per step.
    default_resolution: ClassVar[int | None] = 64
    width: int
    ema_decay: float

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        self._check_hyperparameters()
        channels, side = check_square(self.name, input_shape)
        stage_plan(side, self.width, owner=self.name)
        if not 0.0 <= self.ema_decay < 1.0:
            msg = f"{self.name}: ema_decay must be in [0, 1), got {self.ema_decay}"
            raise ValueError(msg)
        self.network_ = self._network(channels, side)
        self.average_ = WeightAverage(self.network_)

    def _check_hyperparameters(self) -> None:
        """ValueError for invalid method-specific hyper-parameters (default: none to check)."""

    def _network(self, channels: int, side: int) -> nn.Module:
        """The trained players, as one module, for (channels, side, side) inputs."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """The trained networks (one module) and their moving average (used for scoring)."""
        return {"network": self.network_, "average": self.average_} if hasattr(self, "network_") else {}

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor | float]:
        """The method's updates on one batch of normals, then the moving average follows the new weights."""
        logs = self.adversarial_step(batch[0], context)
        self.average_.update(self.network_, self.ema_decay)
        return logs

    def adversarial_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor | float]:
        """Update the players on (B, C, R, R) normals; return logs whose ``loss`` twins the validation metric."""
        raise NotImplementedError

    def averaged(self, images: Tensor) -> tuple[nn.Module, Tensor]:
        """The moving-average network in eval mode and ``images`` on its device, for scoring."""
        self.average_.eval()
        return self.average_.network, images.to(self.device)
