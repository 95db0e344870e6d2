"""FrameTable: per-(episode, step) rows stored and looked up a batch at a time."""
import pytest
import torch

from video2reward.frame_table import FrameTable


def keys(*pairs):
    t = torch.tensor(pairs, dtype=torch.int64)
    return t[:, 0], t[:, 1]


def test_get_before_any_put_finds_nothing():
    table = FrameTable(1000)
    rows, found = table.get(*keys((0, 0), (3, 7)))
    assert rows is None and not found.any() and len(table) == 0


def test_put_then_get_returns_the_rows_stored_and_flags_the_rest():
    table = FrameTable(10_000)
    table.put(*keys((5, 0), (5, 1), (6, 3)), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    rows, found = table.get(*keys((6, 3), (5, 2), (5, 0), (4, 0), (5, 1)))
    assert found.tolist() == [True, False, True, False, True]
    assert rows[found].tolist() == [[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]
    assert len(table) == 3


def test_growing_past_every_edge_keeps_what_was_stored():
    table = FrameTable(100_000)
    table.put(*keys((10, 2)), torch.tensor([1.0]))
    table.put(*keys((12, 40)), torch.tensor([2.0]))  # more episodes and longer ones
    table.put(*keys((3, 1)), torch.tensor([3.0]))  # an older episode than the first
    table.put(*keys((10, 2)), torch.tensor([4.0]))  # overwritten
    rows, found = table.get(*keys((10, 2), (12, 40), (3, 1), (11, 0)))
    assert found.tolist() == [True, True, True, False]
    assert rows[:3].tolist() == [4.0, 2.0, 3.0]
    k, r = table.items()
    assert sorted(zip(k.tolist(), r.tolist())) == [([3, 1], 3.0), ([10, 2], 4.0), ([12, 40], 2.0)]


def test_beyond_max_entries_it_starts_over_with_the_new_keys():
    table = FrameTable(max_entries=50)
    table.put(*keys((0, 9)), torch.tensor([1.0]))  # 1 x 10 slots
    table.put(*keys((8, 5)), torch.tensor([2.0]))  # would span 9 x 10 = 90 > 50: dropped whole
    rows, found = table.get(*keys((0, 9), (8, 5)))
    assert found.tolist() == [False, True] and rows[1].item() == 2.0
    table.put(*keys((0, 0), (100, 0)), torch.tensor([1.0, 1.0]))  # the keys alone exceed it: nothing kept
    assert len(table) == 0


def test_items_and_load_round_trip_dtype_and_shape():
    table = FrameTable(10_000)
    feats = torch.randn(4, 3).to(torch.bfloat16)
    table.put(*keys((2, 0), (2, 1), (7, 5), (9, 0)), feats)
    k, r = table.items()
    other = FrameTable(10_000)
    other.load(k, r)
    rows, found = other.get(*keys((9, 0), (2, 0), (7, 5), (2, 1)))
    assert found.all() and rows.dtype == torch.bfloat16
    assert torch.equal(rows, feats[[3, 0, 2, 1]])


def test_rows_of_another_shape_are_refused():
    table = FrameTable(1000)
    table.put(*keys((0, 0)), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="do not fit"):
        table.put(*keys((0, 1)), torch.zeros(1, 5))
