"""UVD: subgoals of demonstrations found by a reward model's frozen embedding (see video2reward.uvd).

    python Video2Reward/decompose.py --checkpoint runs/tcn/checkpoint_last.pth --data mw6 --tasks pick-place --out uvd/
"""
import sys

from video2reward.decomposition import main

if __name__ == "__main__":
    sys.exit(main())
