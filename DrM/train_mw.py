"""Pixel RL on Meta-World 3 with PROGRESSOR rewards.

    python DrM/train_mw.py task=drawer-open agent=drqv2 seed=0        # from the repository root
    python train_mw.py task=drawer-open agent=drm_mw seed=0           # from DrM/

Configuration: DrM/cfgs/config.yaml (every key documented there).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import drm  # noqa: E402,F401  (registers the ${drm_root:...} config resolver)
from drm.workspace import run  # noqa: E402


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
