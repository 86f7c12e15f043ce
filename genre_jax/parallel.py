"""All device logic: the 1-D ``data`` mesh, batch/replicated shardings, padding to the device count.

Steps are plain ``jax.jit`` functions (``data_parallel``); placing the batch with ``batch_sharding``
and the train state with ``replicated`` makes XLA run them data-parallel (gradients all-reduced by
the partitioner).
The same code runs on 1 CPU, 8 fake CPU devices, a GPU or a TPU slice.
"""
from __future__ import annotations

import functools
import inspect
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    # Auto axis types keep the classic sharding-propagation behaviour (make_mesh defaults to Explicit).
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Splits ``axis`` (the batch axis: 0, or 1 for an epoch of stacked batches) over the mesh."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch, mesh: Mesh, axis: int = 0):
    """Places a global host batch with its batch ``axis`` (0; 1 for stacked batches) split over the mesh.

    Every host builds the same global batch (same seed, same order) and each device takes its own
    rows of it, so the same call works on one host and on a multi-host slice. The rows a process
    holds come from the sharding, not from ``jax.process_index()``: on a TPU slice ``data_mesh`` orders
    the devices as the ICI ring runs, so one process's devices hold interleaved blocks of rows (a
    2-host v4-16: processes 0, 1, 0, 1, ... along the axis), never one contiguous block.
    """
    sharding = batch_sharding(mesh, axis)

    def put(a):
        a = np.asarray(a)
        if sharding.is_fully_addressable:
            return jax.device_put(a, sharding)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, batch)


def process_rows(mesh: Mesh, num_rows: int) -> dict[int, np.ndarray]:
    """{process index: the rows of a ``num_rows`` batch that its devices hold}: what ``shard_batch`` feeds
    each host of a multi-host mesh (the mesh may be of compile-only devices)."""
    rows = {}
    for device, index in batch_sharding(mesh).devices_indices_map((num_rows,)).items():
        rows.setdefault(device.process_index, []).append(np.arange(num_rows)[index])
    return {p: np.sort(np.concatenate(r)) for p, r in sorted(rows.items())}


def to_host(x) -> np.ndarray:
    """A (possibly multi-host, batch-sharded) array as one NumPy array on every host."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them (a collective on several hosts:
    call it at the same point on all of them)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([int(bool(flag))]))).any())


def is_main_process() -> bool:
    """Only process 0 writes JSON, logs and tables; Orbax coordinates checkpoint writes itself."""
    return jax.process_index() == 0


def initialize_multihost() -> None:
    """Joins a multi-host job (TPU pod slice, multi-node GPU). JAX detects TPU, SLURM and similar
    clusters itself; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
    kwargs = {}
    for env, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(env):
            kwargs[arg] = int(os.environ[env])
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # must be decided before any backend starts
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes need a transport
    jax.distributed.initialize(**kwargs)


_MEMOS = []


def clear_reused() -> None:
    """Forgets every memoized step (``reused``), and so the compiled programs they keep alive."""
    for memo in _MEMOS:
        memo.cache_clear()


def reused(factory):
    """Memoizes a factory of step functions by its arguments, so a second run in the same process with
    the same settings (a resumed launch, another fit of the estimator, the next test) gets the very
    same function objects back, and JAX's in-memory caches, keyed on them, skip tracing and lowering
    again (about 11 s of a tiny launch on 2 CPU cores, plus the compile when no persistent cache is
    on). The arguments must fully determine what the factory's closures capture; an unhashable one
    (an array) skips the memo. ``clear_reused()`` lets a long-lived process drop them all."""
    memo = functools.lru_cache(maxsize=32, typed=True)(factory)  # typed: 1, 1.0 and True stay apart
    _MEMOS.append(memo)

    @functools.wraps(factory)
    def factory_or_memo(*args, **kwargs):
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return factory(*args, **kwargs)
        return memo(*args, **kwargs)

    factory_or_memo.cache_clear = memo.cache_clear
    return factory_or_memo


def data_parallel(fn, mesh: Mesh, batch_args: tuple[int, ...] = (1,), batch_out: bool = False,
                  donate_argnums=(), batch_axis: int = 0):
    """``fn`` jitted to run data-parallel: the positional arguments in ``batch_args`` (batches) are split
    over the ``data`` axis along ``batch_axis``, all others (params, train state, keys) replicated; the
    outputs are replicated (reductions, the new state) or, with ``batch_out``, split like the batch
    (per-row predictions)."""
    num_args = len(inspect.signature(fn).parameters)
    rep, data = replicated(mesh), batch_sharding(mesh, batch_axis)
    return jax.jit(fn, in_shardings=tuple(data if i in batch_args else rep for i in range(num_args)),
                   out_shardings=data if batch_out else rep, donate_argnums=donate_argnums)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def batch_size_for(batch_size: int, num_rows: int, mesh: Mesh) -> int:
    """The batch a split of ``num_rows`` is cut into: ``batch_size``, but no larger than the split (a
    323-row split in batches of 512 would compute 189 padding rows), rounded up to the device count."""
    return round_up(min(batch_size, num_rows), mesh.size)


def padded_batches(arrays: dict[str, np.ndarray], batch_size: int, order: np.ndarray | None = None,
                   last_multiple: int = 0):
    """Yields fixed-size batches (one compiled shape) with a ``weight`` of 0 on padding rows; with
    ``last_multiple``, the last batch is padded only to a multiple of it (another shape, fewer rows)."""
    n = len(next(iter(arrays.values())))
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        size = round_up(len(idx), last_multiple) if last_multiple and start + batch_size >= n else batch_size
        pad = min(size, batch_size) - len(idx)
        batch = {k: np.concatenate([v[idx], np.repeat(v[idx[:1]], pad, axis=0)]) for k, v in arrays.items()}
        batch["weight"] = np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)])
        yield batch
