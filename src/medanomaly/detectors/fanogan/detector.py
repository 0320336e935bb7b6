"""f-AnoGAN: a WGAN-GP of normal images plus an encoder that maps images into its latent space.

Schlegl et al., "f-AnoGAN: Fast unsupervised anomaly detection with generative adversarial networks", Medical Image
Analysis 54 (2019), https://doi.org/10.1016/j.media.2019.01.010.

Training has two phases, both run by the shared :class:`~medanomaly.training.Trainer`:

1. ``gan``: generator and critic, WGAN-GP (lambda_gp = 10, n_critic = 5: the generator steps once per five critic
   steps, counted in a saved buffer so resuming keeps the rhythm). Its schedule is counted in generator steps
   (``gan_steps``), as WGAN-GP training is, not in epochs: a small data set gets more epochs, a large one fewer. No
   label-free measure reliably ranks GAN epochs (the critic's Wasserstein estimate starts near 0 while the critic is
   untrained), so this phase keeps its last epoch, as the paper does: the monitored value is the count of generator
   steps.
2. ``encoder``: G and D frozen, the encoder learns izi_f (image MSE + kappa * critic-feature MSE of G(E(x))).
   Early stopping and the best epoch use izi_f on held-out normals.

The Trainer keeps one checkpoint per phase (``<checkpoint_dir>/gan/``, ``<checkpoint_dir>/encoder/``); once the
encoder phase has one, a resumed run does not train the GAN further. ``--max-minutes`` is shared: the GAN phase gets
``gan_time_share`` of it, the encoder the rest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medanomaly.detectors.fanogan.network import FanoganNet, critic_loss, izif_residual
from medanomaly.detectors.gan_blocks import StepCounter, adam, check_square, residual_map, set_trainable, stage_plan
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.training.engine import TrainConfig
from medanomaly.types import Prediction

PHASES = ("gan", "encoder")


@register("fanogan")
class Fanogan(TorchDetector):
    """f-AnoGAN with the izi_f encoder; score = izi_f residual, map = |x - G(E(x))|.

    Args:
        width: Channels of the first critic / encoder stage (the last generator stage); doubled per stage.
        latent_dim: Size of z (128 in the paper).
        n_critic: Critic steps per generator step (5, WGAN-GP).
        gp_weight: Gradient-penalty weight lambda_gp (10, WGAN-GP).
        kappa: Weight of the critic-feature residual in izi_f, for training and scoring (1 in the paper).
        learning_rate: Adam learning rate of generator and critic (betas 0, 0.9 as in WGAN-GP). 1e-3, ten times
            WGAN-GP's, so that a few CPU minutes give a usable generator (see docs/methods/fanogan.md).
        encoder_learning_rate: Adam learning rate of the encoder (betas 0.9, 0.999); the authors used 5e-5 over
            50 000 iterations.
        gan_steps: Generator steps of the GAN phase (each follows ``n_critic`` critic steps); the phase runs as many
            epochs as that takes. None = the GAN phase runs ``max_epochs`` epochs like the encoder phase.
        gan_time_share: Share of ``--max-minutes`` given to the GAN phase; the encoder gets what is left.
        random_state: Seed of initialisation, latent draws, shuffling and the validation split.
    """

    automatic_optimization: ClassVar[bool] = False
    phases: ClassVar[tuple[str, ...]] = PHASES
    #: One critic step per generator step: five would leave ~15 generator steps in the tiny budget.
    tiny_params: ClassVar[dict[str, Any]] = {"width": 16, "latent_dim": 32, "n_critic": 1, "gan_steps": None}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 8, "batch_size": 16}
    #: The size its networks are built for on a CPU (docs/methods/fanogan.md); 128 px costs about 4x per step.
    default_resolution: ClassVar[int | None] = 64

    def __init__(
        self,
        width: int = 32,
        latent_dim: int = 128,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        kappa: float = 1.0,
        learning_rate: float = 1e-3,
        encoder_learning_rate: float = 1e-3,
        gan_steps: int | None = 2000,
        gan_time_share: float = 0.7,
        random_state: int | None = 0,
    ) -> None:
        self.width = width
        self.latent_dim = latent_dim
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.kappa = kappa
        self.learning_rate = learning_rate
        self.encoder_learning_rate = encoder_learning_rate
        self.gan_steps = gan_steps
        self.gan_time_share = gan_time_share
        self.random_state = random_state

    # --- the two monitored quantities (one per phase) -----------------------------------------------------------
    @property
    def monitor(self) -> str:  # type: ignore[override]
        """``generator_steps`` while training the GAN, ``val_izif`` while training the encoder."""
        return "generator_steps" if getattr(self, "phase_", "encoder") == "gan" else "val_izif"

    @property
    def monitor_mode(self) -> str:  # type: ignore[override]
        """``max`` (keep the last GAN epoch), then ``min`` (lowest held-out izi_f)."""
        return "max" if getattr(self, "phase_", "encoder") == "gan" else "min"

    # --- building and fitting -------------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        channels, side = check_square(self.name, input_shape)
        stage_plan(side, self.width, owner=self.name)
        if (
            self.n_critic < 1
            or not 0.0 < self.gan_time_share < 1.0
            or (self.gan_steps is not None and self.gan_steps < 1)
        ):
            msg = (
                "fanogan: need n_critic >= 1, 0 < gan_time_share < 1 and gan_steps >= 1 (or None), got "
                f"{self.n_critic}, {self.gan_time_share}, {self.gan_steps}"
            )
            raise ValueError(msg)
        self.network_ = FanoganNet(channels, side, self.width, self.latent_dim)
        self.counter_ = StepCounter("critic_steps", "generator_steps")
        self.phase_ = "gan"

    def modules(self) -> dict[str, nn.Module]:
        """Generator, critic and encoder (one module) and the step counters."""
        return {"network": self.network_, "counter": self.counter_} if hasattr(self, "network_") else {}

    def phase_config(self, phase: str, config: TrainConfig) -> TrainConfig:
        """The GAN phase: ``gan_steps`` generator steps, no early stopping, ``gan_time_share`` of the time budget."""
        if phase != "gan":
            return config
        minutes = None if config.max_minutes is None else self.gan_time_share * config.max_minutes
        steps = None if self.gan_steps is None else self.gan_steps * self.n_critic
        return replace(config, patience=None, max_minutes=minutes, max_steps=steps)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Generator and critic Adams (GAN phase) or the encoder's Adam (encoder phase)."""
        net = self.network_
        if self.phase_ == "gan":
            return {
                "generator": adam(net.generator, self.learning_rate, (0.0, 0.9)),
                "critic": adam(net.critic, self.learning_rate, (0.0, 0.9)),
            }
        return {"encoder": adam(net.encoder, self.encoder_learning_rate, (0.9, 0.999))}

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor | float]:
        """One critic step (plus a generator step every ``n_critic``), or one encoder step."""
        if self.phase_ == "gan":
            return self._gan_step(batch[0], context)
        return self._encoder_step(batch[0], context)

    def _gan_step(self, real: Tensor, context: StepContext) -> dict[str, Tensor | float]:
        net = self.network_
        fake = net.generator(net.sample_latent(len(real)))
        loss, wasserstein = critic_loss(net.critic, real, fake, self.gp_weight)
        context.update("critic", loss)
        logs: dict[str, Tensor | float] = {"critic_loss": loss.detach(), "wasserstein": wasserstein}
        if self.counter_.increment("critic_steps") % self.n_critic == 0:
            set_trainable(net.critic, False)
            generator_loss = -net.critic(net.generator(net.sample_latent(len(real)))).mean()
            context.update("generator", generator_loss)
            set_trainable(net.critic, True)
            self.counter_.increment("generator_steps")
            logs["generator_loss"] = generator_loss.detach()
        return logs

    def _encoder_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor | float]:
        net = self.network_
        net.generator.eval()  # frozen: batch-norm statistics must not move
        net.critic.eval()
        residual, _ = izif_residual(net, images, self.kappa)
        loss = residual.mean()
        context.update("encoder", loss)
        return {"loss": loss.detach()}

    def start_phase(self, phase: str) -> None:
        """Switch to ``phase`` (``gan`` or ``encoder``); G and D are frozen for the encoder phase."""
        self.phase_ = phase
        frozen = phase == "encoder"
        set_trainable(self.network_.generator, not frozen)
        set_trainable(self.network_.critic, not frozen)

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image izi_f residual of held-out normals (encoder phase)."""
        return izif_residual(self.network_, batch[0], self.kappa)[0]

    def epoch_metric(self, val_set: Dataset | None, logs: dict[str, float]) -> float:
        """Generator steps so far (GAN phase: the last epoch is kept) or mean held-out izi_f (encoder phase)."""
        if self.phase_ == "gan":
            return float(self.counter_.value("generator_steps"))
        return super().epoch_metric(val_set, logs)

    # --- scoring -----------------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        scores, reconstruction = izif_residual(self.network_, images, self.kappa)
        maps = residual_map(images, reconstruction)
        return Prediction(scores=scores, anomaly_maps=maps, extras={"reconstruction": reconstruction})
