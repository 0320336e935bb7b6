"""The single training engine shared by every torch method."""

from medanomaly.training.device import select_device
from medanomaly.training.engine import TrainConfig, Trainer, TrainingHistory

__all__ = ["TrainConfig", "Trainer", "TrainingHistory", "select_device"]
