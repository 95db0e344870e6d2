"""DrQ-v2 / DrM agents: one agent class with DrM options, its networks and the dormant-ratio tools."""
from .dormant import DormantMonitor, dormant_ratio, fresh_copy, perturb, perturb_factor, reset_optimizer
from .drqv2 import DrMAgent, DrQV2Agent
from .networks import (Actor, Critic, Encoder, RandomShiftsAug, TruncatedNormal, ValueNet,
                       conv_output_side, expectile_loss, soft_update, weight_init)

__all__ = ["Actor", "Critic", "DormantMonitor", "DrMAgent", "DrQV2Agent", "Encoder", "RandomShiftsAug",
           "TruncatedNormal", "ValueNet", "conv_output_side", "dormant_ratio", "expectile_loss",
           "fresh_copy", "perturb", "perturb_factor", "reset_optimizer", "soft_update", "weight_init"]
