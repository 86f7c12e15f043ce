"""Orbax checkpoints per phase: ``<workdir>/<phase>/last`` (resume) and ``<workdir>/<phase>/best``.

Every checkpoint pairs a pytree with a JSON ``meta`` dict. The best checkpoint's meta carries all a
predictor needs without the config file: model config, tokenizer spec and preprocessing statistics.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from genre_jax import paths
from genre_jax.errors import GenreError
from genre_jax.settings import without_later_fields

# Sections of the config that define the model a checkpoint belongs to.
IDENTITY_KEYS = ("dataset", "seed", "model", "tokenizer", "code")  # "code": code-metric configs only


# Orbax splits each replicated array into one slice per replica for the device-to-host copy
# ("replica-parallel"); on 8 host devices that made a tiny model's save 8x as many slice ops, a third
# of a CE run's time in tests. Only slices of at least this many bytes are worth splitting.
MIN_REPLICA_SLICE_BYTES = 4 << 20


def _register_array_handler() -> None:
    """Orbax's default jax.Array handler (with its array-metadata store, which typed PRNG keys need to be
    restored as keys; not exported, hence the private import, pinned with orbax-checkpoint) but for the
    slice size."""
    from absl import logging as absl_logging
    from orbax.checkpoint._src.metadata import array_metadata_store
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # its "overriding" warning would be a second stderr line
    try:
        ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(
            array_metadata_store=array_metadata_store.Store(),
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
    finally:
        absl_logging.set_verbosity(verbosity)


_register_array_handler()


def _manager(path: str, keep: int = 1) -> ocp.CheckpointManager:
    # cleanup_tmp_directories: a save killed midway (kill -9, full disk) leaves an Orbax tmp folder
    # paths.resolve: Orbax wants absolute local paths, and takes a gs:// URI as it is (epath + tensorstore)
    return ocp.CheckpointManager(paths.resolve(path), options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True))


CHECKSUMS = "checksums.json"  # {step: sha256 of the step folder}, beside the step folders


def folder_digest(path: str) -> str:
    """sha256 over every file of a checkpoint step folder (relative paths and bytes, sorted); the same
    digest for the same files in a local folder or under a bucket URI."""
    digest = hashlib.sha256()
    for root, dirs, files in paths.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            # relpath only compares strings, so it also holds for a URI (both sides normalize alike)
            digest.update(os.path.relpath(full, path).encode() + b"\0")
            with paths.open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


class PhaseCheckpoints:
    """The two checkpoints of one training phase; ``last`` is rewritten as the phase goes on. A phase
    that selects by further rules (``loop.Selection``) keeps each rule's best beside them, as
    ``best_<rule>``.

    Integrity: each saved step's folder digest goes to ``checksums.json`` beside it and is checked
    before the step is read. A ``best`` step that fails is an error (never evaluated or trained
    from); ``last`` keeps two steps and falls back to the older one, with a warning. Steps written
    before checksums existed have none and are read as they are."""

    def __init__(self, workdir: str, phase: str):
        self.root = os.path.join(paths.resolve(workdir), phase)
        self._managers = {"last": _manager(os.path.join(self.root, "last"), keep=2),
                          "best": _manager(os.path.join(self.root, "best"))}

    def _manager_of(self, which: str):
        if which not in self._managers:  # a further rule's best: its folder is made when first used
            self._managers[which] = _manager(os.path.join(self.root, which))
        return self._managers[which]

    def _checksums(self, which: str) -> dict:
        path = os.path.join(self.root, which, CHECKSUMS)
        try:
            sums = json.loads(paths.read_text(path))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise GenreError(f"{path}: unreadable ({e}); delete {os.path.join(self.root, which)} to retrain "
                             f"this phase") from None
        if not isinstance(sums, dict):
            raise GenreError(f"{path}: holds a {type(sums).__name__}; expected a JSON object of step digests")
        return sums

    def save(self, which: str, step: int, tree: Any, meta: dict) -> None:
        from genre_jax import parallel
        from genre_jax.results_file import write_json_atomic
        manager = self._manager_of(which)
        if step in manager.all_steps():  # a crash between two saves left this step; Orbax won't overwrite it
            manager.delete(step)
        from absl import logging as absl_logging
        verbosity = absl_logging.get_verbosity()
        # Orbax's writer threads log a failed write with its traceback before the save raises; the
        # error below says it in one line
        absl_logging.set_verbosity(absl_logging.FATAL)
        try:
            manager.save(step, args=ocp.args.Composite(tree=ocp.args.StandardSave(tree),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- tensorstore reports a full disk as ValueError(RESOURCE_EXHAUSTED)
            try:  # let the manager's other writer threads end (and log, silenced) before leaving
                manager.close()
            except Exception:  # noqa: BLE001 -- they fail the same way
                pass
            self._remove_partial(which)
            first = " ".join(str(e).split())[:200]
            raise GenreError(f"{os.path.join(self.root, which, str(step))}: could not write the checkpoint "
                             f"({type(e).__name__}: {first}); free space or fix permissions, then run the same "
                             f"command to resume") from None
        finally:
            absl_logging.set_verbosity(verbosity)
        if parallel.is_main_process():
            kept = {str(s) for s in manager.all_steps()}
            sums = {k: v for k, v in self._checksums(which).items() if k in kept}
            sums[str(step)] = folder_digest(os.path.join(self.root, which, str(step)))
            write_json_atomic(os.path.join(self.root, which, CHECKSUMS), sums)

    def discard_after(self, which: str, step: int) -> None:
        """Deletes ``which``'s steps after ``step``: a ``best`` written after the ``last`` a phase
        resumes from (``checkpoint_every_s``) belongs to epochs the resumed phase trains again."""
        if not paths.isdir(os.path.join(self.root, which)):
            return
        manager = self._manager_of(which)
        for newer in [s for s in manager.all_steps() if s > step]:
            manager.delete(newer)

    def _remove_partial(self, which: str) -> None:
        """Orbax's temporary folder of a save that failed midway (the next start would remove it too)."""
        folder = os.path.join(self.root, which)
        if not paths.isdir(folder):
            return
        for name in paths.listdir(folder):
            if "orbax-checkpoint-tmp" in name:
                paths.rmtree(os.path.join(folder, name))

    def _verified_step(self, which: str) -> int | None:
        """The newest step whose folder matches its recorded digest (or has none recorded)."""
        manager, sums = self._manager_of(which), None
        steps = sorted(manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            sums = self._checksums(which) if sums is None else sums
            expected = sums.get(str(step))
            if expected is None or folder_digest(os.path.join(self.root, which, str(step))) == expected:
                return step
            where = os.path.join(self.root, which, str(step))
            if which != "last" or i + 1 == len(steps):
                raise GenreError(f"{where}: checkpoint fails its checksum (corrupted or changed since it was "
                                 f"written); delete {os.path.join(self.root, which)} to retrain this phase")
            print(f"warning: {where}: checkpoint fails its checksum; resuming from step {steps[i + 1]}",
                  file=sys.stderr)
        return None

    def digest(self, which: str) -> str | None:
        """The recorded digest of the step ``restore`` would read (None for a step written without one)."""
        step = self._verified_step(which)
        return None if step is None else self._checksums(which).get(str(step))

    def has(self, which: str) -> bool:
        return self._manager_of(which).latest_step() is not None

    def best_step(self, which: str = "best") -> int | None:
        """Identifies a best checkpoint (its epoch step), e.g. to tell whether an evaluation is stale."""
        return self._manager_of(which).latest_step()

    def meta(self, which: str) -> dict | None:
        step = self._verified_step(which)
        if step is None:
            return None
        return self._read(which, step, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(self, which: str, like: Any) -> tuple[Any, dict]:
        """Restores the tree with the structure, dtypes and shardings of ``like``."""
        step = self._verified_step(which)
        if step is None:
            raise GenreError(f"{self.root}/{which}: no checkpoint to restore")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self._read(which, step, ocp.args.Composite(tree=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
        return out.tree, out.meta

    def _read(self, which: str, step: int, args):
        """Orbax's read, its many failure types (tensorstore, ValueError, missing files) as one line:
        a step written without a checksum can still be damaged."""
        try:
            return self._manager_of(which).restore(step, args=args)
        except Exception as e:  # noqa: BLE001 -- whatever Orbax or tensorstore raise for a damaged step
            first = " ".join(str(e).split())[:200]
            raise GenreError(f"{os.path.join(self.root, which, str(step))}: unreadable checkpoint "
                             f"({type(e).__name__}: {first}); delete {os.path.join(self.root, which)} to retrain "
                             f"this phase") from None


def model_identity(config) -> dict:
    return json.loads(json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                                  for k in IDENTITY_KEYS if k in config}))


def check_workdir_matches(workdir: str, config) -> None:
    """Refuses to resume or overwrite a workdir that was written for another model or dataset."""
    path = os.path.join(workdir, "config.json")
    if not paths.exists(path):
        return
    try:
        stored = json.loads(paths.read_text(path))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenreError(f"{path}: unreadable ({e}); use a fresh --workdir") from None
    if not isinstance(stored, dict):
        raise GenreError(f"{path}: holds a JSON {type(stored).__name__}; expected the object launch.py writes "
                         f"(use a fresh --workdir)")
    stored = stored.get("identity")
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
    network file systems.

    A bucket workdir (``gs://`` ...) is not locked: object stores have no flock, and a lock object
    written there would outlive a killed holder (a stale lock to delete by hand), so keeping to one
    launch per bucket workdir is the scheduler's job; a warning says so."""

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
        if paths.is_remote(self.path):
            print(f"warning: {os.path.dirname(self.path)}: a bucket workdir is not locked; run one launch at a "
                  f"time on it", file=sys.stderr)
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


def tree_digest(tree) -> str:
    """sha256 of a pytree's values (paths, dtypes, shapes, bytes); the same for any write of them."""
    import numpy as np
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        # a replicated array's local copy: the whole value, on every host
        value = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
