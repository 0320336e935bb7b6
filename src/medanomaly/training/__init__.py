"""The single training engine shared by every torch method."""

from medanomaly.training.context import RunConfig, StepContext
from medanomaly.training.device import select_device
from medanomaly.training.engine import BUDGET_STOP, TrainConfig, Trainer, TrainingHistory, training_status

__all__ = [
    "BUDGET_STOP",
    "RunConfig",
    "StepContext",
    "TrainConfig",
    "Trainer",
    "TrainingHistory",
    "select_device",
    "training_status",
]
