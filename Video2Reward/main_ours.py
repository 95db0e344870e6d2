"""Pretrain the PROGRESSOR progress model: ``python Video2Reward/main_ours.py --data_path D --output_dir O``.

Flags: ``--help``; the logic lives in :mod:`video2reward.train`. Multi-process:
``torchrun --nproc_per_node=2 Video2Reward/main_ours.py ... --distributed``.
"""
from video2reward.train import main

if __name__ == "__main__":
    main()
