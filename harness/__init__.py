"""swat-harness: benchmark SWAT against linear recurrent and softmax baselines."""

from harness.config import ModelConfig, TrainConfig, load_config
from harness.registry import register_model, register_task

__version__ = "0.1.0"
__all__ = ["register_model", "register_task", "ModelConfig", "TrainConfig", "load_config"]
