"""Training: the one trainer loop and shared losses."""
from .losses import label_smoothed_cross_entropy
from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer", "label_smoothed_cross_entropy"]
