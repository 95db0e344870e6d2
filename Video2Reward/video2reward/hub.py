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

from .checkpoint import load_reward_model, save_reward_model
from .hub_files import (NAME_PATTERN, RELEASED_FILES, RELEASED_REPO, SCHEME, SYNTAX, HubError, HubFile, download,
                        first_line, parse_uri, resolve)


# ---------------------------------------------------------------------------------------- upload
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
    """Upload a reward model and its config to a Hub model repository in one commit.

    ``checkpoint_path`` is any file :func:`~video2reward.load_reward_model` reads (ours, a training
    checkpoint, or a released file). What is uploaded is the shareable model only, in our format
    (config + weights, no optimiser or RNG state), as ``path_in_repo`` (default: the checkpoint's
    file name), and ``config.json`` in the same folder (backbone, image size, alpha and the input
    contract, for readers that do not load the weights) — keep one model per folder. The repository
    is created if missing. ``dry_run=True`` builds the files, prints the plan and returns it without
    any network access.
    """
    checkpoint_path = Path(checkpoint_path)
    if repo_id.count("/") != 1 or not all(NAME_PATTERN.match(p) for p in repo_id.split("/")):
        raise HubError(f"bad repo_id {repo_id!r}: expected 'owner/name'")
    path_in_repo = (path_in_repo or checkpoint_path.name).strip("/")
    folder = path_in_repo.rpartition("/")[0]
    config_in_repo = f"{folder}/config.json" if folder else "config.json"
    model = load_reward_model(checkpoint_path, amp=False)
    config = {"library": "video2reward", "weights": path_in_repo.rpartition("/")[2], "method": model.method,
              **asdict(model.config),
              "input": "uint8 RGB frames (B, 3, image_size, image_size) in [0, 255]; the model normalises them",
              "load": f"video2reward.load_reward_model('hf://{repo_id}/{path_in_repo}')"}
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_reward_model(model, Path(tmp) / "model.pth").read_bytes()
    config_bytes = (json.dumps(config, indent=2) + "\n").encode()
    payloads = [(path_in_repo, weights, f"{model.config.backbone} weights + config (from {checkpoint_path.name})"),
                (config_in_repo, config_bytes, "model config")]
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
