"""Supervised CNN classifier with a confidence (the chest X-ray source document's method).

Trained on labelled normal and abnormal images with cross-entropy; the score is the softmax probability of the
abnormal class, P(abnormal) in [0, 1], so the CLI prints ``CLASS: 97.12%``. By default the ImageNet-pretrained
EfficientNet-Lite0 of :mod:`medanomaly.features` is fine-tuned (early stages frozen, the rest at a tenth of the
head's learning rate): a few hundred labelled images are too few to learn a CNN from scratch. Class imbalance is
handled by class weights in the loss (default) or by oversampling the minority class; augmentation (flips, small
rotations, shifts and zoom, contrast and brightness) is seeded; the validation split is stratified with a floor
(:mod:`~medanomaly.detectors.classifier.validation`) and early stopping watches the class-balanced validation loss.
The fitted model is checked on that split and warns (``warnings_``, saved in model.json) when it calls nearly every
image the same class. The anomaly map is Grad-CAM of the abnormal class on the last convolutional layer, scaled by
the probability, so the UI can show where the network looked.
Reference for the family: Kermany et al., "Identifying medical diagnoses and treatable diseases by image-based deep
learning", Cell 2018, https://doi.org/10.1016/j.cell.2018.02.010.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from medanomaly.detectors.classifier.augment import RandomAugment
from medanomaly.detectors.classifier.gradcam import grad_cam, normalized_cam
from medanomaly.detectors.classifier.network import BackboneClassifierNet, ClassifierNet, PretrainedFeatures
from medanomaly.detectors.classifier.validation import collapse_report, collapse_warning, stratified_split
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.features import FeatureExtractor
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.training.engine import Trainer
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_BALANCE = ("weights", "oversample", "none")


@register("cnn_classifier")
class CnnClassifier(TorchDetector):
    """Binary CNN classifier: normal (0) vs abnormal (1), score = P(abnormal).

    Args:
        backbone: ``efficientnet_lite0`` (default: fine-tune the ImageNet-pretrained extractor of
            :mod:`medanomaly.features`, weights read from the installed package), another backbone name of
            :func:`medanomaly.features.available_backbones` (``tiny``: random, for tests), or ``scratch`` (a small
            CNN trained from random weights, for research: it needs thousands of images).
        width: Channels of the first stage of the scratch CNN.
        depth: Stages of the scratch CNN (the last conv map is ``R / 2 ** (depth - 1)`` wide).
        backbone_layer: Extractor output feeding the head (None = its deepest).
        backbone_weights: Path of a state_dict for the backbone (None = the packaged pretrained weights).
        frozen_through: Last backbone layer kept frozen (default ``blocks.4``: EfficientNet-Lite0's stem and first
            three stages, up to stride 8); None fine-tunes every layer.
        dropout: Dropout before the linear layer.
        learning_rate: Adam learning rate (the pretrained backbone gets a tenth of it).
        weight_decay: Adam weight decay.
        balance: ``weights`` (inverse-frequency class weights in the loss), ``oversample`` (repeat minority images
            in the training set, a deterministic stand-in for a weighted sampler) or ``none``.
        augment: Apply the random augmentation during training.
        flip: Probability of a left-right flip.
        rotation: Largest rotation, degrees.
        shift: Largest translation, fraction of the side.
        contrast: Largest relative contrast change.
        val_min_fraction: Floor of the validation share of each class (the trainer's ``val_fraction`` if larger).
        val_min_per_class: Floor of validation images per class (at most half of a class).
        random_state: Seed of initialisation, split, shuffling and augmentation.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"normal", "abnormal"})
    kind: ClassVar[str] = "classification"
    tiny_params: ClassVar[dict[str, Any]] = {"backbone": "scratch", "width": 8, "depth": 3, "learning_rate": 3e-3}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 10, "batch_size": 32}

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        width: int = 16,
        depth: int = 4,
        backbone_layer: str | None = None,
        backbone_weights: str | None = None,
        frozen_through: str | None = "blocks.4",
        dropout: float = 0.2,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        balance: str = "weights",
        augment: bool = True,
        flip: float = 0.5,
        rotation: float = 10.0,
        shift: float = 0.08,
        contrast: float = 0.2,
        val_min_fraction: float = 0.2,
        val_min_per_class: int = 10,
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.width = width
        self.depth = depth
        self.backbone_layer = backbone_layer
        self.backbone_weights = backbone_weights
        self.frozen_through = frozen_through
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.balance = balance
        self.augment = augment
        self.flip = flip
        self.rotation = rotation
        self.shift = shift
        self.contrast = contrast
        self.val_min_fraction = val_min_fraction
        self.val_min_per_class = val_min_per_class
        self.random_state = random_state

    # --- building ---------------------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        if self.balance not in _BALANCE:
            msg = f"balance must be one of {_BALANCE}, got {self.balance!r}"
            raise ValueError(msg)
        channels = input_shape[0]
        if self.backbone == "scratch":
            self.network_ = ClassifierNet(channels, 2, self.width, self.depth, self.dropout)
        else:
            self.network_ = _backbone_network(self, pretrained=not fitted)
        self.network_.eval()

    def modules(self) -> dict[str, nn.Module]:
        """The classifier network."""
        return {"network": self.network_} if hasattr(self, "network_") else {}

    def fit(
        self,
        normal: Tensor,
        *,
        mixed: Tensor | None = None,
        abnormal: Tensor | None = None,
        trainer: Trainer | None = None,
        **kwargs: Any,
    ) -> CnnClassifier:
        """Train on ``normal`` (label 0) and ``abnormal`` (label 1) images, (N, C, H, W) float32 in [0, 1].

        Afterwards ``validation_`` describes the model on the validation split (on the training images when there
        is none) and ``warnings_`` says if it collapsed to one class (also logged as a warning).
        """
        self._generator = torch.Generator().manual_seed(int(self.random_state or 0) + 7919)
        self._augmenter = RandomAugment(self.flip, self.rotation, self.shift, contrast=self.contrast)
        super().fit(normal, abnormal=abnormal, trainer=trainer, **kwargs)
        if self._val_set is not None:
            self.validation_ = self._check(self._val_set, "validation")
        else:
            self.validation_ = self._check(self._train_set, "training")
        self.warnings_ = [text] if (text := collapse_warning(self.validation_)) else []
        for text in self.warnings_:
            logger.warning(text)
        del self._val_set, self._train_set
        return self

    @torch.no_grad()
    def _check(self, dataset: Dataset, source: str) -> dict[str, Any]:
        """:func:`collapse_report` of the fitted network on ``dataset`` (un-augmented)."""
        self.network_.eval()
        probabilities, labels = [], []
        for images, batch_labels in DataLoader(dataset, batch_size=64):
            probabilities.append(torch.softmax(self.network_(images.to(self.device)), dim=1)[:, 1].cpu())
            labels.append(batch_labels)
        return collapse_report(torch.cat(probabilities), torch.cat(labels), source)

    def make_datasets(
        self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None, val_fraction: float
    ) -> tuple[Dataset, Dataset | None]:
        """Labelled images, a stratified validation hold-out, and the class balancing of the training part."""
        images = torch.cat([normal, abnormal])
        labels = torch.cat([torch.zeros(len(normal), dtype=torch.long), torch.ones(len(abnormal), dtype=torch.long)])
        dataset = TensorDataset(images, labels)
        train_index, val_index = stratified_split(
            labels, val_fraction, int(self.random_state or 0), self.val_min_fraction, self.val_min_per_class
        )
        train_labels = labels[train_index]
        counts = torch.bincount(train_labels, minlength=2).clamp_min(1).float()
        self.class_weights_ = counts.sum() / (2 * counts) if self.balance == "weights" else torch.ones(2)
        if self.balance == "oversample":
            train_index = _oversample(train_index, train_labels, self._generator)
        logger.info(
            "cnn_classifier: %d train (%s per class), %d validation (%s per class)",
            len(train_index), counts.tolist(), len(val_index), torch.bincount(labels[val_index], minlength=2).tolist(),
        )  # fmt: skip
        self._val_set = Subset(dataset, val_index.tolist()) if len(val_index) else None
        self._train_set = Subset(dataset, sorted(set(train_index.tolist())))
        return Subset(dataset, train_index.tolist()), self._val_set

    # --- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam; a pretrained backbone learns ten times slower than the new head."""
        network = self.network_
        if isinstance(network, BackboneClassifierNet):
            groups = [
                {"params": network.features.parameters(), "lr": self.learning_rate / 10},
                {"params": network.head.parameters(), "lr": self.learning_rate},
            ]
            return {"adam": torch.optim.Adam(groups, weight_decay=self.weight_decay)}
        return {"adam": torch.optim.Adam(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)}

    def _losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(B,) class-weighted cross-entropy per image."""
        weights = self.class_weights_.to(logits.device)
        return F.cross_entropy(logits, labels, reduction="none") * weights[labels]

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor]:
        """Weighted cross-entropy on an augmented batch; also logs the batch accuracy."""
        images, labels = batch
        if self.augment:
            images = self._augmenter(images, self._generator)
        logits = self.network_(images)
        losses = self._losses(logits, labels)
        loss = losses.sum() / self.class_weights_.to(logits.device)[labels].sum()
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    def validation_loss(self, batch: Any) -> Tensor:
        """(B,) weighted cross-entropy of un-augmented validation images."""
        images, labels = batch
        return self._losses(self.network_(images), labels)

    # --- scoring ----------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        features = self.network_.features(images)
        probabilities = torch.softmax(self.network_.head(features), dim=1)
        cam = grad_cam(features, self.network_.head, target=1, size=tuple(images.shape[-2:]))
        maps = normalized_cam(cam, probabilities[:, 1])
        return Prediction(scores=probabilities[:, 1], anomaly_maps=maps, extras={"probabilities": probabilities})

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, history, warnings and the validation check."""
        config = super().fitted_config()
        config["validation"] = getattr(self, "validation_", None)
        return config

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> CnnClassifier:
        """Rebuild, load weights; the training-only class weights are not needed to score."""
        super().restore(fitted, state)
        self.class_weights_ = torch.ones(2)
        self.validation_ = fitted.get("validation")
        return self


def _oversample(index: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """Repeat randomly drawn minority-class indices until both classes are equally frequent."""
    counts = torch.bincount(labels, minlength=2)
    minority = int(counts.argmin())
    pool = index[labels == minority]
    extra = int(counts.max() - counts.min())
    if extra == 0 or len(pool) == 0:
        return index
    drawn = pool[torch.randint(len(pool), (extra,), generator=generator)]
    return torch.cat([index, drawn])


def _backbone_network(detector: CnnClassifier, pretrained: bool) -> nn.Module:
    """A backbone of :mod:`medanomaly.features` (pretrained weights when ``pretrained``) with a new head."""
    probe = FeatureExtractor(detector.backbone, weights=detector.backbone_weights, pretrained=False, runtime="torch")
    layer = detector.backbone_layer or probe.backbone.layer_names[-1]
    extractor = FeatureExtractor(
        detector.backbone, [layer], weights=detector.backbone_weights, pretrained=pretrained, runtime="torch"
    )
    features = PretrainedFeatures(extractor.backbone, layer, detector.frozen_through)
    return BackboneClassifierNet(features, extractor.out_channels[0], 2, detector.dropout)
