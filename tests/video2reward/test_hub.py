"""Hub weights without network: a Hugging Face cache built by hand (offline mode) and a local fake
Hub server, both going through the real ``huggingface_hub.hf_hub_download``."""
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
import torch

from video2reward import CheckpointError, ProgressModel, load_reward_model, save_reward_model
from video2reward import hub
from video2reward.hub import HubError, parse_uri
from video2reward.checkpoint import read_checkpoint, read_provenance

ROOT = Path(__file__).resolve().parents[2]
REPO = "tedywond/PROGRESSOR-pretrained-weight"
EPIC = "PROGRESSOR_EPIC_KITCHENS_pretrained_weight.pth"
COMMIT_OLD, COMMIT_NEW = "1" * 40, "2" * 40


def released_payload(variant: str, seed: int = 0) -> dict:
    """A checkpoint in the released layout of ``variant``, from a freshly initialised model."""
    torch.manual_seed(seed)
    sd = ProgressModel(variant, amp=False, channels_last=False).state_dict()
    optim = {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]}
    if variant == "resnet18_84":
        return {"state_dict": sd, "optim_state_dict": optim}
    return {"model_state_dict": sd, "optimizer_state_dict": optim, "epoch": 30}


def add_to_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> None:
    """Lay ``files`` out as huggingface_hub caches them: content-addressed blobs, a snapshot folder
    per commit of relative symlinks, and ``refs/<name>`` files holding commit hashes."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for sub in ("blobs", f"snapshots/{commit}", "refs"):
        (repo / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def file_bytes(tmp: Path, payload: dict) -> bytes:
    torch.save(payload, tmp)
    return tmp.read_bytes()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Both released files (built once) and the state dicts they hold."""
    tmp = tmp_path_factory.mktemp("released")
    mw, epic = released_payload("resnet18_84"), released_payload("resnet34_224")
    return {"all_tasks.pth": (file_bytes(tmp / "a.pth", mw), mw["state_dict"]),
            EPIC: (file_bytes(tmp / "e.pth", epic), epic["model_state_dict"])}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, released):
    """A Hugging Face cache holding the released repo: ``main`` at COMMIT_NEW, tag ``v1`` at
    COMMIT_OLD (whose all_tasks.pth has other weights). Read-only for the tests."""
    tmp = tmp_path_factory.mktemp("hf")
    cache = tmp / "hf_home" / "hub"
    add_to_cache(cache, REPO, COMMIT_NEW, {name: data for name, (data, _) in released.items()}, refs=("main",))
    old = file_bytes(tmp / "old.pth", released_payload("resnet18_84", seed=1))
    add_to_cache(cache, REPO, COMMIT_OLD, {"all_tasks.pth": old}, refs=("v1",))
    return cache


@pytest.fixture
def offline_cache(hf_home, monkeypatch):
    """``hf_home`` as this process's cache, in offline mode."""
    cache = hf_home
    # The environment is what a user sets; huggingface_hub reads it at import, so for this process
    # the constants it derived are patched too.
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def assert_weights_equal(model, state_dict):
    own = model.state_dict()
    assert set(own) == set(state_dict)
    for k, v in state_dict.items():
        assert torch.equal(own[k].cpu(), v), k


# ------------------------------------------------------------------------------------------ URIs
@pytest.mark.parametrize("uri,expected", [
    (f"hf://{REPO}/all_tasks.pth", (REPO, "all_tasks.pth", None)),
    (f"hf://{REPO}@{COMMIT_OLD}/all_tasks.pth", (REPO, "all_tasks.pth", COMMIT_OLD)),
    ("hf://o/r@v1.0/sub/dir/m.pth", ("o/r", "sub/dir/m.pth", "v1.0")),
    ("hf://o/r@refs/pr/3/m.pth", ("o/r", "m.pth", "refs/pr/3")),
    ("hf://o/r@my%2Fbranch/m.pth", ("o/r", "m.pth", "my/branch")),
])
def test_parse_uri(uri, expected):
    ref = parse_uri(uri)
    assert (ref.repo_id, ref.filename, ref.revision) == expected
    assert parse_uri(ref.uri) == ref


@pytest.mark.parametrize("uri,why", [
    ("https://huggingface.co/o/r/m.pth", "does not start"),
    ("hf://o/r", "needs an owner, a repository and a file"),
    ("hf://o/r/", "needs an owner"),
    ("hf://datasets/o/r/m.pth", "only model repositories"),
    ("hf://o/r@/m.pth", "empty revision"),
    ("hf://o/r/../m.pth", "not a file path"),
    ("hf://o/r//m.pth", "not a file path"),
    ("hf://o w/r/m.pth", "not a valid owner"),
])
def test_bad_uri_one_line(uri, why):
    with pytest.raises(HubError, match=why) as err:
        parse_uri(uri)
    assert "\n" not in str(err.value) and hub.SYNTAX in str(err.value)


