"""Video2Reward: the PROGRESSOR progress model, its data pipeline and pretraining."""
from .checkpoint import CheckpointError, load_model, load_reward_model, save_model, save_reward_model
from .losses import gaussian_entropy
from .methods.progressor import ModelConfig, ProgressModel
from .model import BACKBONES, autocast

__all__ = ["BACKBONES", "CheckpointError", "ModelConfig", "ProgressModel", "autocast", "gaussian_entropy",
           "load_model", "load_reward_model", "save_model", "save_reward_model"]
