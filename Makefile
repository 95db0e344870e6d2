# Two commands do everything on a fresh machine:
#   make demo   - install, then run the main job (toy task: demos -> reward pretraining -> RL)
#   make test   - install, then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: setup test test-fast demo bench clean

$(VENV)/.installed: requirements.txt Video2Reward/pyproject.toml DrM/pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	$(PY) DrM/train_mw.py task=toy-reach

clean:
	rm -rf $(VENV)
