"""AnatPaste: anatomy-aware self-supervised anomaly detection (the CT poster's "anatomy-aware self-supervised" row).

Pretext task on normals only: a CNN learns to tell original images from copies with a patch pasted *inside the
organ* (a threshold-based lung/body mask decides where; :mod:`.organ_mask`, :mod:`.paste`), with binary
cross-entropy. Then a Gaussian (Ledoit-Wolf shrunk covariance) is fitted to the pooled features of the training
normals; an image's score is its Mahalanobis distance to it.

Anomaly map: the Mahalanobis distance of each position's local feature vector (a mid-level layer) to a second,
position-independent Gaussian of the normals' local features, upsampled and smoothed. Chosen over Grad-CAM of the
pretext head because it uses the same density reasoning as the score (normal variation is discounted the same way),
needs no gradients at scoring time, and does not depend on what the "pasted?" head happened to key on.

Sato et al., "AnatPaste: Anatomy-aware self-supervised learning for anomaly detection in chest radiographs",
iScience 2023, https://arxiv.org/abs/2205.04282; the density step follows CutPaste (Li et al., CVPR 2021).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medanomaly.detectors.anatpaste.network import AnatPasteNet, GaussianDensity
from medanomaly.detectors.anatpaste.organ_mask import get_organ_mask, organ_masks
from medanomaly.detectors.anatpaste.paste import PasteConfig, paste_patches
from medanomaly.detectors.torch_base import TorchDetector, split_dataset
from medanomaly.features.fast import build_runner, onnxruntime_available
from medanomaly.features.maps import smooth_maps
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.training.engine import Trainer
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_RUNTIMES = ("auto", "torch", "onnx")


@register("anatpaste")
class AnatPaste(TorchDetector):
    """Anatomy-aware CutPaste pretext training + Gaussian density of the learned features.

    Args:
        backbone: Backbone name (``efficientnet_lite0`` with offline ImageNet weights; ``tiny`` for tests).
        image_layer: Layer pooled into the "pasted?" head's input (None = the backbone's default, EfficientNet
            ``head``).
        density_layer: Layer pooled into the feature the image Gaussian models and the score comes from (None =
            ``image_layer``).
        map_layer: Layer of the local features behind the map (None = default, EfficientNet ``blocks.10``).
        backbone_weights: Path of a backbone state dict (None = the bundled pretrained weights).
        pretrained: Start from pretrained weights (False = random initialisation).
        trainable_from: First backbone layer that is fine-tuned, earlier ones frozen (None = a per-backbone default,
            EfficientNet ``blocks.8``; ``all`` = every layer).
        organ_mask: Where lesions are pasted: ``lung`` (chest X-ray), ``body`` (CT/MR slice), ``none`` or a name
            registered with :func:`~medanomaly.detectors.anatpaste.organ_mask.register_organ_mask`.
        area: (min, max) patch area as fractions of the image.
        aspect: Smallest patch aspect ratio (log-uniform in ``[aspect, 1 / aspect]``).
        alpha: (min, max) opacity of the pasted patch.
        intensity: Largest relative gain change of the patch.
        other_image: Probability of cutting the patch from another normal image of the batch.
        learning_rate: Adam learning rate of the backbone.
        head_learning_rate: Adam learning rate of the linear head.
        weight_decay: Adam weight decay.
        max_patch_vectors: Local feature vectors (drawn at random positions) the patch Gaussian is fitted on.
        map_sigma: Gaussian smoothing of the map, in pixels of a 224-pixel image (scaled with the input size).
        runtime: Scoring runtime of the fine-tuned network: ``auto`` (ONNX Runtime when installed, else torch),
            ``torch`` or ``onnx``; what ``auto`` chose at fit time is saved and used when the model is loaded.
        random_state: Seed of initialisation, pasting, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"backbone": "tiny", "learning_rate": 3e-3, "head_learning_rate": 1e-2,
                                             "map_sigma": 2.0, "runtime": "torch"}  # fmt: skip
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 6, "batch_size": 32}
    #: Epoch-bound schedule sized for a 2-core CPU at 224 px (docs/methods/anatpaste.md, "Cost on a CPU").
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 8, "batch_size": 16, "patience": 3}
    default_resolution: ClassVar[int | None] = 224

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        image_layer: str | None = None,
        density_layer: str | None = None,
        map_layer: str | None = None,
        backbone_weights: str | None = None,
        pretrained: bool = True,
        trainable_from: str | None = None,
        organ_mask: str = "lung",
        area: tuple[float, float] = (0.02, 0.15),
        aspect: float = 0.3,
        alpha: tuple[float, float] = (0.5, 1.0),
        intensity: float = 0.1,
        other_image: float = 0.5,
        learning_rate: float = 1e-4,
        head_learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        max_patch_vectors: int = 20000,
        map_sigma: float = 4.0,
        runtime: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.image_layer = image_layer
        self.density_layer = density_layer
        self.map_layer = map_layer
        self.backbone_weights = backbone_weights
        self.pretrained = pretrained
        self.trainable_from = trainable_from
        self.organ_mask = organ_mask
        self.area = area
        self.aspect = aspect
        self.alpha = alpha
        self.intensity = intensity
        self.other_image = other_image
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.max_patch_vectors = max_patch_vectors
        self.map_sigma = map_sigma
        self.runtime = runtime
        self.random_state = random_state

    @property
    def paste_config(self) -> PasteConfig:
        """The pasting settings of this detector."""
        return PasteConfig(area=tuple(self.area), aspect=float(self.aspect), alpha=tuple(self.alpha),
                           intensity=float(self.intensity), other_image=float(self.other_image))  # fmt: skip

    # --- building ---------------------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        get_organ_mask(self.organ_mask)  # fail early on an unknown name
        if input_shape[0] not in (1, 3):
            msg = f"anatpaste needs 1 or 3 channel images, got {input_shape[0]}"
            raise ValueError(msg)
        pretrained = bool(self.pretrained) and not fitted  # when restoring, the fine-tuned weights follow
        self.network_ = AnatPasteNet(self.backbone, self.image_layer, self.map_layer, pretrained, self.backbone_weights,
                                     self.trainable_from, self.density_layer)  # fmt: skip
        self.density_ = GaussianDensity(self.network_.density_channels, self.network_.map_channels)
        self.network_.eval()

    def modules(self) -> dict[str, nn.Module]:
        """The fine-tuned network and the fitted Gaussians."""
        return {"network": self.network_, "density": self.density_} if hasattr(self, "network_") else {}

    def trained_modules(self) -> dict[str, nn.Module]:
        """Only the network trains (the Gaussians are fitted afterwards)."""
        return {"network": self.network_}

    # --- fitting ----------------------------------------------------------------------------------------------
    def fit(
        self,
        normal: Tensor,
        *,
        mixed: Tensor | None = None,
        abnormal: Tensor | None = None,
        trainer: Trainer | None = None,
        **kwargs: Any,
    ) -> AnatPaste:
        """Train the pretext task on ``normal`` (N, C, H, W) in [0, 1], then fit the Gaussians on their features."""
        self._generator = torch.Generator().manual_seed(int(self.random_state or 0) + 4243)
        if self.runtime not in _RUNTIMES:
            msg = f"anatpaste: runtime must be one of {_RUNTIMES}, got {self.runtime!r}"
            raise ValueError(msg)
        super().fit(normal, trainer=trainer, **kwargs)
        self._fit_density(normal)
        use_onnx = self.runtime == "onnx" or (self.runtime == "auto" and onnxruntime_available())
        self.runtime_ = "onnx" if use_onnx else "torch"
        return self

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, history and the scoring runtime chosen at fit time."""
        return {**super().fitted_config(), "runtime": getattr(self, "runtime_", "torch")}

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> AnatPaste:
        """Rebuild and load; a model saved before the runtime was recorded scores with torch, as it did."""
        super().restore(fitted, state)
        self.runtime_ = fitted.get("runtime", "torch") if self.runtime == "auto" else self.runtime
        return self

    def make_datasets(
        self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None, val_fraction: float
    ) -> tuple[Dataset, Dataset | None]:
        """Normals with their organ masks; a seeded hold-out for validation."""
        masks = torch.from_numpy(organ_masks(normal.numpy(), self.organ_mask))
        logger.info("anatpaste: organ mask %r covers %.1f %% of the images on average", self.organ_mask,
                    100 * float(masks.float().mean()))  # fmt: skip
        return split_dataset(TensorDataset(normal, masks), val_fraction, int(self.random_state or 0))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam; the (pretrained) backbone learns slower than the new head."""
        groups = [
            {"params": [p for p in self.network_.backbone.parameters() if p.requires_grad], "lr": self.learning_rate},
            {"params": self.network_.head.parameters(), "lr": self.head_learning_rate},
        ]
        return {"adam": torch.optim.Adam(groups, weight_decay=self.weight_decay)}

    def _pretext(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(2B,) logits and (2B,) float labels of originals (0) and their pasted copies (1)."""
        pasted, _ = paste_patches(images, masks, generator, self.paste_config)
        labels = torch.cat([torch.zeros(len(images)), torch.ones(len(images))]).to(images.device)
        return self.network_(torch.cat([images, pasted])), labels

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor]:
        """Binary cross-entropy of original vs pasted; also logs the pretext accuracy."""
        logits, labels = self._pretext(batch[0], batch[1], self._generator)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def validation_metric(self, val_set: Dataset) -> float:
        """Mean pretext cross-entropy on the held-out normals, with the same pasted copies every epoch."""
        self.network_.eval()
        generator = torch.Generator().manual_seed(int(self.random_state or 0) + 17)
        total, count = 0.0, 0
        for images, masks in DataLoader(val_set, batch_size=32):
            logits, labels = self._pretext(images.to(self.device), masks, generator)
            total += float(F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"))
            count += len(labels)
        return total / max(count, 1)

    @torch.no_grad()
    def _fit_density(self, normal: Tensor, batch_size: int = 32) -> None:
        """Ledoit-Wolf Gaussians of the pooled and (a random subset of) local features of the normals."""
        self.network_.eval()
        generator = torch.Generator().manual_seed(int(self.random_state or 0) + 99)
        pooled, local = [], []
        per_image = None
        for start in range(0, len(normal), batch_size):
            batch = normal[start : start + batch_size].to(self.device)
            features, vectors = self.network_.features(batch, self.network_.density_layer)
            n, c, h, w = features.shape
            per_image = per_image or max(1, min(h * w, math.ceil(self.max_patch_vectors / len(normal))))
            flat = features.permute(0, 2, 3, 1).reshape(n, h * w, c).cpu()
            picks = torch.stack([torch.randperm(h * w, generator=generator)[:per_image] for _ in range(n)])
            local.append(torch.gather(flat, 1, picks[..., None].expand(-1, -1, c)).reshape(-1, c))
            pooled.append(vectors.cpu())
        _set_gaussian(self.density_.image_mean, self.density_.image_precision, torch.cat(pooled))
        _set_gaussian(self.density_.patch_mean, self.density_.patch_precision, torch.cat(local))

    # --- scoring ----------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        if getattr(self, "runtime_", "torch") == "onnx" and images.device.type == "cpu":
            local, pooled = self._onnx_features(images)
        else:
            local, pooled = self.network_.features(images, self.network_.density_layer)
        scores = self.density_.image_distance(pooled)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        sigma = float(self.map_sigma) * size[0] / 224
        maps = smooth_maps(self.density_.patch_distance(local), size, sigma=sigma)
        return Prediction(scores=scores, anomaly_maps=maps, extras={})


    def _onnx_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Local (map layer) and pooled (density layer) features through ONNX Runtime.

        The network is exported once per fine-tuned weights and input size and cached like the feature extractor's
        graphs.
        """
        if not onnxruntime_available():
            msg = "anatpaste: this model scores through ONNX Runtime: pip install 'medanomaly[fast]'"
            raise RuntimeError(msg)
        network = self.network_
        layers = list(dict.fromkeys([network.map_layer, network.density_layer]))
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        shape = (3, int(x.shape[-2]), int(x.shape[-1]))
        runners = self.__dict__.setdefault("_onnx_runners", {})
        if shape not in runners:
            key = f"anatpaste-{network.backbone.__class__.__name__}-{_weights_digest(network.backbone)}"
            runners[shape] = build_runner(network.backbone, layers, network.mean, network.std, shape, key)
        found = dict(zip(layers, runners[shape](x.contiguous()), strict=True))
        return found[network.map_layer], found[network.density_layer].mean(dim=(2, 3))


def _weights_digest(module: nn.Module) -> str:
    """A short hash of a module's weights and buffers: fine-tuned networks get their own exported graph."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _set_gaussian(mean: Tensor, precision: Tensor, samples: Tensor) -> None:
    """Fill ``mean`` (D,) and ``precision`` (D, D) from (M, D) samples with Ledoit-Wolf shrinkage."""
    if len(samples) < 2:
        msg = f"anatpaste: need at least 2 feature vectors to fit a Gaussian, got {len(samples)}"
        raise ValueError(msg)
    estimate = LedoitWolf(assume_centered=False).fit(samples.double().numpy())
    mean.copy_(torch.from_numpy(estimate.location_.astype(np.float32)))
    precision.copy_(torch.from_numpy(estimate.precision_.astype(np.float32)))
