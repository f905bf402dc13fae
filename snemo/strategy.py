"""Device strategies: one ``tf.distribute`` strategy per process, chosen from the command line.

The flags (see :func:`snemo.cli.add_strategy_flags`) are kept from the original scripts:

* ``--OneDeviceStrategy /gpu:0``: everything on one device;
* ``--MirroredStrategy /gpu:0 /gpu:1 ...``: synchronous data parallelism over local devices;
* ``--MultiWorkerMirroredStrategy``: synchronous data parallelism over several processes (nodes),
  configured from Slurm (``SlurmClusterResolver``) when ``SLURM_JOB_ID`` is set and
  ``SLURM_NTASKS`` > 1, otherwise from the ``TF_CONFIG`` environment variable;
* no flag: ``MirroredStrategy`` over all visible GPUs when there is at least one, else the default
  strategy (CPU).

TensorFlow is imported inside the functions, so modules importing this one stay fast to load.
:func:`import_tensorflow` (called by :func:`make_strategy`, the first TensorFlow work of every
script) keeps TensorFlow's CUDA start-up lines ("failed call to cuInit: ... CUDA error", "Could not
find cuda drivers") off standard error on a machine without an NVIDIA driver, unless a device flag
asks for a GPU; every other line still reaches standard error.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import threading

# Lines TensorFlow prints at start-up where no GPU driver exists (the CUDA ones, and the CPU's oneDNN
# and instruction-set notes, which come before absl's logging starts and so ignore
# TF_CPP_MIN_LOG_LEVEL); harmless there, alarming to read.
STARTUP_NOISE = (b"failed call to cuInit", b"Could not find cuda drivers", b"All log messages before absl::InitializeLog",
              b"cuda_dnn.cc", b"cuda_fft.cc", b"cuda_blas.cc", b"computation_placer.cc",
              b"oneDNN custom operations are on", b"rebuild TensorFlow with the appropriate compiler flags",
              b"This TensorFlow binary is optimized to use available CPU instructions")


class StrategyError(ValueError):
    """A strategy flag names a device that does not exist or a cluster that is not configured."""


def gpu_driver_present() -> bool:
    """True when the machine has an NVIDIA driver (``/dev/nvidia*`` or ``/proc/driver/nvidia``)."""
    return bool(glob.glob("/dev/nvidia*")) or os.path.exists("/proc/driver/nvidia")


def wants_gpu(args) -> bool:
    """True when a device flag of ``args`` names a GPU (``--OneDeviceStrategy /gpu:0``, ``--MirroredStrategy``)."""
    names = [getattr(args, "OneDeviceStrategy", None) or ""] + list(getattr(args, "MirroredStrategy", None) or [])
    return any("gpu" in str(name).lower() for name in names)


@contextlib.contextmanager
def _stderr_without(noise: tuple[bytes, ...]):
    """Forward file descriptor 2 through a pipe, dropping the lines that contain one of ``noise``."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not any(item in line for item in noise):
                    os.write(saved, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        thread.join(timeout=10)
        os.close(saved)


def import_tensorflow(args=None):
    """Import TensorFlow and find its devices; returns the ``tensorflow`` module.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the environment sets it. Without an NVIDIA driver
    (:func:`gpu_driver_present`) and when no device flag of ``args`` asks for a GPU, the CUDA and
    CPU start-up lines (:data:`STARTUP_NOISE`) are dropped from standard error; nothing else is.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if gpu_driver_present() or wants_gpu(args):
        import tensorflow as tf

        return tf
    with _stderr_without(STARTUP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def _device_key(name: str) -> tuple[str, int]:
    """("GPU", 1) from "/gpu:1", "GPU:1", "/device:GPU:1" or "/job:localhost/replica:0/task:0/device:GPU:1"."""
    import tensorflow as tf

    try:
        spec = tf.DeviceSpec.from_string(name if name.startswith("/") else "/" + name)
    except (ValueError, TypeError) as err:
        raise StrategyError(f"'{name}' is not a device name like /gpu:0 or /cpu:0 ({err})") from None
    if spec.device_type is None:
        raise StrategyError(f"'{name}' is not a device name like /gpu:0 or /cpu:0")
    return spec.device_type.upper(), int(spec.device_index or 0)


def check_devices(names) -> list[str]:
    """Check that every device of ``names`` exists; return them as "/device:TYPE:i" strings.

    Raises :class:`StrategyError` naming the missing device and the devices that exist.
    """
    import tensorflow as tf

    logical = tf.config.list_logical_devices()
    available = {_device_key(d.name): d.name for d in logical}
    out = []
    for name in names:
        key = _device_key(name)
        if key not in available:
            have = ", ".join(f"/{t.lower()}:{i}" for t, i in sorted(available)) or "none"
            raise StrategyError(f"device {name} does not exist on this machine; available: {have}")
        out.append(f"/device:{key[0]}:{key[1]}")
    if len(set(out)) != len(out):
        raise StrategyError(f"device list {list(names)} names a device twice")
    return out


def _slurm_multi_task() -> bool:
    """True when running inside a Slurm job step with more than one task."""
    if not os.environ.get("SLURM_JOB_ID"):
        return False
    try:
        return int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_NPROCS", "1"))) > 1
    except ValueError:
        return False


def make_strategy(args):
    """Build the ``tf.distribute.Strategy`` selected by the parsed flags.

    ``args`` has ``OneDeviceStrategy`` (device name or None), ``MirroredStrategy`` (list of device
    names or None) and ``MultiWorkerMirroredStrategy`` (bool). Must be called once per process,
    before any other TensorFlow work (a multi-worker strategy has to be created first).
    Raises :class:`StrategyError` for a device that does not exist or a missing cluster set-up.
    """
    tf = import_tensorflow(args)

    one = getattr(args, "OneDeviceStrategy", None)
    mirrored = getattr(args, "MirroredStrategy", None)
    multi = getattr(args, "MultiWorkerMirroredStrategy", False)
    if multi:
        if _slurm_multi_task():
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        elif os.environ.get("TF_CONFIG"):
            try:
                json.loads(os.environ["TF_CONFIG"])
            except json.JSONDecodeError as err:
                raise StrategyError(f"TF_CONFIG is not valid JSON ({err})") from None
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        else:
            # One worker: legal (the strategy then behaves as a local one), useful for tests.
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if one is not None:
        (device,) = check_devices([one])
        return tf.distribute.OneDeviceStrategy(device)
    if mirrored is not None:
        if not mirrored:
            raise StrategyError("--MirroredStrategy needs at least one device, e.g. /gpu:0 /gpu:1")
        return tf.distribute.MirroredStrategy(check_devices(mirrored))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def worker_shard(strategy) -> tuple[int, int]:
    """(worker index, worker count) of this process, for the loaders' ``shard=`` argument.

    (0, 1) for every single-process strategy.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 0, 1
    spec = resolver.cluster_spec().as_dict()
    if not spec:
        return 0, 1
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    # Workers in a stable order: chief first (if any), then the workers.
    order = [("chief", i) for i in range(len(spec.get("chief", [])))]
    order += [("worker", i) for i in range(len(spec.get("worker", [])))]
    if (task_type, task_id) not in order:
        return 0, 1
    return order.index((task_type, task_id)), len(order)


def is_chief(strategy) -> bool:
    """True for the process that writes outputs: the only one, the 'chief' task, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    spec = resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in spec


def describe(strategy) -> str:
    """One line naming the strategy, its replicas and this process's worker index."""
    index, count = worker_shard(strategy)
    name = type(strategy).__name__
    text = f"{name}, {strategy.num_replicas_in_sync} replica(s)"
    if count > 1:
        text += f", worker {index} of {count}"
    return text


def sum_over_workers(strategy, array):
    """Element-wise sum of a NumPy integer array over all workers of ``strategy`` (unchanged in one process)."""
    workers = worker_shard(strategy)[1]
    if workers <= 1:
        return array
    import numpy as np
    import tensorflow as tf

    value = tf.constant(array.astype(np.float64))
    replicas = strategy.num_replicas_in_sync

    @tf.function(autograph=False)
    def total():
        # Every replica contributes value / (local replicas) so the sum counts each worker once.
        per_replica = strategy.run(lambda: value * (workers / replicas))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return np.rint(total().numpy()).astype(np.int64)
