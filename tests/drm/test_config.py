"""Every task x agent composes, and the seed README's keys are there."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import drm  # noqa: F401  (registers ${drm_root:...})
from drm.config import check_config
from drm.envs import TASKS

CFG_DIR = Path(drm.__file__).resolve().parents[1] / "cfgs"
AGENTS = {"drqv2": False, "drm_mw": True}


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CFG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_task_has_a_config():
    assert sorted(p.stem for p in (CFG_DIR / "task").glob("*.yaml")) == sorted(TASKS)


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_every_task_composes(agent):
    for task in TASKS:
        cfg = compose_cfg(f"task={task}", f"agent={agent}", "seed=3")
        OmegaConf.resolve(cfg)
        assert cfg.task_name == task
        assert cfg.agent.use_drm is AGENTS[agent]
        assert cfg.seed == 3


def test_seed_readme_keys_and_defaults():
    cfg = compose_cfg()
    assert cfg.task_name == "drawer-open" and cfg.reward_model == "ours" and cfg.online_finetune is True
    for key in ("online_finetune_every_step", "exp_data_path"):
        assert key in cfg
    assert Path(cfg.reward.checkpoint) == CFG_DIR.parent / "pretrained_reward" / "all_tasks.pth"
    assert cfg.reward.alpha == 0.4 and cfg.reward.relabel == "window"
    drm_cfg = compose_cfg("agent=drm_mw")
    assert drm_cfg.agent.expectile == 0.9 and drm_cfg.agent.target_lambda == 0.5 and drm_cfg.agent.dropout == 0.01


def test_unknown_task_lists_options():
    with pytest.raises(Exception, match="(?s)Could not find 'task/drawer-opn'.*drawer-open"):
        compose_cfg("task=drawer-opn")


@pytest.mark.parametrize("agent", AGENTS)
def test_state_cpu_preset_composes_and_checks(agent):
    cfg = compose_cfg(f"agent={agent}", "preset=state-cpu", "task=door-open")
    check_config(cfg)
    assert (cfg.obs_type, cfg.agent.hidden_dim, cfg.task_name) == ("state", 256, "door-open")
    assert (cfg.finetune.params, cfg.online_finetune_every_step) == ("head", 10)
    assert compose_cfg(f"agent={agent}").finetune.params == "all"  # the paper's refinement elsewhere
    assert compose_cfg(f"agent={agent}").obs_type == "pixels"
    with pytest.raises(ValueError, match="obs_type"):
        check_config(compose_cfg("obs_type=joints"))
    with pytest.raises(ValueError, match="finetune.params"):
        check_config(compose_cfg("finetune.params=encoder"))
    assert cfg.reward.refresh_budget == 128 and compose_cfg(f"agent={agent}").reward.refresh_budget == 0


def test_reward_form_options_are_checked():
    check_config(compose_cfg("reward.form=delta", "reward.success_bonus=0.5"))
    with pytest.raises(ValueError, match="reward.form='potential'"):
        check_config(compose_cfg("reward.form=potential"))
    with pytest.raises(ValueError, match="reward.success_bonus=-1"):
        check_config(compose_cfg("reward.success_bonus=-1"))
    with pytest.raises(ValueError, match="learned rewards only"):
        check_config(compose_cfg("reward_model=env", "reward.form=delta"))
    with pytest.raises(ValueError, match="learned rewards only"):
        check_config(compose_cfg("reward_model=sparse", "reward.success_bonus=1"))
    with pytest.raises(ValueError, match="finetune.params=head"):
        check_config(compose_cfg("reward.refresh_budget=64"))  # push-back on all weights: features change
    check_config(compose_cfg("reward.refresh_budget=64", "finetune.params=head"))


def test_subgoal_options_are_checked():
    check_config(compose_cfg("reward.subgoals=uvd", "reward.uvd.min_gap=5", "reward.uvd.advance=distance"))
    with pytest.raises(ValueError, match="reward.subgoals='vip'"):
        check_config(compose_cfg("reward.subgoals=vip"))
    with pytest.raises(ValueError, match=r"reward.uvd.distance='l1' .*reward.uvd.threshold=1.5"):
        check_config(compose_cfg("reward.uvd.threshold=1.5", "reward.uvd.distance=l1"))
    with pytest.raises(ValueError, match="learned rewards only"):
        check_config(compose_cfg("reward_model=env", "reward.subgoals=uvd"))


def _flat(node, prefix=""):
    if isinstance(node, dict):
        return {k for key, v in node.items() for k in _flat(v, f"{prefix}{key}.")}
    return {prefix[:-1]}


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_every_key_a_yaml_file_sets_is_declared_in_the_schema(agent):
    from drm.config import _settings
    from drm.schema import AGENTS as SCHEMAS, Config

    declared = {k for k, _, _ in _settings(Config)} | {k for k, _, _ in _settings(SCHEMAS[agent], "agent.")}
    for overrides in (*(f"task={t}" for t in TASKS), "variant=release", "preset=state-cpu"):
        keys = _flat(OmegaConf.to_container(compose_cfg(overrides, f"agent={agent}")))
        assert keys <= declared, (overrides, keys - declared)


def test_types_come_from_the_declarations():
    with pytest.raises(ValueError, match=r"pretrain.tasks='reach' \(want a list of strings\)"):
        check_config(compose_cfg("pretrain.tasks=reach"))
    with pytest.raises(ValueError, match=r"agent.dropout='x' \(want a number\)"):
        check_config(compose_cfg("agent=drm_mw", "agent.dropout=x"))
    check_config(compose_cfg("agent.stddev_schedule=0.2", "pretrain.rank_weight=null", "finetune.crop_scale=[0.5,1]"))
