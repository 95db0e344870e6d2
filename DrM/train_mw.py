"""Pixel RL on Meta-World 3 with PROGRESSOR rewards.

    python DrM/train_mw.py task=drawer-open agent=drqv2 seed=0        # from the repository root
    python train_mw.py task=drawer-open agent=drm_mw seed=0           # from DrM/

Configuration: every key is declared and documented in drm/schema.py (DrM/cfgs/: the defaults list,
the tasks, variants and presets). Errors end the run with one line; ``PROGRESSOR_DEBUG=1`` shows the traceback.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import drm  # noqa: E402,F401  (registers the ${drm_root:...} config resolver)
from drm.workspace import run  # noqa: E402
from video2reward.errors import one_line_errors  # noqa: E402


def _given(key: str) -> bool:
    """Whether ``key`` was set on the command line (``key=...``, ``+key=...``, ``++key=...``)."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():  # a SystemExit passes through Hydra's own error report
        run(cfg, HydraConfig.get().runtime.output_dir, checkpoint_given=_given("reward.checkpoint"))


if __name__ == "__main__":
    main()
