"""Evaluation: image- and pixel-level metrics (``metrics``) and pictures (``plots``, matplotlib loaded lazily)."""

from medanomaly.evaluation.metrics import bootstrap_auroc_ci, classification_metrics, dice, pixel_metrics

__all__ = ["bootstrap_auroc_ci", "classification_metrics", "dice", "pixel_metrics"]
