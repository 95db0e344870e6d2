"""Files on the Hugging Face Hub: the ``hf://`` URI syntax, resolving it into the local cache, downloading.

This module knows files, not models: :func:`video2reward.checkpoint.load_reward_model` resolves
``hf://`` sources through it, and :mod:`video2reward.hub` (uploading a model) builds on both.

A checkpoint on the Hub is named by one URI syntax, the one ``huggingface_hub`` itself uses for
model repositories::

    hf://<owner>/<repo>[@<revision>]/<path/in/repo>

    hf://tedywond/PROGRESSOR-pretrained-weight/all_tasks.pth          # branch main
    hf://tedywond/PROGRESSOR-pretrained-weight@<commit-sha>/all_tasks.pth  # pinned
    hf://owner/repo@refs/pr/3/model.pth                                # a pull-request ref

The revision is a branch, tag or commit hash (percent-encode a ``/`` inside a branch name as
``%2F``; ``refs/pr/<n>`` and ``refs/convert/<name>`` are taken as they are). Pin a commit hash for
reproducible runs: a cached commit resolves without any network call.

Downloads go through :func:`huggingface_hub.hf_hub_download`, so its cache (``HF_HUB_CACHE`` /
``HF_HOME``), offline mode (``HF_HUB_OFFLINE=1``), ``HF_ENDPOINT`` mirrors and tokens all apply.
Every failure is a :class:`HubError` with a one-line message. Nothing here unpickles anything:
the downloaded file is read by :func:`video2reward.checkpoint.read_checkpoint` (``weights_only``).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)

from .io import atomic_path

SCHEME = "hf://"
SYNTAX = "hf://<owner>/<repo>[@<revision>]/<path/in/repo>"
RELEASED_REPO = "tedywond/PROGRESSOR-pretrained-weight"  # the paper's weights (SPEC §6)
RELEASED_FILES = ("all_tasks.pth", "PROGRESSOR_EPIC_KITCHENS_pretrained_weight.pth")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPECIAL_REF = re.compile(r"^refs/(?:pr/\d+|convert/[\w.-]+)")  # revisions that contain '/'
_OTHER_REPO_TYPES = ("datasets", "spaces", "buckets", "kernels")


class HubError(RuntimeError):
    """A Hub URI that cannot be resolved to a file; the message is one line and says what to do."""


@dataclass(frozen=True)
class HubFile:
    """One file in a Hub model repository, parsed from an ``hf://`` URI."""

    repo_id: str  # "owner/repo"
    filename: str  # path inside the repository, "/"-separated
    revision: str | None = None  # branch, tag or commit; None = "main"

    @property
    def uri(self) -> str:
        rev = ""
        if self.revision:
            special = _SPECIAL_REF.fullmatch(self.revision)
            rev = "@" + (self.revision if special else quote(self.revision, safe=""))
        return f"{SCHEME}{self.repo_id}{rev}/{self.filename}"


def parse_uri(uri: str) -> HubFile:
    """Split ``hf://<owner>/<repo>[@<revision>]/<path>`` into its parts; :class:`HubError` if malformed."""
    def bad(why: str) -> HubError:
        return HubError(f"bad Hub URI {uri!r}: {why}; expected {SYNTAX}")

    if not uri.startswith(SCHEME):
        raise bad(f"it does not start with {SCHEME!r}")
    parts = uri[len(SCHEME):].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise bad("it needs an owner, a repository and a file")
    owner, repo, rest = parts
    if owner in _OTHER_REPO_TYPES:
        raise bad(f"only model repositories hold reward weights, not {owner}")
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
        joined = f"{revision}/{rest}"
        special = _SPECIAL_REF.match(joined)
        if special:  # "refs/pr/3/model.pth": the revision itself spans path segments
            revision, rest = special.group(0), joined[special.end() + 1:]
        revision = unquote(revision)
        if not revision:
            raise bad("empty revision after '@'")
    for name in (owner, repo):
        if not NAME_PATTERN.match(name) or "--" in name or ".." in name:
            raise bad(f"{name!r} is not a valid owner/repository name")
    segments = rest.split("/")
    if not rest or any(s in ("", ".", "..") for s in segments):
        raise bad(f"{rest!r} is not a file path inside the repository")
    return HubFile(f"{owner}/{repo}", rest, revision)


