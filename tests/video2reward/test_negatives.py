"""Pretraining negatives: the kinds, the batches, the preference loss, and the option off."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward.data import DataError, load_dataset
from video2reward.methods.progressor import NegativeTripletSampler
from video2reward.negatives import (NOT_PROGRESS, QUALITY, NegativeSet, negative_losses, preference_loss,
                                    preference_pairs, rewind_order)
from video2reward.train import pretrain
from video2reward.triplets import TripletSampler

from .test_train import SIZE, progress_frame, tiny, write_demos


def write_negatives(root, kind, tasks=("reach", "drawer-open"), n=2, length=10):
    """A stored kind in the generator's layout: NEG/<kind>/<task>/train/<i>/<t>.png (all grey frames)."""
    for task in tasks:
        for i in range(n):
            folder = root / kind / task / "train" / str(i)
            folder.mkdir(parents=True, exist_ok=True)
            for t in range(length):
                Image.fromarray(np.full((SIZE, SIZE, 3), 90 + i, np.uint8)).save(folder / f"{t}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("neg")
    demos = write_demos(root / "demos")
    write_negatives(root / "neg", "parked")
    write_negatives(root / "neg", "noise-0.3")
    return demos, root / "neg"


def test_rewind_order_goes_forward_then_back():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        order = rewind_order(10, g)
        t = int(order.argmax())
        assert torch.equal(order[:t + 1], torch.arange(t + 1)) and 1 <= t <= 9
        back = order[t + 1:]
        assert 1 <= len(back) <= t and torch.equal(back, torch.arange(t - 1, t - 1 - len(back), -1))


def test_preference_loss_by_hand():
    better, worse = torch.tensor([0.8, 0.3]), torch.tensor([0.2, 0.5])
    by_hand = (math.log(1 + math.exp(-(0.8 - 0.2) / 0.1)) + math.log(1 + math.exp(-(0.3 - 0.5) / 0.1))) / 2
    assert preference_loss(better, worse, 0.1).item() == pytest.approx(by_hand, rel=1e-6)


def test_preference_pairs_rank_within_a_task():
    quality = torch.tensor([2, 0, 1])  # noise-0.3 and random of task 0, noise-1.0 of task 1
    task = torch.tensor([0, 0, 1])
    better, worse = preference_pairs(quality, task)
    pairs = set(zip(better.tolist(), worse.tolist()))
    own = {(3, 0), (4, 1), (5, 2)}  # every negative below its own expert (rows 3..5)
    assert own <= pairs
    assert (0, 1) in pairs and (3, 1) in pairs and (4, 0) in pairs  # noise-0.3 > random; an expert of its task
    assert not any(task[b % 3] != task[w % 3] for b, w in pairs)  # never across tasks
    assert len(pairs) == len(better)  # each pair once


def test_a_negative_batch_holds_kinds_placements_and_goals(data):
    demos, neg = data
    expert = load_dataset(demos, "train", SIZE, verbose=False)
    negatives = NegativeSet(expert, neg)
    assert set(negatives.stored) == {"parked", "noise-0.3"} and set(negatives.made) == {"rewound", "reversed", "other-task"}
    batch = negatives.sample(64, 4, torch.Generator().manual_seed(1))
    assert batch.frames.shape == (128, 5, 3, SIZE, SIZE) and batch.quality.shape == batch.task.shape == (64,)
    assert set(batch.quality.tolist()) <= set(QUALITY.values()) and batch.not_progress.any() and not batch.not_progress.all()
    for i in range(64):  # column K: the goal of the negative's task, the last frame of its expert
        expert_row = batch.frames[64 + i]
        assert torch.equal(batch.frames[i, -1], expert_row[-1])
        task = expert.task_names[int(batch.task[i])]
        lasts = [expert.trajectory(j)[-1] for j in range(len(expert)) if expert.tasks[j] == task]
        assert any(torch.equal(expert_row[-1], last) for last in lasts)
    with pytest.raises(DataError, match="no 'random' negatives"):
        NegativeSet(expert, neg, kinds=["random"])
    with pytest.raises(DataError, match="unknown negative kind"):
        NegativeSet(expert, neg, kinds=["lazy"])


def test_losses_push_not_progress_frames_down_and_rank_trajectories(data):
    demos, neg = data
    expert = load_dataset(demos, "train", SIZE, verbose=False)
    batch = NegativeSet(expert, neg).sample(16, 4, torch.Generator().manual_seed(2))
    mu = torch.full((32, 4), 0.6, requires_grad=True)
    sigma = torch.full((32, 4), 0.1)
    frame, pref = negative_losses(mu, sigma, batch, "low", 0.5, 0.1)
    (frame + pref).backward()
    grad = mu.grad[:16, 1:]
    assert (grad[batch.not_progress] > 0).all()  # descending lowers mu on not-progress frames
    assert (mu.grad[16:, 1:] < 0).all()  # and raises the experts' scores
    assert pref.item() == pytest.approx(math.log(2), rel=1e-5)  # equal scores: every pair at logit 0


def test_the_option_off_leaves_the_triplets_as_they_were(data):
    """With negatives the triplets are drawn first, from the same generator: the same as without."""
    demos, neg = data
    expert = load_dataset(demos, "train", SIZE, verbose=False)
    args = (expert, 32, True, None, 0.025, True, 4, 2, True, 7, 0.0)
    plain, with_negatives = TripletSampler(*args), NegativeTripletSampler(NegativeSet(expert, neg), 4, 4, *args)
    a, b = plain.sample_at(5), with_negatives.sample_at(5)
    assert a.negatives is None and b.negatives is not None
    for x, y in zip(a[:-1], b[:-1]):
        assert torch.equal(x, y)


def test_pretraining_with_negatives_runs_logs_and_records_its_settings(data, tmp_path):
    demos, neg = data
    path = pretrain(tiny(demos, tmp_path / "run", negatives=str(neg), negative_trajs=4, negative_frames=3,
                         preference_weight=0.5, final_eval=False))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["train_config"]["negatives"] == str(neg) and ckpt["train_config"]["preference_weight"] == 0.5
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert "preference" in log[0] and "negative_frames" in log[0]
