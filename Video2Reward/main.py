"""Pretrain a video reward model, PROGRESSOR or a baseline of the field:
``python Video2Reward/main.py --method {progressor,tcn,vip,hold_r,hold_c,rank2reward} --data_path D --output_dir O``.

Flags: ``--help`` (those of ``main_ours.py`` plus ``--method`` and ``--method_config KEY=VALUE ...``);
the logic lives in :mod:`video2reward.train`, the methods in :mod:`video2reward.methods` and
docs/baselines.md.
"""
from video2reward.train import main

if __name__ == "__main__":
    main(methods=True)
