"""Step-dependent hyper-parameters: the exploration-noise schedule and the Meta-World n-step /
discount schedules.

All steps are *agent* steps (one agent step = ``action_repeat`` env steps).

Exploration noise (DrQ-v2 syntax, a string or a number):

- ``0.2`` or ``"0.2"``: constant;
- ``"linear(init,final,duration)"``: linear from ``init`` at step 0 to ``final`` at ``duration``,
  constant afterwards;
- ``"step_linear(init,final1,duration1,final2,duration2)"``: ``init -> final1`` over
  ``duration1`` steps, then ``final1 -> final2`` over the next ``duration2`` steps.

Meta-World n-step return length and discount (the released PROGRESSOR config meant these but never
applied them; it ran with n=10, gamma=0.97 throughout, which is what the schedules give at t=0):

- ``nstep(t) = floor(3 + 7 exp(-t / 1e6))``: 10 at the start, 3 in the limit;
- ``discount(t) = 0.997 - 0.02 exp(-t / 5e5) - 0.007 exp(-t / 1.6e6)``: 0.97 -> 0.997.

:func:`nstep_at` / :func:`discount_at` select between those schedules (config value
``"schedule"``) and constants (an int / a float).
"""
from __future__ import annotations

import math
import re

SCHEDULE = "schedule"  # config value that selects the Meta-World n-step / discount schedule

_NUMBER = r"\s*([-+0-9.eE]+)\s*"
_LINEAR = re.compile(rf"linear\({_NUMBER},{_NUMBER},{_NUMBER}\)")
_STEP_LINEAR = re.compile(rf"step_linear\({_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\)")


def _ramp(start: float, end: float, step: float, duration: float) -> float:
    frac = min(max(step / duration, 0.0), 1.0) if duration > 0 else 1.0
    return start + frac * (end - start)


def schedule(spec: str | float | int, step: int) -> float:
    """Value of the schedule ``spec`` (see the module docstring) at agent step ``step``."""
    if isinstance(spec, (int, float)):
        return float(spec)
    text = spec.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if match := _LINEAR.fullmatch(text):
        init, final, duration = (float(g) for g in match.groups())
        return _ramp(init, final, step, duration)
    if match := _STEP_LINEAR.fullmatch(text):
        init, final1, duration1, final2, duration2 = (float(g) for g in match.groups())
        if step <= duration1:
            return _ramp(init, final1, step, duration1)
        return _ramp(final1, final2, step - duration1, duration2)
    raise ValueError(f"unknown schedule {spec!r}: use a number, 'linear(a,b,n)' or "
                     "'step_linear(a,b,n1,c,n2)'")


def nstep_schedule(step: int) -> int:
    """Meta-World n-step return length at agent step ``step``: ``floor(3 + 7 exp(-t/1e6))``."""
    return int(math.floor(3.0 + 7.0 * math.exp(-step / 1e6)))


def discount_schedule(step: int) -> float:
    """Meta-World discount at agent step ``step``: ``0.997 - 0.02 e^(-t/5e5) - 0.007 e^(-t/1.6e6)``."""
    return 0.997 - 0.02 * math.exp(-step / 5e5) - 0.007 * math.exp(-step / 1.6e6)


def nstep_at(spec: int | str, step: int) -> int:
    """n-step length: ``spec`` is an int (constant) or ``"schedule"`` (:func:`nstep_schedule`)."""
    if isinstance(spec, str) and spec.strip() == SCHEDULE:
        return nstep_schedule(step)
    n = int(spec)
    if n < 1 or n != float(spec):
        raise ValueError(f"nstep must be a positive integer or {SCHEDULE!r}, got {spec!r}")
    return n


def discount_at(spec: float | str, step: int) -> float:
    """Discount: ``spec`` is a float (constant) or ``"schedule"`` (:func:`discount_schedule`)."""
    if isinstance(spec, str) and spec.strip() == SCHEDULE:
        return discount_schedule(step)
    gamma = float(spec)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"discount must lie in [0, 1] or be {SCHEDULE!r}, got {spec!r}")
    return gamma
