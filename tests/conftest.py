import os

# Headless MuJoCo through Mesa's EGL; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
