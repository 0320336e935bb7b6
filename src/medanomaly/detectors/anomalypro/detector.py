"""AnomalyPro: one-way image-to-image translation with a mask, from a mixed unlabelled set to healthy images.

Brainomaly-style (Siddiquee et al., "Brainomaly: Unsupervised neurologic disease detection utilizing unannotated
T1-weighted brain MR images", WACV 2023, https://arxiv.org/abs/2302.09759). Two training sets: A, mixed and
unlabelled (its labels are never read), and B, healthy. A generator translates any image towards B by predicting a
healthy intermediate image and a mask (``x' = M * B_int + (1 - M) * x``); a PatchGAN critic with the Wasserstein
loss and gradient penalty judges translated A against real B. Healthy images need no change, so what the generator
changes (|x - x'|) is the anomaly map, its mean the score (the source found the mean more reliable than the max).

Model selection needs no labels: at each validation the pseudo-AUC, the AUROC of held-out B (label 0) against held-out
A (label 1), is computed, and the Trainer keeps the checkpoint that maximises it. A holds normals too, so the
pseudo-AUC stays below 1; it ranks checkpoints, it is not an accuracy.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medanomaly.detectors.anomalypro.critic import PatchCriticNet
from medanomaly.detectors.anomalypro.generator import MaskGeneratorNet, absolute_difference, check_resolution
from medanomaly.detectors.anomalypro.loss import LossWeights, focus_loss, gradient_penalty, l1
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.training.engine import TrainConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_SCORE_MODES = ("mean", "max")
_MIN_HELD_OUT = 2


class PairDataset(Dataset):
    """(a, b) pairs: A and B cycled to the longer one's length; the loader's shuffling varies the pairs."""

    def __init__(self, a: Tensor, b: Tensor):
        self.a, self.b = a, b

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.a[index % len(self.a)], self.b[index % len(self.b)]


@register("anomalypro")
class AnomalyPro(TorchDetector):
    """Masked one-way translation GAN (A mixed -> B healthy); score = mean |x - x'|.

    Args:
        width: Generator channels after the stem (16 fits a 2-core CPU at 64 px; 64 as in the source on a GPU).
        n_down: Generator down-sampling stages.
        n_res: Generator residual blocks (the source uses 6).
        critic_width: Critic channels of its first layer.
        critic_layers: Critic stride-2 layers (3: 8x8 patches at 64 px).
        n_critic: Critic updates per generator update (one critic update per batch, the generator on every
            ``n_critic``-th batch).
        learning_rate: Adam learning rate of the generator (betas 0.5, 0.999 as in WGAN-GP practice).
        critic_learning_rate: Adam learning rate of the critic (None = ``learning_rate``, as in the source).
        lambda_adv: Weight of the adversarial term (translated A judged as real B).
        lambda_id: Weight of the identity term |G(b) - b| (10: a healthy image must not change; this is what keeps
            the maps of normals near zero).
        lambda_rec: Weight of the reconstruction term |G(a) - a| (10: change A only where the critic objects; the
            adversarial gradient has unit norm per image while an L1 mean spreads over all pixels, so the L1 terms
            need weights of this order to matter).
        lambda_focus: Weight of the focus term on the masks (0.5: masks decide per pixel and stay sparse).
        mask_sparsity: Share of ``mean(M)`` in the focus term (0.5: "off" is preferred over "on").
        lambda_gp: Gradient-penalty weight (10, Gulrajani et al.).
        score_mode: ``mean`` (default, the source's choice) or ``max`` of |x - x'|.
        random_state: Seed of initialisation, split, shuffling and interpolation weights.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"normal", "mixed"})
    automatic_optimization: ClassVar[bool] = False
    monitor: ClassVar[str] = "pseudo_auc"
    monitor_mode: ClassVar[str] = "max"
    tiny_params: ClassVar[dict[str, Any]] = {
        "width": 8, "n_res": 2, "critic_width": 16, "critic_layers": 2, "learning_rate": 1e-3,
    }  # fmt: skip
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 4, "batch_size": 16}
    #: The size its networks are built for on a CPU (docs/methods/anomalypro.md); 128 px costs about 4x per step.
    default_resolution: ClassVar[int | None] = 64

    def __init__(
        self,
        width: int = 16,
        n_down: int = 2,
        n_res: int = 4,
        critic_width: int = 32,
        critic_layers: int = 3,
        n_critic: int = 2,
        learning_rate: float = 1e-4,
        critic_learning_rate: float | None = None,
        lambda_adv: float = 1.0,
        lambda_id: float = 10.0,
        lambda_rec: float = 10.0,
        lambda_focus: float = 0.5,
        mask_sparsity: float = 0.5,
        lambda_gp: float = 10.0,
        score_mode: str = "mean",
        random_state: int | None = 0,
    ) -> None:
        self._store_params(locals())

    # --- building ---------------------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        if self.score_mode not in _SCORE_MODES:
            msg = f"anomalypro: score_mode must be one of {_SCORE_MODES}, got {self.score_mode!r}"
            raise ValueError(msg)
        if self.n_critic < 1:
            msg = f"anomalypro: n_critic must be at least 1, got {self.n_critic}"
            raise ValueError(msg)
        channels, height, width = input_shape
        check_resolution(min(height, width), self.n_down)
        self.generator_ = MaskGeneratorNet(channels, self.width, self.n_down, self.n_res)
        self.critic_ = PatchCriticNet(channels, self.critic_width, self.critic_layers)

    def modules(self) -> dict[str, nn.Module]:
        """Generator and critic (the critic is kept so training can resume; scoring uses the generator only)."""
        return {"generator": self.generator_, "critic": self.critic_} if hasattr(self, "generator_") else {}

    def _start_fit(self, normal: Tensor, config: TrainConfig) -> None:
        """The method's own generator (hold-out, gradient-penalty interpolation) and its loss weights."""
        self._generator = torch.Generator().manual_seed(int(self.random_state or 0) + 104729)
        self._weights = self._loss_weights()
        self._generator_logs: dict[str, Tensor] = {}

    def _loss_weights(self) -> LossWeights:
        return LossWeights(
            self.lambda_adv, self.lambda_id, self.lambda_rec, self.lambda_focus, self.mask_sparsity, self.lambda_gp
        )

    def make_datasets(
        self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None, val_fraction: float
    ) -> tuple[Dataset, Dataset | None]:
        """(a, b) training pairs, and held-out A (label 1) + B (label 0) for the pseudo-AUC.

        At least two images of each set are held out whatever ``val_fraction`` is: the checkpoint choice depends on
        it.
        """
        a_train, a_val = self._hold_out(mixed, val_fraction, "mixed (A)")
        b_train, b_val = self._hold_out(normal, val_fraction, "normal (B)")
        labels = torch.cat([torch.zeros(len(b_val)), torch.ones(len(a_val))]).long()
        logger.info("anomalypro: A %d + %d held out, B %d + %d", len(a_train), len(a_val), len(b_train), len(b_val))
        return PairDataset(a_train, b_train), TensorDataset(torch.cat([b_val, a_val]), labels)

    def _hold_out(self, images: Tensor, fraction: float, what: str) -> tuple[Tensor, Tensor]:
        n_out = max(_MIN_HELD_OUT, int(round(len(images) * fraction)))
        if len(images) - n_out < 2:
            msg = f"anomalypro needs at least {n_out + 2} {what} images (training + pseudo-AUC), got {len(images)}"
            raise ValueError(msg)
        order = torch.randperm(len(images), generator=self._generator)
        return images[order[n_out:]], images[order[:n_out]]

    # --- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for the critic and for the generator."""
        betas = (0.5, 0.999)
        critic_lr = self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate
        return {
            "critic": torch.optim.Adam(self.critic_.parameters(), lr=critic_lr, betas=betas),
            "generator": torch.optim.Adam(self.generator_.parameters(), lr=self.learning_rate, betas=betas),
        }

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor]:
        """One critic update per batch; every ``n_critic``-th step (counted by the Trainer) also a generator update.

        The generator's losses of its latest update are repeated on critic-only steps, so epoch means stay fair.
        """
        a, b = batch
        logs = self._critic_step(a, b, context)
        if (context.step + 1) % self.n_critic == 0 or not self._generator_logs:
            self._generator_logs = self._generator_step(a, b, context)
        return {**logs, **self._generator_logs}

    def _critic_step(self, a: Tensor, b: Tensor, context: StepContext) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.generator_(a)[0]
        real_value = self.critic_.image_values(b).mean()
        fake_value = self.critic_.image_values(fake).mean()
        penalty = gradient_penalty(self.critic_, b, fake, self._generator)
        loss = fake_value - real_value + self._weights.gradient_penalty * penalty
        context.update("critic", loss)
        return {"critic": loss.detach(), "wasserstein": (real_value - fake_value).detach(), "gp": penalty.detach()}

    def _generator_step(self, a: Tensor, b: Tensor, context: StepContext) -> dict[str, Tensor]:
        weights = self._weights
        translated_a, _, mask_a = self.generator_(a)
        translated_b, _, mask_b = self.generator_(b)
        adversarial = -self.critic_.image_values(translated_a).mean()
        identity = l1(translated_b, b)
        reconstruction = l1(translated_a, a)
        focus = focus_loss(torch.cat([mask_a, mask_b]), weights.sparsity)
        loss = (
            weights.adversarial * adversarial
            + weights.identity * identity
            + weights.reconstruction * reconstruction
            + weights.focus * focus
        )
        context.update("generator", loss)
        logs = {"adversarial": adversarial, "identity": identity, "reconstruction": reconstruction, "focus": focus}
        return {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}, "mask_mean": mask_a.mean().detach()}

    @torch.no_grad()
    def validation_metric(self, val_set: Dataset) -> float:
        """Pseudo-AUC: AUROC of the scores of held-out A (1) against held-out B (0); uses no pathology label."""
        self.generator_.eval()
        scores, labels = [], []
        for images, domain in DataLoader(val_set, batch_size=64):
            scores.append(self._score_batch(images).scores.cpu())
            labels.append(domain)
        return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))

    # --- scoring ----------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        self.generator_.eval()
        images = images.to(self.device)
        translated, _, mask = self.generator_(images)
        maps = absolute_difference(images, translated)
        scores = maps.flatten(1).mean(dim=1) if self.score_mode == "mean" else maps.flatten(1).amax(dim=1)
        return Prediction(scores=scores, anomaly_maps=maps, extras={"mask": mask[:, 0], "translation": translated})
