"""Activates tests/gpusim.py in every Python process started with YEXPORT_GPU_SIM set (see gpusim.child_env)."""

import os

if os.environ.get("YEXPORT_GPU_SIM"):
    import gpusim

    gpusim.activate(os.environ["YEXPORT_GPU_SIM"])
