import os

import pytest

# Headless MuJoCo through Mesa's EGL; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture()
def one_thread():
    """One torch thread for tests of tiny networks: a second intra-op thread only adds waiting,
    badly so on a busy 2-core CPU."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
