"""VIPER (video2reward.methods.viper): the transformer's causal mask, the log-likelihood reward
against a model whose distribution is fixed, the windows a trajectory is scored in, save / load /
score, the RND term, and ``main.py --method viper --tokenizer CKPT`` in a subprocess."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video2reward import load_model, load_reward_model, save_model
from video2reward.checkpoint import CheckpointError
from video2reward.methods import METHODS, MODELS, SCORES, SEQUENCES, TokenizerConfig, TokenizerModel, ViperModel
from video2reward.methods.viper import ViperConfig
from video2reward.train import TrainConfig, pretrain

from .test_tokenizer import TINY, bars, tiny_run
from .test_train import write_demos

REPO = Path(__file__).resolve().parents[2]
GRID, CODES = 4, 16  # the tiny tokenizer's 4 x 4 grid of 16 codes

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_viper(**fields) -> ViperModel:
    torch.manual_seed(0)
    fields = {"tokenizer_config": TINY, "context": 3, "layers": 2, "heads": 2, "width": 16, "mlp_width": 32,
              "dropout": 0.0, **fields}
    return ViperModel(ViperConfig(**fields)).eval()


def random_codes(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CODES, (b, t, GRID, GRID), generator=torch.Generator().manual_seed(seed))


def test_a_future_code_never_changes_a_past_likelihood():
    model = tiny_viper(tasks=("a", "b"))
    codes = random_codes(2, 3)
    task = torch.tensor([0, 1])
    changed = codes.clone()
    changed[:, 1, 2, 1] = (codes[:, 1, 2, 1] + 1) % CODES  # frame 1, row 2, column 1: flat position 16 + 9
    j = GRID * GRID + 2 * GRID + 1
    with torch.no_grad():
        before, after = model.logits(codes, task).flatten(1, 3), model.logits(changed, task).flatten(1, 3)
    assert torch.allclose(before[:, :j + 1], after[:, :j + 1], atol=1e-6)  # position j reads the codes before j
    assert not torch.allclose(before[:, j + 1:], after[:, j + 1:])  # and the later positions read it
    with torch.no_grad():
        ll, ll_changed = model.log_likelihood(codes, task), model.log_likelihood(changed, task)
    assert torch.allclose(ll[:, 0], ll_changed[:, 0]) and not torch.allclose(ll[:, 1], ll_changed[:, 1])
    with torch.no_grad():  # the task conditions every position, the first frame's too
        assert not torch.allclose(model.log_likelihood(codes, task.flip(0))[:, 0], ll[:, 0])


def test_the_reward_of_a_model_whose_distribution_is_fixed():
    model = tiny_viper()
    logits = torch.linspace(-2.0, 2.0, CODES)
    with torch.no_grad():  # every code ~ softmax(logits), whatever came before
        model.video.head.weight.zero_()
        model.video.head.bias.copy_(logits)
    log_p = logits.log_softmax(0)
    codes = random_codes(3, 2)
    expected = log_p[codes].flatten(2).sum(-1)  # ln p(frame) = sum of its 16 codes' log-probabilities
    assert torch.allclose(model.log_likelihood(codes).detach(), expected, atol=1e-4)
    frames = bars(7)
    reward = model.score_sequence(frames)
    assert reward.shape == (7,)
    assert torch.allclose(reward, log_p[model.tokenizer.encode(frames)].flatten(1).sum(-1), atol=1e-4)
    with torch.no_grad():
        model.video.head.bias.zero_()  # uniform: ln p(frame) = -16 ln 16
    assert torch.allclose(model.score_sequence(frames), torch.full((7,), -GRID * GRID * math.log(CODES)), atol=1e-4)


@pytest.mark.parametrize("length,context,skip", [(9, 3, 1), (9, 3, 2), (2, 3, 1), (5, 1, 1), (7, 4, 3)])
def test_every_frame_is_scored_behind_its_predecessors(length, context, skip):
    model = tiny_viper(context=context, frame_skip=skip)
    frames, where = model.windows(length)
    assert frames.shape[1] == context and int(frames.max()) < length
    for t in range(length):
        w, p = where[t].tolist()
        assert frames[w, p] == t
        assert frames[w, :p].tolist() == [t - skip * (p - k) for k in range(p)]  # its p predecessors, in order
        assert p == min(context - 1, t // skip)  # as many as the episode has, up to context - 1


def test_save_load_score_round_trip(tmp_path):
    model = tiny_viper(tasks=("a", "b"), novelty_weight=0.5)
    frames = bars(6)
    path = save_model(model, tmp_path / "viper.pth")
    loaded = load_model(path)
    assert type(loaded) is ViperModel and loaded.config == model.config and loaded.novelty is not None
    assert torch.equal(loaded.score_sequence(frames, "b"), model.score_sequence(frames, "b"))
    assert not torch.equal(model.score_sequence(frames, "a"), model.score_sequence(frames, "b"))
    with pytest.raises(ValueError, match="name one of"):
        model.score_sequence(frames)
    with pytest.raises(CheckpointError, match="not a reward model"):  # until its RL reward function lands
        load_reward_model(path)
    assert ViperModel.scores == SEQUENCES and SEQUENCES in SCORES and "viper" in MODELS and "viper" not in METHODS


def test_the_novelty_term_adds_beta_times_rnd_and_training_lowers_it():
    model = tiny_viper(novelty_weight=2.0)
    frames = bars(6)
    codes = model.tokenizer.encode(frames)
    vectors = model.tokenizer.lookup(codes)
    plain = tiny_viper().score_codes(codes)  # the same seed: the same video model, no novelty
    with torch.no_grad():
        assert torch.allclose(model.score_codes(codes), plain + 2.0 * model.novelty(vectors), atol=1e-5)
    optimizer = torch.optim.Adam(model.novelty.predictor.parameters(), lr=1e-3)
    start = float(model.novelty(vectors).mean().detach())
    for _ in range(20):
        loss = model.novelty(vectors).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model.novelty(vectors).mean().detach()) < 0.5 * start
    assert all(p.grad is None for p in model.novelty.target.parameters())  # the target stays fixed


# ---------------------------------------------------------------------------------------- training loop
@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("viper")
    data = write_demos(root / "mw", n_train=2, n_test=1, length=8)
    return data, pretrain(tiny_run(data, root / "tok", steps=2, final_eval=False))


def viper_run(data: Path, out: Path, tokenizer: Path | None, **kw) -> TrainConfig:
    base = dict(data_path=str(data), output_dir=str(out), method="viper", tokenizer=str(tokenizer) if tokenizer else None,
                image_size=32, batch_size=4, steps=4, warmup_steps=1, num_workers=0, progress_bar=False,
                precision="fp32", log_every=1, final_eval=False,
                method_config=dict(context=3, layers=1, heads=2, width=16, mlp_width=32))
    return TrainConfig(**{**base, **kw})


def test_resume_is_exact_and_a_tokenizer_is_required(trained_tokenizer, tmp_path):
    data, tokenizer = trained_tokenizer
    straight = pretrain(viper_run(data, tmp_path / "a", tokenizer))
    pretrain(viper_run(data, tmp_path / "b", tokenizer, steps=2))
    resumed = pretrain(viper_run(data, tmp_path / "b", tokenizer, resume="auto"))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert torch.equal(a["state_dict"]["tokenizer.codebook.vectors"],  # frozen: the tokenizer's own weights
                       torch.load(tokenizer, weights_only=True)["state_dict"]["codebook.vectors"])
    with pytest.raises(ValueError, match="give --tokenizer CKPT"):
        pretrain(viper_run(data, tmp_path / "c", None))


def test_main_py_trains_viper_in_a_subprocess(trained_tokenizer, tmp_path):
    data, tokenizer = trained_tokenizer
    out = tmp_path / "o"
    run = subprocess.run([sys.executable, "Video2Reward/main.py", "--method", "viper", "--tokenizer", str(tokenizer),
                          "--data_path", str(data), "--output_dir", str(out), "--steps", "3", "--image_size", "32",
                          "--batch_size", "4", "--num_workers", "0", "--no_progress_bar", "--precision", "fp32",
                          "--method_config", "context=3", "layers=1", "heads=2", "width=16", "mlp_width=32"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x 4 windows" in run.stdout and "order gap" in run.stdout
    model = load_model(out / "checkpoint_last.pth")
    assert type(model) is ViperModel and model.config.tasks == ("drawer-open", "reach") and model.config.context == 3
    assert model.tokenizer.config == TokenizerModel(TokenizerConfig(**TINY)).config
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"drawer-open", "reach"} and "order_gap" in metrics["overall"]
    assert (out / "log_likelihood.png").is_file()
    assert model.score_sequence(bars(5), "reach").shape == (5,)
