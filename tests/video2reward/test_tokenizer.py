"""VIPER's frame tokenizer (video2reward.methods.tokenizer): the round trip frames -> codes -> frames
on a tiny set, the codebook's moving averages and restarts by hand, training lowering the loss,
save / load giving identical codes, and ``main.py --method tokenizer`` with its evaluation and resume."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video2reward import load_model, load_reward_model, save_model
from video2reward.checkpoint import CheckpointError
from video2reward.data import VideoDataset
from video2reward.methods import METHODS, MODELS, TRAINABLE, build_model
from video2reward.methods.tokenizer import Codebook, TokenizerConfig, TokenizerModel, psnr
from video2reward.train import TrainConfig, pretrain

from .test_train import progress_frame, write_demos

REPO = Path(__file__).resolve().parents[2]
SIZE = 32  # the frames' size (the demos'); the tokenizer resizes them to RESOLUTION
RESOLUTION = 16
TINY = dict(image_size=SIZE, resolution=RESOLUTION, latent_size=4, codes=16, code_dim=8, channels=(8, 16, 16))

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_tokenizer(**fields) -> TokenizerModel:
    torch.manual_seed(0)
    return TokenizerModel(TokenizerConfig(**{**TINY, **fields}))


def bars(n: int = 12) -> torch.Tensor:
    """uint8 frames ``(n, 3, SIZE, SIZE)``: a white bar growing over a coloured background."""
    return torch.stack([torch.from_numpy(progress_frame(i / (n - 1))).permute(2, 0, 1) for i in range(n)])


def test_round_trip_shapes_and_code_range():
    model = tiny_tokenizer()
    frames = bars()
    codes = model.encode(frames, batch_size=5)
    assert codes.shape == (12, 4, 4) and codes.dtype == torch.int64 and model.latent_shape == (4, 4)
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    decoded = model.decode(codes)
    assert decoded.shape == (12, 3, RESOLUTION, RESOLUTION) and decoded.dtype == torch.uint8
    original, same_codes, recon = model.reconstruct(frames)
    assert torch.equal(same_codes, codes) and torch.equal(recon, decoded)
    assert original.shape == (12, 3, RESOLUTION, RESOLUTION)  # the frames as the model sees them, resized
    assert model.lookup(codes).shape == (12, 4, 4, 8)
    assert model.encode(frames[:0]).shape == (0, 4, 4) and model.decode(codes[:0]).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        model.encode(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, 4, 4\)"):
        model.decode(codes[:, :2])


def test_config_checks_the_levels():
    assert TokenizerConfig().image_size == 64 and TokenizerConfig(image_size=84).resolution == 64
    with pytest.raises(ValueError, match="power of 2"):
        TokenizerConfig(resolution=64, latent_size=6)
    with pytest.raises(ValueError, match="one width per level"):
        TokenizerConfig(channels=(32, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        TokenizerConfig(channels=(12, 64, 64, 128))


def test_codebook_moving_averages_and_restarts_by_hand():
    book = Codebook(codes=3, dim=2, decay=0.5, dead_threshold=1.0)
    book.vectors.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-5.0, 5.0]]))
    book.count.fill_(2.0)
    book.total.copy_(book.vectors * 2)
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [9.0, 11.0], [11.0, 9.0]])
    index = book.nearest(z)
    assert index.tolist() == [0, 0, 1, 1]
    torch.manual_seed(0)
    book.update(z, index)
    # code 0: count 0.5*2 + 0.5*2 = 2, total 0.5*0 + 0.5*(2, 0) = (1, 0) -> vector (0.5, 0)
    assert torch.allclose(book.count[:2], torch.tensor([2.0, 2.0]))
    assert torch.allclose(book.vectors[0], torch.tensor([0.5, 0.0]))
    assert torch.allclose(book.vectors[1], torch.tensor([10.0, 10.0]))
    # code 2: no vector, count 0.5*2 = 1.0 -> still alive at the threshold; one more idle step kills it
    assert book.count[2] == 1.0 and torch.equal(book.vectors[2], torch.tensor([-5.0, 5.0])) and book.restarted == 0
    book.update(z, index)
    assert book.restarted == 1 and any(torch.equal(book.vectors[2], row) for row in z)  # on a latent of the batch
    assert book.count[2] == 1.0 and torch.equal(book.total[2], book.vectors[2])


def test_quantiser_is_straight_through_with_commitment():
    book = Codebook(codes=4, dim=8, decay=0.9, dead_threshold=0.0).eval()
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    z_q, codes, commitment = book(z)
    assert torch.allclose(z_q, book.vectors[codes].permute(0, 3, 1, 2))
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # the gradient passes the quantiser unchanged
    assert torch.isclose(commitment, (z.detach() - z_q.detach()).square().mean())


def test_a_few_steps_lower_the_reconstruction_loss():
    model = tiny_tokenizer().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    frames = bars()
    losses = []
    for _ in range(30):
        loss, metrics = model.loss(frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(metrics["l1"]))
    assert losses[-1] < 0.6 * losses[0]
    assert set(metrics) >= {"l1", "gradient", "commitment", "psnr", "code_usage", "perplexity", "restarted"}


def test_the_generator_term_reaches_the_autoencoder_and_not_the_critic():
    model = tiny_tokenizer(adversarial_weight=0.5).train()
    start = copy.deepcopy(model.state_dict())
    grads = {}
    for weight in (0.5, 5.0):  # the same step with two weights of the generator's term
        model.load_state_dict(start)
        model.zero_grad()
        model.config.adversarial_weight = weight
        torch.manual_seed(1)
        loss, metrics = model.loss(bars(4))
        loss.backward()
        grads[weight] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert {"adversarial", "discriminator"} <= set(metrics)
    critic = [n for n in grads[0.5] if n.startswith("discriminator.")]
    assert critic and all(torch.equal(grads[0.5][n], grads[5.0][n]) for n in critic)
    assert not torch.allclose(grads[0.5]["decoder.0.weight"], grads[5.0]["decoder.0.weight"])


def test_save_load_gives_identical_codes_and_is_not_a_reward(tmp_path):
    model = tiny_tokenizer()
    frames = bars()
    model.train()
    model.loss(frames)  # one training forward: the codebook leaves its initial state
    path = save_model(model, tmp_path / "tok.pth")
    loaded = load_model(path)
    assert type(loaded) is TokenizerModel and loaded.config == model.config and not loaded.training
    assert torch.equal(loaded.encode(frames), model.encode(frames))
    assert torch.equal(loaded.decode(model.encode(frames)), model.decode(model.encode(frames)))
    with pytest.raises(CheckpointError, match="holds a tokenizer model, which is not a reward model"):
        load_reward_model(path)
    assert "tokenizer" in MODELS and "tokenizer" in TRAINABLE and "tokenizer" not in METHODS
    assert build_model("tokenizer", TINY).config == model.config


def test_evaluation_reports_psnr_usage_and_writes_the_figure(tmp_path):
    model = tiny_tokenizer()
    trajs = [bars(6), bars(9)]
    result = model.evaluate(VideoDataset.from_trajectories(trajs, ["a", "b"]), tmp_path, split="test")
    assert set(result.metrics) == {"psnr", "code_usage", "perplexity", "psnr/a", "psnr/b"}
    assert 0 < result.metrics["code_usage"] <= 1 and set(result.provenance) == {"heldout_psnr", "heldout_code_usage"}
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["split"] == "test" and written["overall"]["frames"] == 15 and "overall" in result.table
    from PIL import Image
    assert Image.open(tmp_path / "reconstructions.png").size == (8 * RESOLUTION * 2, 2 * RESOLUTION * 2)
    same = torch.full((2, 3, 4, 4), 7, dtype=torch.uint8)
    assert psnr(same, same).tolist() == [100.0, 100.0] and psnr(same, same + 1)[0] == pytest.approx(48.13, abs=0.01)


# ---------------------------------------------------------------------------------------- training loop
@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("tok") / "mw", n_train=2, n_test=1, length=8)


def tiny_run(data: Path, out: Path, **kw) -> TrainConfig:
    fields = {k: v for k, v in TINY.items() if k != "image_size"}
    base = dict(data_path=str(data), output_dir=str(out), method="tokenizer", image_size=SIZE, batch_size=4, steps=4,
                warmup_steps=1, num_workers=0, progress_bar=False, precision="fp32", log_every=1, method_config=fields)
    return TrainConfig(**{**base, **kw})


def test_resume_is_exact(demos, tmp_path):
    straight = pretrain(tiny_run(demos, tmp_path / "a", final_eval=False))
    pretrain(tiny_run(demos, tmp_path / "b", steps=2, final_eval=False))
    resumed = pretrain(tiny_run(demos, tmp_path / "b", resume="auto", final_eval=False))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())


def test_main_py_trains_the_tokenizer_in_a_subprocess(demos, tmp_path):
    out = tmp_path / "o"
    run = subprocess.run([sys.executable, "Video2Reward/main.py", "--method", "tokenizer", "--data_path", str(demos),
                          "--output_dir", str(out), "--steps", "3", "--image_size", str(SIZE), "--batch_size", "4",
                          "--num_workers", "0", "--no_progress_bar", "--precision", "fp32", "--log_every", "1",
                          "--eval_every", "2", "--method_config", "resolution=16", "latent_size=4", "codes=16",
                          "code_dim=8", "channels=(8,16,16)"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x 4 frames" in run.stdout and "PSNR" in run.stdout and "codes used" in run.stdout
    model = load_model(out / "checkpoint_last.pth")
    assert type(model) is TokenizerModel and model.config.codes == 16 and model.image_size == SIZE
    ckpt = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert ckpt["step"] == 3 and "heldout_psnr" in ckpt["provenance"] and ckpt["provenance"]["heldout_split"] == "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["psnr"] > 0 and (out / "reconstructions.png").is_file()
    header = (out / "train_log.csv").read_text().splitlines()[0]
    assert header.startswith("step,loss,l1") and "frames_per_s" in header
    assert (out / "eval_log.csv").read_text().splitlines()[0].startswith("step,psnr,code_usage")