# ------------------------------------------------------------------------------------------ offline cache
@pytest.mark.parametrize("name,variant", [("all_tasks.pth", "resnet18_84"), (EPIC, "resnet34_224")])
def test_offline_cache_loads_released_formats(offline_cache, released, name, variant):
    model = load_reward_model(f"hf://{REPO}/{name}")
    assert model.config.backbone == variant and not model.training
    assert_weights_equal(model, released[name][1])
    s = model.image_size
    frames = torch.zeros(1, 3, s, s, dtype=torch.uint8)
    assert model.predict(frames, frames, frames).batch_shape == (1,)


def test_revision_pinning(offline_cache, released):
    main = hub.resolve(f"hf://{REPO}/all_tasks.pth")
    pinned = hub.resolve(f"hf://{REPO}@{COMMIT_OLD}/all_tasks.pth")
    tagged = hub.resolve(f"hf://{REPO}@v1/all_tasks.pth")
    assert main.parent.name == COMMIT_NEW and pinned.parent.name == COMMIT_OLD and tagged == pinned
    assert main.read_bytes() == released["all_tasks.pth"][0]
    assert pinned.read_bytes() != main.read_bytes()
    with pytest.raises(HubError, match="not in the Hugging Face cache"):
        hub.resolve(f"hf://{REPO}@{COMMIT_OLD}/{EPIC}")  # that commit has no EPIC file cached


def test_offline_not_cached_one_line(offline_cache):
    with pytest.raises(HubError) as err:
        load_reward_model(f"hf://{REPO}/missing.pth")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("missing.pth", "HF_HUB_OFFLINE=1", str(offline_cache), "all_tasks.pth", "download_pretrained.py"):
        assert part in msg, part
    with pytest.raises(HubError, match="not in the Hugging Face cache"):
        hub.resolve("hf://someone/other-repo/m.pth")
    with pytest.raises(HubError, match="a revision goes after the repository name"):
        hub.resolve(f"hf://{REPO}/all_tasks.pth@v1")


def test_download_copies_out_of_cache(offline_cache, tmp_path, released):
    out = hub.download(f"hf://{REPO}/all_tasks.pth", tmp_path / "w" / "all_tasks.pth")
    assert out.read_bytes() == released["all_tasks.pth"][0] and not out.is_symlink()


