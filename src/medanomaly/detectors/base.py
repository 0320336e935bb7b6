"""The one interface every method implements (sklearn's contract, adapted to images).

A detector is fitted on preprocessed tensors, scores tensors, and exposes its fitted state as a ``state_dict``
plus a JSON-able ``fitted_config`` so :class:`medanomaly.model.Model` can save it without pickles.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from torch import Tensor, nn

from medanomaly.errors import NotFittedError
from medanomaly.training.context import RunConfig
from medanomaly.training.engine import TrainConfig
from medanomaly.types import Prediction

if TYPE_CHECKING:
    from medanomaly.training.engine import Trainer


class BaseDetector:
    """Base class of all detectors.

    Subclasses set ``needs`` (which training sets ``fit`` uses: ``normal``, ``mixed``, ``abnormal``), store only
    keyword hyper-parameters in ``__init__``, and implement ``_fit`` (methods trained by gradient steps subclass
    :class:`~medanomaly.detectors.torch_base.TorchDetector` instead) and ``_score_batch``. Fitted attributes end in
    ``_``; fitted tensors live in ``nn.Module`` buffers/parameters collected by :meth:`state_dict`.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"normal"})
    #: "anomaly" for one-class detectors, "classification" for supervised ones that print a class + confidence.
    kind: ClassVar[str] = "anomaly"
    #: Hyper-parameters of a tiny, fast variant for smoke runs (the registry contract test, quick demos).
    tiny_params: ClassVar[dict[str, Any]] = {}
    #: Training settings the tiny variant needs (e.g. {"max_epochs": 3}); merged into TrainConfig by callers.
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 3}
    #: Input side ``medanomaly train`` uses when ``--resolution`` is not given (None: the CLI's 128).
    default_resolution: ClassVar[int | None] = None
    #: The method's own schedule (``max_epochs``, ``patience``, ``batch_size``) when the CLI flags are not given.
    default_train: ClassVar[dict[str, Any]] = {}

    # --- hyper-parameters -------------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` keyword arguments and their current values."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    def _store_params(self, values: dict[str, Any]) -> None:
        """Keep each ``__init__`` keyword under its own name, unvalidated; ``values`` is ``__init__``'s ``locals()``."""
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":
                setattr(self, name, values[name])

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # --- fitting and scoring ----------------------------------------------------------------------------------
    def fit(
        self,
        normal: Tensor,
        *,
        mixed: Tensor | None = None,
        abnormal: Tensor | None = None,
        trainer: Trainer | None = None,
        **options: Any,
    ) -> Self:
        """Fit on preprocessed images.

        Args:
            normal: (N, C, H, W) float32 in [0, 1], healthy images.
            mixed: (M, C, H, W) unlabelled images (normal and abnormal together), for methods that need them.
            abnormal: (K, C, H, W) labelled abnormal images, for supervised methods.
            trainer: Training settings: torch methods train with it; the others take its :class:`RunConfig`
                (batch size, device, progress bars, a search's time limit).
            **options: None are accepted: a misspelt option fails here (TypeError) instead of being ignored.
        """
        reject_options(self, options)
        run = (trainer.config if trainer is not None else TrainConfig()).run()
        return self._fit(normal, mixed=mixed, abnormal=abnormal, run=run)

    def _fit(self, normal: Tensor, *, mixed: Tensor | None, abnormal: Tensor | None, run: RunConfig) -> Self:
        """Fit a method without gradient steps, with plain run settings."""
        raise NotImplementedError

    @torch.no_grad()
    def score(
        self, images: Tensor, batch_size: int = 64, progress: Callable[[int, int], None] | None = None
    ) -> Prediction:
        """Score images without changing the detector.

        Args:
            images: (N, C, H, W) float32 in [0, 1].
            batch_size: Images per forward pass.
            progress: Called with (images done, total) after each batch.

        Returns:
            Prediction with (N,) scores (higher = more anomalous) and (N, H, W) maps.
        """
        self.check_is_fitted()
        self._check_input(images)
        parts = []
        for start in range(0, len(images), batch_size):
            parts.append(self._score_batch(images[start : start + batch_size]))
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
        return _concatenate(parts)

    def _score_batch(self, images: Tensor) -> Prediction:
        raise NotImplementedError

    def _check_input(self, images: Tensor) -> None:
        expected = getattr(self, "input_shape_", None)
        if images.ndim != 4:
            msg = f"{self.name}: expected images of shape (N, C, H, W), got {tuple(images.shape)}"
            raise ValueError(msg)
        if expected is not None and tuple(images.shape[1:]) != tuple(expected):
            msg = f"{self.name}: fitted on inputs {tuple(expected)}, got {tuple(images.shape[1:])}"
            raise ValueError(msg)

    def is_fitted(self) -> bool:
        """True once ``fit`` (or loading) has set the fitted state."""
        return getattr(self, "input_shape_", None) is not None

    def check_is_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless fitted."""
        if not self.is_fitted():
            msg = f"this {type(self).__name__} is not fitted yet: call fit() or load a trained model first"
            raise NotFittedError(msg)

    # --- persistence ------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The torch modules holding fitted tensors (networks, buffers); empty for non-torch methods."""
        return {}

    def state_dict(self) -> dict[str, Tensor]:
        """All fitted tensors, keyed ``"<module>.<tensor>"``."""
        return {
            f"{prefix}.{key}": value.detach().cpu()
            for prefix, module in self.modules().items()
            for key, value in module.state_dict().items()
        }

    def fitted_config(self) -> dict[str, Any]:
        """JSON-able fitted state needed to rebuild the modules before loading weights."""
        return {"input_shape": list(self.input_shape_)}

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> Self:
        """Rebuild from :meth:`fitted_config` and :meth:`state_dict` output (the inverse of saving)."""
        self.input_shape_ = tuple(fitted["input_shape"])
        self._build(self.input_shape_, fitted)
        for prefix, module in self.modules().items():
            own = {key[len(prefix) + 1 :]: value for key, value in state.items() if key.startswith(prefix + ".")}
            module.load_state_dict(own, strict=True)
            module.eval()
        return self

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        """Create the (unfitted) modules for inputs of ``input_shape`` = (C, H, W)."""

    def to(self, device: torch.device | str) -> Self:
        """Move every module to ``device``."""
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Device of the first parameter or buffer (CPU when there is none)."""
        for module in self.modules().values():
            for tensor in list(module.parameters()) + list(module.buffers()):
                return tensor.device
        return torch.device("cpu")


def reject_options(detector: BaseDetector, options: dict[str, Any]) -> None:
    """TypeError naming ``options`` when ``fit`` got keywords it does not know."""
    if options:
        msg = (
            f"{detector.name}.fit() got unknown option(s) {', '.join(sorted(options))}: it takes normal, mixed, "
            f"abnormal and trainer; hyper-parameters go to {type(detector).__name__}(...), training settings to "
            "TrainConfig"
        )
        raise TypeError(msg)


def _concatenate(parts: list[Prediction]) -> Prediction:
    """Join the batches' predictions, emptying ``parts`` as it goes (each output is held once, plus one batch)."""
    columns = {"scores": [p.scores for p in parts], "anomaly_maps": [p.anomaly_maps for p in parts]}
    columns.update({key: [p.extras[key] for p in parts] for key in parts[0].extras})
    parts.clear()
    joined = {}
    for key, tensors in columns.items():
        joined[key] = None if tensors[0] is None else _cat_draining(tensors)
    scores, maps = joined.pop("scores"), joined.pop("anomaly_maps")
    return Prediction(scores=scores, anomaly_maps=maps, extras=joined)


def _cat_draining(tensors: list[Tensor]) -> Tensor:
    """``torch.cat`` on the CPU into one preallocated tensor, releasing each part once copied."""
    total = sum(len(t) for t in tensors)
    out = torch.empty((total, *tensors[0].shape[1:]), dtype=tensors[0].dtype)
    start = 0
    while tensors:
        part = tensors.pop(0).cpu()
        out[start : start + len(part)] = part
        start += len(part)
    return out
