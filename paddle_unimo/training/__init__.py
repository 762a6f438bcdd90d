"""Training: the one trainer loop. Shared losses live in ``paddle_unimo.losses``."""
from .trainer import Interrupted, ResumeMismatch, TrainConfig, Trainer

__all__ = ["Interrupted", "ResumeMismatch", "TrainConfig", "Trainer"]
