"""Training: the loop and its hooks, distributed launch, and the default trainer and predictor."""

from segtron.engine import hooks
from segtron.engine.defaults import (
    DefaultPredictor,
    DefaultTrainer,
    build_step_trainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
)
from segtron.engine.launch import launch
from segtron.engine.train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "DefaultPredictor",
    "DefaultTrainer",
    "HookBase",
    "SimpleTrainer",
    "TrainerBase",
    "build_step_trainer",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "hooks",
    "launch",
]
