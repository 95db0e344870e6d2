"""The video-reward methods: PROGRESSOR and the field's action-free baselines, behind one contract.

Every model class has ``method`` and ``reward_kind`` (``"value"``: a step's reward is the value of
its new frame; ``"difference"``: value(o_{t+1}) - value(o_t)), ``image_size``, ``device``,
``config`` (a dataclass whose dict form rebuilds it with ``from_config``), ``encode(frames)`` and
``reward_from_features(f_init, f_cur, f_goal)``; see :mod:`.base` and docs/baselines.md.

=============== ======================================================== ===================
method          reward of a frame ``o`` (init ``o_0``, goal ``g``)        trained
=============== ======================================================== ===================
``progressor``  ``mu - alpha H``                                          offline + push-back
``tcn``         ``-|phi(o) - phi(g)|``                                    offline
``vip``         ``S(o, g) = -|phi(o) - phi(g)|``, reward its difference    offline
``hold_r``      ``-max(0, d(o, g) - d(g, g)) / T``, ``d`` regressed steps  offline
``hold_c``      same, ``d = |phi(o) - phi(g)|``                            offline
``rank2reward`` ``log sigmoid(u(o) - u(o_0)) + alpha logit D(o)``          offline + ``D`` online
``gail``        ``-log(1 - D(o))``                                        online only
=============== ======================================================== ===================

:data:`METHODS` holds these reward methods: what RL, ``score.py`` and the evaluation suite can
score. :data:`MODELS` adds the trained models that are not rewards (:class:`.base.PretrainedModel`
only: VIPER's frame tokenizer) and VIPER itself, which scores frame sequences and joins
:data:`METHODS` with its RL reward function; :data:`TRAINABLE` is what ``main.py --method`` trains,
:func:`video2reward.load_model` loads any of :data:`MODELS`.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

from .adversarial import Discriminator, DiscriminatorConfig, DiscriminatorFinetuner, discriminator_loss
from .base import (DIFFERENCE, REWARD_KINDS, SCORES, SEQUENCES, TRIPLETS, VALUE, Evaluation, FrameTuples, MethodConfig,
                   OnlineFinetuner, PretrainedConfig, PretrainedModel, Pretraining, RewardModel, Sampling, TupleSampler)
from .gail import GAILConfig, GAILModel
from .hold import HoldCConfig, HoldCModel, HoldRConfig, HoldRModel
from .progressor import ModelConfig, ProgressModel, ProgressorConfig, ProgressorTraining
from .rank2reward import Rank2RewardConfig, Rank2RewardModel
from .tcn import TCNConfig, TCNModel
from .tokenizer import TokenizerConfig, TokenizerModel
from .viper import ViperConfig, ViperModel, ViperTraining
from .vip import VIPConfig, VIPModel

PROGRESSOR = ProgressModel.method
METHODS: dict[str, type[RewardModel]] = {cls.method: cls for cls in (
    ProgressModel, TCNModel, VIPModel, HoldRModel, HoldCModel, Rank2RewardModel, GAILModel)}
PRETRAINABLE = tuple(m for m, cls in METHODS.items() if cls.pretrainable)  # reward methods trained on videos first
# every model a checkpoint may hold: the reward methods and the models they build on
MODELS: dict[str, type[PretrainedModel]] = {**METHODS, **{cls.method: cls for cls in (TokenizerModel, ViperModel)}}
TRAINABLE = tuple(m for m, cls in MODELS.items() if cls.pretrainable)  # what `main.py --method` trains


def method_class(method: str) -> type[RewardModel]:
    """The model class of reward method ``method``; a one-line error names the known ones."""
    try:
        return METHODS[method]
    except KeyError:
        other = f" ({method} is a {model_class(method).__name__}, not a reward)" if method in MODELS else ""
        raise ValueError(f"unknown reward method {method!r}{other}; choose one of {', '.join(METHODS)}") from None


def model_class(method: str) -> type[PretrainedModel]:
    """The model class of ``method``, a reward method or another trained model; a one-line error names them."""
    try:
        return MODELS[method]
    except KeyError:
        raise ValueError(f"unknown reward method {method!r}; choose one of {', '.join(MODELS)}") from None


def config_class(method: str) -> type[PretrainedConfig]:
    """The config dataclass of ``method`` (any of :data:`MODELS`)."""
    return model_class(method).config_class


def make_config(method: str, fields: Mapping[str, Any]) -> PretrainedConfig:
    """``method``'s config from its dict form (a ``"method"`` entry, if any, must agree; files
    written before configs named their method have none)."""
    cls = config_class(method)
    fields = dict(fields)
    named = fields.pop("method", method)
    if named != method:
        raise ValueError(f"config is for method {named!r}, not {method!r}")
    return cls(method=method, **fields)


def build_model(method: str, config: Mapping[str, Any] | Any, **kwargs: Any) -> PretrainedModel:
    """A fresh model of ``method`` (any of :data:`MODELS`) from its config (dataclass or dict);
    ``kwargs``: ``amp``, ``channels_last``."""
    fields = config if isinstance(config, Mapping) else asdict(config)
    return model_class(method).from_config(make_config(method, fields), **kwargs)


def method_of(model: Any) -> str:
    """The registry name of a model instance."""
    return model.method


__all__ = ["DIFFERENCE", "Discriminator", "DiscriminatorConfig", "DiscriminatorFinetuner", "Evaluation",
           "FrameTuples", "GAILConfig", "GAILModel", "HoldCConfig", "HoldCModel", "HoldRConfig", "HoldRModel",
           "METHODS", "MODELS", "MethodConfig", "ModelConfig", "OnlineFinetuner", "PRETRAINABLE", "PROGRESSOR",
           "PretrainedConfig", "PretrainedModel", "Pretraining", "ProgressModel", "ProgressorConfig",
           "ProgressorTraining", "REWARD_KINDS", "Rank2RewardConfig", "Rank2RewardModel", "RewardModel", "SCORES",
           "SEQUENCES", "Sampling", "TCNConfig", "TCNModel", "TRAINABLE", "TRIPLETS", "TokenizerConfig",
           "TokenizerModel", "TupleSampler", "VALUE", "VIPConfig", "VIPModel", "ViperConfig", "ViperModel",
           "ViperTraining", "build_model", "config_class", "discriminator_loss", "make_config", "method_class",
           "method_of", "model_class"]
