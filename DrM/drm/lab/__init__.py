"""The experiment lab: what runs and judges experiments on top of the RL system, not part of it.

* :mod:`drm.lab.rl_table`: the task x reward_model x seed sweep of ``train_mw.py`` and its report;
* :mod:`drm.lab.eval_data`: the rollout sets a reward model is evaluated on;
* :mod:`drm.lab.eval_suite`: the reward-model evaluation suite (metrics, report, plots).

The modules are not imported here: each pulls in its own heavy dependencies (rliable, torch).
"""
