"""Reward models on the Hugging Face Hub: :func:`push_to_hub` uploads one; loading goes through
:func:`video2reward.load_reward_model` with an ``hf://`` URI.

The URI syntax, resolving and downloading live in :mod:`video2reward.hub_files` (files, no model
knowledge), re-exported here. Layers point one way: ``hub_files`` <- ``checkpoint`` <- ``hub``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from .checkpoint import load_reward_model, read_checkpoint, save_reward_model
from .hub_files import (NAME_PATTERN, RELEASED_FILES, RELEASED_REPO, SCHEME, SYNTAX, HubError, HubFile, download,
                        first_line, parse_uri, resolve)


# ---------------------------------------------------------------------------------------- upload
SHARED_ENTRIES = ("provenance", "train_config", "step")  # what an upload keeps of a checkpoint beside the model
@dataclass
class PlannedFile:
    """One file of an upload: where it goes in the repository and what it holds."""

    path_in_repo: str
    num_bytes: int
    sha256: str
    description: str


@dataclass
class HubUpload:
    """What :func:`push_to_hub` uploaded, or would upload in a dry run (``commit_url`` is then None)."""

    repo_id: str
    revision: str
    files: list[PlannedFile] = field(default_factory=list)
    commit_url: str | None = None

    def __str__(self) -> str:
        verb = "uploaded" if self.commit_url else "would upload"
        lines = [f"{verb} to {self.repo_id}@{self.revision}" + (f" ({self.commit_url})" if self.commit_url else "")]
        lines += [f"  {f.path_in_repo}  {f.num_bytes} bytes  sha256 {f.sha256[:12]}  {f.description}"
                  for f in self.files]
        return "\n".join(lines)


def push_to_hub(checkpoint_path: str | os.PathLike, repo_id: str, *, path_in_repo: str | None = None,
                revision: str | None = None, private: bool | None = None, commit_message: str | None = None,
                token: str | bool | None = None, dry_run: bool = False) -> HubUpload:
    """Upload a reward model and its description to a Hub model repository in one commit.

    ``checkpoint_path`` is any file :func:`~video2reward.load_reward_model` reads (ours, a training
    checkpoint, or a released file). It is uploaded as ``path_in_repo`` (default: the checkpoint's
    file name) in our format, as ``load_reward_model`` reads it: method, config, weights and the
    provenance (data, steps, held-out VOC) and training settings it carries, without the state only a
    resumed training needs (optimiser, RNG). Beside it goes ``<name>.json`` (the weights' name with
    ``.json``): method, config, provenance and how to load it, for readers that do not load weights.
    The repository is created if missing. ``dry_run=True`` builds the files, prints the plan and
    returns it without any network access.
    """
    checkpoint_path = Path(checkpoint_path)
    if repo_id.count("/") != 1 or not all(NAME_PATTERN.match(p) for p in repo_id.split("/")):
        raise HubError(f"bad repo_id {repo_id!r}: expected 'owner/name'")
    path_in_repo = (path_in_repo or checkpoint_path.name).strip("/")
    folder = path_in_repo.rpartition("/")[0]
    weights_name = path_in_repo.rpartition("/")[2]
    card_in_repo = f"{folder}/{Path(weights_name).stem}.json" if folder else f"{Path(weights_name).stem}.json"
    model = load_reward_model(checkpoint_path, amp=False)
    saved = read_checkpoint(checkpoint_path)
    kept = {k: saved[k] for k in SHARED_ENTRIES if k in saved}  # a released file has none of them
    card = {"library": "video2reward", "weights": weights_name, "method": model.method,
            "config": asdict(model.config), "provenance": kept.get("provenance"),
            "input": "uint8 RGB frames (B, 3, image_size, image_size) in [0, 255]; the model normalises them",
            "load": f"video2reward.load_reward_model('hf://{repo_id}/{path_in_repo}')"}
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_reward_model(model, Path(tmp) / "model.pth", **kept).read_bytes()
    card_bytes = (json.dumps(card, indent=2, default=str) + "\n").encode()
    payloads = [(path_in_repo, weights, f"{model.config.backbone} weights + config + provenance "
                                        f"(from {checkpoint_path.name})"),
                (card_in_repo, card_bytes, "what the weights are and how to load them")]
    plan = HubUpload(repo_id, revision or constants.DEFAULT_REVISION,
                     [PlannedFile(p, len(b), hashlib.sha256(b).hexdigest(), d) for p, b, d in payloads])
    if dry_run:
        print(plan)
        return plan
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, [CommitOperationAdd(p, b) for p, b, _ in payloads], revision=revision,
                                 commit_message=commit_message or f"Upload PROGRESSOR reward model {path_in_repo}")
    except HfHubHTTPError as exc:
        raise HubError(f"upload to {repo_id} failed: {first_line(exc)}") from None
    plan.commit_url = info.commit_url
    return plan


__all__ = ["HubError", "HubFile", "HubUpload", "PlannedFile", "RELEASED_FILES", "RELEASED_REPO", "SCHEME", "SYNTAX",
           "download", "parse_uri", "push_to_hub", "resolve"]
