"""DrM: pixel RL (DrQ-v2 / DrM agents) on Meta-World 3 with PROGRESSOR rewards and push-back refinement."""
from pathlib import Path

from omegaconf import OmegaConf

DRM_ROOT = Path(__file__).resolve().parents[1]  # the DrM/ folder: configs, pretrained_reward/, expert_demos/


def _drm_root(relative: str = "") -> str:
    """``${drm_root:pretrained_reward/all_tasks.pth}`` -> an absolute path under DrM/, whatever the cwd."""
    return str(DRM_ROOT / relative)


if not OmegaConf.has_resolver("drm_root"):
    OmegaConf.register_new_resolver("drm_root", _drm_root)
