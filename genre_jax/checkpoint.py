"""Orbax checkpoints per phase: ``<workdir>/<phase>/last`` (resume) and ``<workdir>/<phase>/best``.

Every checkpoint pairs a pytree with a JSON ``meta`` dict. The best checkpoint's meta carries all a
predictor needs without the config file: model config, tokenizer spec and preprocessing statistics.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from genre_jax.errors import GenreError
from genre_jax.settings import without_later_fields

# Sections of the config that define the model a checkpoint belongs to.
IDENTITY_KEYS = ("dataset", "seed", "model", "tokenizer", "code")  # "code": code-metric configs only


def _manager(path: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(os.path.abspath(path), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


class PhaseCheckpoints:
    """The two checkpoints of one training phase; ``last`` is rewritten as the phase goes on."""

    def __init__(self, workdir: str, phase: str):
        self.root = os.path.join(os.path.abspath(workdir), phase)
        self._last = _manager(os.path.join(self.root, "last"))
        self._best = _manager(os.path.join(self.root, "best"))

    def save(self, which: str, step: int, tree: Any, meta: dict) -> None:
        manager = self._last if which == "last" else self._best
        if step in manager.all_steps():  # a crash between two saves left this step; Orbax won't overwrite it
            manager.delete(step)
        manager.save(step, args=ocp.args.Composite(tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                     force=True)
        manager.wait_until_finished()

    def has(self, which: str) -> bool:
        return (self._last if which == "last" else self._best).latest_step() is not None

    def best_step(self) -> int | None:
        """Identifies the best checkpoint (its epoch step), e.g. to tell whether an evaluation is stale."""
        return self._best.latest_step()

    def meta(self, which: str) -> dict | None:
        manager = self._last if which == "last" else self._best
        step = manager.latest_step()
        if step is None:
            return None
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(self, which: str, like: Any) -> tuple[Any, dict]:
        """Restores the tree with the structure, dtypes and shardings of ``like``."""
        manager = self._last if which == "last" else self._best
        step = manager.latest_step()
        if step is None:
            raise GenreError(f"{self.root}/{which}: no checkpoint to restore")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = manager.restore(step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
        return out.tree, out.meta


def model_identity(config) -> dict:
    return json.loads(json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                                  for k in IDENTITY_KEYS if k in config}))


def check_workdir_matches(workdir: str, config) -> None:
    """Refuses to resume or overwrite a workdir that was written for another model or dataset."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            stored = json.load(f).get("identity")
    except (OSError, json.JSONDecodeError) as e:
        raise GenreError(f"{path}: unreadable ({e}); use a fresh --workdir") from None
    if stored is None:
        return
    current = model_identity(config)
    for key in IDENTITY_KEYS:
        if key in stored and without_later_fields(key, stored[key]) != without_later_fields(key, current.get(key)):
            raise GenreError(f"workdir {workdir} holds a checkpoint of a different model ({key}: "
                             f"{stored.get(key)} != {current.get(key)}); use a fresh --workdir")


class WorkdirLock:
    """One launch per workdir: an exclusive ``flock`` on ``<workdir>/.lock``, which names its holder
    (host, pid, start time). The kernel drops the lock when the holder dies (kill -9 included), so a
    lock is never stale; the file's text only says who holds it. Only the main process of a
    multi-host run locks (the others write no JSON). flock may not be enforced across hosts on some
    network file systems."""

    NAME = ".lock"

    def __init__(self, workdir: str):
        self.path, self.fd = os.path.join(workdir, self.NAME), None

    def __enter__(self) -> "WorkdirLock":
        import datetime
        import fcntl
        import socket

        from genre_jax import parallel
        if not parallel.is_main_process():
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise GenreError(f"workdir {os.path.dirname(self.path)} is in use by another launch ({holder}); wait "
                             f"for it to finish or use another --workdir") from None
        os.ftruncate(fd, 0)
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {since}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
