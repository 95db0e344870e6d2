"""Score a video or a folder of frames with a PROGRESSOR reward model (see video2reward.scoring).

    python Video2Reward/score.py my_video.mp4 --checkpoint DrM/pretrained_reward/all_tasks.pth --out scores/ --video
"""
import sys

from video2reward.scoring import main

if __name__ == "__main__":
    sys.exit(main())