def resolve(uri: str, *, cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
            token: str | bool | None = None, endpoint: str | None = None) -> Path:
    """Local path of the file named by ``uri``, downloading it into the Hugging Face cache if needed.

    ``cache_dir`` defaults to ``HF_HUB_CACHE``; with ``HF_HUB_OFFLINE=1`` (or ``local_files_only``)
    only the cache is consulted. ``endpoint`` overrides ``HF_ENDPOINT`` (a mirror).
    """
    ref = parse_uri(uri)
    try:
        path = hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=cache_dir,
                               local_files_only=local_files_only, token=token, endpoint=endpoint,
                               library_name="video2reward")
    except LocalEntryNotFoundError as exc:  # before EntryNotFoundError: it is a subclass of it
        raise HubError(_not_cached_message(ref, cache_dir, local_files_only, exc)) from None
    except GatedRepoError:
        raise HubError(f"{ref.uri}: {ref.repo_id} is gated; accept its terms on huggingface.co and log in "
                       f"(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{ref.uri}: repository {ref.repo_id} not found on the Hub (or it is private: log in "
                       f"with `hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{ref.uri}: revision {ref.revision!r} not found in {ref.repo_id}") from None
    except EntryNotFoundError:
        raise HubError(f"{ref.uri}: file {ref.filename!r} not found in {ref.repo_id} at revision "
                       f"{ref.revision or constants.DEFAULT_REVISION}{_at_hint(ref)}") from None
    except HfHubHTTPError as exc:
        raise HubError(f"{ref.uri}: the Hub answered with an error: {first_line(exc)}") from None
    return Path(path)


def download(uri: str, out: str | os.PathLike, **resolve_kwargs) -> Path:
    """Resolve ``uri`` (see :func:`resolve`) and copy the file to ``out`` atomically; returns ``out``.

    The cache keeps its copy; ``out`` is a plain file (not a link into the cache), so it survives
    cache cleaning and can be moved.
    """
    src = resolve(uri, **resolve_kwargs)
    out = Path(out)
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    return out


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()


def _cached_files(ref: HubFile, cache_dir: str | os.PathLike | None) -> list[str]:
    """Files of ``ref.repo_id`` present in any cached snapshot (the cache layout is documented by HF)."""
    snapshots = _cache_root(cache_dir) / f"models--{ref.repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return []
    return sorted({p.relative_to(snap).as_posix() for snap in snapshots.iterdir() if snap.is_dir()
                   for p in snap.rglob("*") if p.is_file()})


def _not_cached_message(ref: HubFile, cache_dir, local_files_only: bool, exc: Exception) -> str:
    cached = _cached_files(ref, cache_dir)
    where = f"the Hugging Face cache {_cache_root(cache_dir)}"
    if cached:
        where += f" (it holds {', '.join(cached[:5])}{', ...' if len(cached) > 5 else ''} for this repo)"
    if local_files_only or constants.HF_HUB_OFFLINE:
        why = ("downloads are off (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else
               "downloads are off (local_files_only)")
        repo_flag = "" if ref.repo_id == RELEASED_REPO else f" --repo {ref.repo_id}"
        fix = (f"download it once with network access (python scripts/download_pretrained.py{repo_flag} "
               f"--file {ref.filename}) or pass a local file path")
    else:
        cause = exc.__cause__ or exc.__context__
        why = f"the Hub could not be reached ({first_line(cause) if cause else 'no connection'})"
        fix = "check the network / HF_ENDPOINT, or pass a local file path"
    return f"{ref.uri}: not in {where} and {why}; {fix}{_at_hint(ref)}"


def _at_hint(ref: HubFile) -> str:
    if ref.revision is None and "@" in ref.filename:
        return f" (a revision goes after the repository name: {SYNTAX})"
    return ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


__all__ = ["HubError", "HubFile", "NAME_PATTERN", "RELEASED_FILES", "RELEASED_REPO", "SCHEME", "SYNTAX", "download",
           "first_line", "parse_uri", "resolve"]
