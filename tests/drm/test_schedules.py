import math

import pytest

from drm.schedules import discount_at, discount_schedule, nstep_at, nstep_schedule, schedule


def test_constant_and_numeric_strings():
    assert schedule(0.2, 10) == 0.2
    assert schedule("0.3", 10**7) == 0.3
    assert schedule(1, 0) == 1.0


def test_linear():
    spec = "linear(1.0,0.1,500000)"
    assert schedule(spec, 0) == pytest.approx(1.0)
    assert schedule(spec, 250_000) == pytest.approx(0.55)
    assert schedule(spec, 500_000) == pytest.approx(0.1)
    assert schedule(spec, 10**8) == pytest.approx(0.1)
    assert schedule("linear( 1.0 , 0.1 , 5e5 )", 250_000) == pytest.approx(0.55)


def test_step_linear():
    spec = "step_linear(1.0,0.5,100,0.1,200)"
    assert schedule(spec, 0) == pytest.approx(1.0)
    assert schedule(spec, 50) == pytest.approx(0.75)
    assert schedule(spec, 100) == pytest.approx(0.5)
    assert schedule(spec, 200) == pytest.approx(0.3)
    assert schedule(spec, 10**6) == pytest.approx(0.1)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule("cosine(1,0,10)", 0)


def test_nstep_schedule_values():
    assert nstep_schedule(0) == 10  # the released config's constant
    assert nstep_schedule(10**9) == 3
    # 3 + 7 exp(-1) = 5.575
    assert nstep_schedule(1_000_000) == 5
    # 3 + 7 exp(-t/1e6) crosses 10 -> 9 right after t = 0
    assert nstep_schedule(1) == 9
    assert all(nstep_schedule(t) >= nstep_schedule(t + 50_000) for t in range(0, 5_000_000, 50_000))


def test_discount_schedule_values():
    assert discount_schedule(0) == pytest.approx(0.97)  # the released config's constant
    assert discount_schedule(10**9) == pytest.approx(0.997)
    expected = 0.997 - 0.02 * math.exp(-1.0) - 0.007 * math.exp(-500_000 / 1.6e6)
    assert discount_schedule(500_000) == pytest.approx(expected)


def test_selectors():
    assert nstep_at("schedule", 0) == 10
    assert nstep_at(4, 10**6) == 4
    assert nstep_at("5", 0) == 5
    assert discount_at("schedule", 10**9) == pytest.approx(0.997)
    assert discount_at(0.99, 0) == 0.99
    with pytest.raises(ValueError):
        nstep_at(0, 0)
    with pytest.raises(ValueError):
        discount_at(1.5, 0)
