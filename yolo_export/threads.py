"""The thread policy, decided here for every runtime.

How many threads: ``--threads N`` / ``threads=N`` > ``YOLO_EXPORT_THREADS`` > half the CPUs this process really has
(its affinity mask, capped by a cgroup CPU quota; at least one), never the machine's core count. Half, because on
this project's 2-CPU machines one thread beat two for batch-1 PyTorch and TorchScript predict both quiet and next
to another PyTorch job (``benchmarks/load.py --quick --tasks predict --old-policy``): a waking or spinning second
thread costs more than it brings on a small classifier, and the other half stays free for the other job.

How idle threads wait: OpenMP's default is to spin (busy-wait) at every barrier. Next to another job that also
spins (any PyTorch process), two pools fight for the same cores and a 1 ms forward pass becomes 70-400 ms
(benchmarks/load.py). ``early_setup`` therefore asks OpenMP to sleep instead (``OMP_WAIT_POLICY=PASSIVE``) unless the
user chose a policy. libgomp reads this once, when it loads (``import torch``): the CLI and ``import yolo_export``
set it in time; a program that imports torch before yolo_export keeps torch's spinning pools, and then the default
falls back to one thread (a single thread never waits at a barrier).

numpy's BLAS pool (OpenBLAS or MKL) is left as it is: no project path makes a BLAS call big enough to wake it
(preprocessing, softmax and the metrics are element-wise numpy; the model's matrix work runs in torch or the
runtime, calibration included). ``benchmarks/load.py --blas`` reads the CPU time of the pool's threads in
predict, val and train, quiet and next to a PyTorch job, and in the int8 exports: 0 ms in every run, and no restart
of the pool after a fork (OpenBLAS starts one only for such a call); limiting it to one thread changed no figure
beyond the run-to-run noise. Capping it would only change the user's own numpy code in the same process.

What only takes effect at start-up: the OpenMP wait policy, torch's inter-op pool size (settable once, before any
inter-op work) and the DataLoader worker count of a running loader. Everything else (torch intra-op threads, each
runtime's session threads) is applied when a model is loaded.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ENV = "YOLO_EXPORT_THREADS"
WAIT_ENV = "OMP_WAIT_POLICY"
CGROUP_ROOT = Path("/sys/fs/cgroup")
ORT_SLEEP = True   # ONNX Runtime's pool threads sleep when idle, like OpenMP's under PASSIVE (benchmarks/load.py)


def _cgroup_quota(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), rounded up; None: no quota."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
        q, p = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if q.is_file() and p.is_file():
            quota, period = int(q.read_text()), int(p.read_text())
            return None if quota <= 0 or period <= 0 else max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may really use: its affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    return max(1, min(n, quota) if quota else n)


def _parse(value, where: str) -> int | None:
    """A thread count as given: 1 to 1024, or 0 for the default (None)."""
    from yolo_export.errors import ArgumentError

    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < 0 or n > 1024:
        raise ArgumentError(f"{where} must be a whole number of threads from 1 to 1024, or 0 for the default "
                            f"(got {value!r})")
    return n or None


def spinning_pools() -> bool:
    """True when torch loaded before anyone chose a wait policy (its pools spin by default). A policy the user chose
    (``OMP_WAIT_POLICY=ACTIVE`` on a dedicated machine, say) is theirs: the default count stays the CPUs."""
    return "torch" in sys.modules and WAIT_ENV not in os.environ


def resolve(threads=None) -> int:
    """Threads for a runtime: the explicit value, else ``YOLO_EXPORT_THREADS``, else the default policy."""
    n = _parse(threads, "--threads") if threads is not None else None
    env = os.environ.get(ENV, "").strip()
    n = n or (_parse(env, ENV) if env else None)
    if n:
        return n
    if spinning_pools():
        return 1
    return default_threads()


def default_threads() -> int:
    """Threads for inference when nobody chose: half the CPUs this process has, at least one."""
    return max(1, available_cpus() // 2)


def early_setup() -> None:
    """Before torch loads: idle OpenMP threads sleep instead of spinning (kept if the user chose a policy)."""
    if "torch" in sys.modules or WAIT_ENV in os.environ:
        return
    os.environ[WAIT_ENV] = "PASSIVE"


def apply_torch(n: int) -> int:
    """Set torch's intra-op threads (and, once, its inter-op pool); returns what torch reports."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # inter-op pool already started: only at start-up
    return torch.get_num_threads()


def loader_workers(workers, threads: int, processes: int = 1) -> int:
    """DataLoader workers per process that never oversubscribe: the CPUs left beside the compute threads."""
    if workers is not None:
        return max(0, int(workers))
    return min(8, max(0, available_cpus() // max(1, processes) - threads))


def train_split(threads, workers, processes: int = 1) -> tuple[int, int]:
    """(torch threads, DataLoader workers) for one training process on the CPU, applied to torch.

    Each worker is a process with one torch thread (the DataLoader sets it), so workers + threads stay within the
    CPUs this process has (shared between ``processes`` DDP ranks on this node). Up to 3 CPUs all go to compute
    (a worker there costs a compute thread); from 4, a quarter of them, at most 8, load data.
    """
    cpus = max(1, available_cpus() // max(1, processes))
    if workers is None:
        workers = 0 if cpus < 4 else min(8, cpus // 4)
    workers = max(0, int(workers))
    env = os.environ.get(ENV, "").strip()
    n = (_parse(threads, "--threads") if threads is not None else None) or (_parse(env, ENV) if env else None)
    return apply_torch(n or (1 if spinning_pools() else max(1, cpus - workers))), workers


def describe() -> dict:
    """The process-level facts every timing output records beside each runtime's own thread count."""
    return {"available_cpus": available_cpus(), "omp_wait_policy": os.environ.get(WAIT_ENV) or "default (spin)",
            "env_threads": os.environ.get(ENV) or None}


def ort_options(opts, threads=None) -> int:
    """Apply the policy to ONNX Runtime ``SessionOptions``: intra-op threads, one inter-op thread (the graph runs
    sequentially), and idle pool threads that sleep instead of spinning. Returns the intra-op count."""
    n = resolve(threads)
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if ORT_SLEEP else "1")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0" if ORT_SLEEP else "1")
    return n


def executorch_threads(threads=None) -> int | None:
    """ExecuTorch's XNNPACK thread pool is process-wide and sized when it starts; returns what it reports.

    It is left as it is: its only resize call is marked unsafe, and resizing a pool that a model has used crashed
    the process (a segmentation fault in the benchmark matrix when the count went from 2 to 1)."""
    resolve(threads)  # a bad --threads is still one line
    try:
        from executorch.extension.pybindings import portable_lib as pl

        return int(pl._threadpool_get_thread_count())
    except (ImportError, AttributeError):
        return None


def tf_threads(tf, threads=None) -> int:
    """TensorFlow (SavedModel, GraphDef): intra-op threads = the policy's count and one inter-op thread, set while
    TF's runtime has not started (process-wide; afterwards TF refuses: only at start-up). Returns the intra-op count
    TF will use: what it reports, or, where it reports 0 ("TF decides"), its default of one thread per CPU in this
    process's affinity mask."""
    n = resolve(threads)
    th = tf.config.threading
    try:
        if th.get_intra_op_parallelism_threads() != n:
            th.set_intra_op_parallelism_threads(n)
        if th.get_inter_op_parallelism_threads() != 1:
            th.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF's runtime already started in this process (an export, an earlier model): it keeps its pools
    got = int(th.get_intra_op_parallelism_threads() or 0)
    if got:
        return got
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