# ------------------------------------------------------------------------------------------ fake Hub server
class FakeHub(BaseHTTPRequestHandler):
    """Answers ``/<owner>/<repo>/resolve/<rev>/<file>`` the way the Hub does (headers included)."""

    files = {("o/r", "m.pth"): b"not used as weights here"}
    commit = "3" * 40

    def log_message(self, *args):
        pass

    def _answer(self, body: bool):
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        rev, _, name = rest.partition("/")
        data = self.files.get((repo, name))
        if not any(r == repo for r, _ in self.files):
            status, code = 401, "RepoNotFound"
        elif rev not in ("main", self.commit):
            status, code = 404, "RevisionNotFound"
        elif data is None:
            status, code = 404, "EntryNotFound"
        else:
            self.send_response(200)
            self.send_header("X-Repo-Commit", self.commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fake_hub_download_then_offline(fake_hub, tmp_path, monkeypatch):
    path = hub.resolve("hf://o/r/m.pth", endpoint=fake_hub)
    assert path.read_bytes() == FakeHub.files[("o/r", "m.pth")]
    assert path.is_relative_to(tmp_path / "cache") and path.parent.name == FakeHub.commit
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert hub.resolve("hf://o/r/m.pth") == path  # now served by the cache alone


@pytest.mark.parametrize("uri,why", [
    ("hf://o/r/other.pth", "file 'other.pth' not found in o/r at revision main"),
    ("hf://o/nope/m.pth", "repository o/nope not found"),
    ("hf://o/r@v9/m.pth", "revision 'v9' not found in o/r"),
])
def test_fake_hub_errors_one_line(fake_hub, uri, why):
    with pytest.raises(HubError, match=why) as err:
        hub.resolve(uri, endpoint=fake_hub)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ security
class Payload:
    """An arbitrary object: unpickling it needs its class, i.e. code."""

    def __init__(self):
        self.x = 1


class RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["reduce", "object"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch, kind):
    marker = tmp_path / "pwned"
    sd = ProgressModel("convnet", image_size=32).state_dict()
    sd["fc_mu.bias"] = RunsCommand(marker) if kind == "reduce" else Payload()
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": sd, "optim_state_dict": {}}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        load_reward_model(path)
    msg = str(err.value)
    assert "\n" not in msg and "evil.pth" in msg and "refused" in msg and "weights_only" in msg
    assert ("system" if kind == "reduce" else "Payload") in msg  # names what the file wanted to import
    assert not marker.exists(), "the pickled command ran"
    # the same file served from the Hub cache is refused the same way
    cache = tmp_path / "cache"
    add_to_cache(cache, "o/r", COMMIT_OLD, {"evil.pth": path.read_bytes()}, refs=("main",))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="refused"):
        load_reward_model("hf://o/r/evil.pth")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ upload
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not touch the network")
    monkeypatch.setattr(hub, "HfApi", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_push_to_hub_dry_run(tmp_path, no_network, capsys):
    model = ProgressModel("convnet", image_size=48, alpha=0.3)
    ckpt = save_reward_model(model, tmp_path / "checkpoint_last.pth", optimizer={"state": {}, "param_groups": []},
                             step=10)
    plan = hub.push_to_hub(ckpt, "me/progressor-toy", path_in_repo="toy/model.pth", dry_run=True)
    assert plan.commit_url is None and plan.repo_id == "me/progressor-toy" and plan.revision == "main"
    assert [f.path_in_repo for f in plan.files] == ["toy/model.pth", "toy/model.json"]
    assert all(f.num_bytes > 0 and len(f.sha256) == 64 for f in plan.files)
    out = capsys.readouterr().out
    assert "would upload to me/progressor-toy@main" in out and "toy/model.json" in out
    with pytest.raises(HubError, match="bad repo_id"):
        hub.push_to_hub(ckpt, "not-a-repo-id", dry_run=True)


def record_uploads(monkeypatch) -> dict:
    """HfApi replaced by a recorder of the repository and of the commit's files."""
    calls = {}

    class Recorder:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, exist_ok)

        def create_commit(self, repo_id, operations, revision=None, commit_message=""):
            calls["ops"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
            return type("Info", (), {"commit_url": f"https://hf.co/{repo_id}/commit/{'4' * 40}"})()

    monkeypatch.setattr(hub, "HfApi", Recorder)
    return calls


def test_push_to_hub_commit_contents(tmp_path, monkeypatch, released):
    """The upload path with HfApi replaced by a recorder: the checkpoint as load_reward_model reads it
    (provenance kept, training state dropped) + its description."""
    calls = record_uploads(monkeypatch)
    src = tmp_path / "all_tasks.pth"
    src.write_bytes(released["all_tasks.pth"][0])
    plan = hub.push_to_hub(src, "me/mw")
    assert plan.commit_url and calls["repo"] == ("me/mw", True)
    ops = calls["ops"]
    assert set(ops) == {"all_tasks.pth", "all_tasks.json"}
    card = json.loads(ops["all_tasks.json"])
    assert card["config"]["backbone"] == "resnet18_84" and card["config"]["image_size"] == 84
    assert card["weights"] == "all_tasks.pth" and card["method"] == "progressor"
    (tmp_path / "up.pth").write_bytes(ops["all_tasks.pth"])
    raw = torch.load(tmp_path / "up.pth", weights_only=True)
    assert raw["format"] == "progressor" and "optim_state_dict" not in raw
    assert_weights_equal(load_reward_model(tmp_path / "up.pth"), released["all_tasks.pth"][1])


def test_push_to_hub_keeps_the_provenance_and_drops_the_training_state(tmp_path, monkeypatch):
    calls = record_uploads(monkeypatch)
    origin = {"data": "demos3", "steps": 3000, "eval": {"voc": 0.99}}
    ckpt = save_reward_model(ProgressModel("convnet", image_size=48), tmp_path / "checkpoint_last.pth", step=3000,
                             optimizer={"state": {}, "param_groups": []}, rng={"torch": torch.zeros(3)},
                             provenance=origin, train_config={"steps": 3000})
    hub.push_to_hub(ckpt, "me/toy", path_in_repo="toy/model.pth")
    (tmp_path / "up.pth").write_bytes(calls["ops"]["toy/model.pth"])
    up = read_checkpoint(tmp_path / "up.pth")
    assert up["provenance"] == origin and up["train_config"] == {"steps": 3000} and up["step"] == 3000
    assert "optimizer" not in up and "rng" not in up
    assert read_provenance(tmp_path / "up.pth") == read_provenance(ckpt)
    assert json.loads(calls["ops"]["toy/model.json"])["provenance"] == origin


# ------------------------------------------------------------------------------------------ script
def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("download_pretrained", ROOT / "scripts" / "download_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_pretrained_script(offline_cache, tmp_path, released):
    """The real command, from another working directory, with the HF_* variables of the fixture."""
    out_dir = tmp_path / "weights"
    out_dir.mkdir()
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_pretrained.py"), "--out", str(out_dir)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (out_dir / "all_tasks.pth").read_bytes() == released["all_tasks.pth"][0]
    assert "backbone resnet18_84" in run.stdout


def test_download_pretrained_errors_and_default_destination(offline_cache, tmp_path, capsys):
    script = load_script()
    # the default target is DrM/pretrained_reward/ of this checkout, not of the working directory
    assert script.DEFAULT_DIR == ROOT / "DrM" / "pretrained_reward"
    assert script.main(["--file", "nope.pth", "--out", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert "nope.pth" in err and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1
    assert script.main(["--file", EPIC, "--revision", COMMIT_NEW, "--out", str(tmp_path / "e.pth"),
                        "--no_verify"]) == 0
    assert (tmp_path / "e.pth").is_file()
