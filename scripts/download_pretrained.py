"""Download released PROGRESSOR weights from the Hugging Face Hub to where the RL code looks for them.

    python scripts/download_pretrained.py                      # all_tasks.pth -> DrM/pretrained_reward/
    python scripts/download_pretrained.py --file PROGRESSOR_EPIC_KITCHENS_pretrained_weight.pth
    python scripts/download_pretrained.py --revision <commit-sha> --out /data/weights/

The file goes through the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE=1``
uses the cache only), is copied to ``--out`` (default ``DrM/pretrained_reward/<file>`` under this
repository, wherever the script is run from) and is then loaded once (weights only, never
unpickled code) to check that it is a usable reward model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video2reward import CheckpointError, load_reward_model
from video2reward.hub import RELEASED_FILES, RELEASED_REPO, HubError, HubFile, download

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / "DrM" / "pretrained_reward"  # DrM/train_mw.py's default reward checkpoint folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=RELEASED_REPO, help="Hub model repository (owner/name)")
    parser.add_argument("--file", default=RELEASED_FILES[0],
                        help=f"file in the repository; released: {', '.join(RELEASED_FILES)}")
    parser.add_argument("--revision", default=None, help="branch, tag or commit hash to pin (default: main)")
    parser.add_argument("--out", default=None,
                        help=f"destination file, or an existing folder (default: {DEFAULT_DIR.relative_to(REPO_ROOT)}/<file>)")
    parser.add_argument("--no_verify", action="store_true", help="skip loading the file as a reward model")
    args = parser.parse_args(argv)

    out = Path(args.out).expanduser() if args.out else DEFAULT_DIR
    if args.out is None or out.is_dir() or args.out.endswith(("/", "\\")):
        out = out / Path(args.file).name
    uri = HubFile(args.repo, args.file, args.revision).uri
    try:
        path = download(uri, out)
        print(f"{uri} -> {path}")
    except HubError as exc:
        print(f"download_pretrained.py: error: {exc}", file=sys.stderr)
        return 1
    if not args.no_verify:
        try:
            model = load_reward_model(path)
        except CheckpointError as exc:
            path.unlink()  # a file the RL code cannot load must not sit where it looks by default
            print(f"download_pretrained.py: error: {exc} (removed {path})", file=sys.stderr)
            return 1
        print(f"loaded: backbone {model.config.backbone}, {model.image_size}x{model.image_size} input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
