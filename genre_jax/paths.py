"""Workdir I/O anywhere: a local folder, or a bucket URI (``gs://``, ``s3://``, ``az://``, ``hf://``).

Every read and write under a workdir (checkpoint checksums, logs, results, evaluation files) goes
through this module. Local paths keep the plain ``os`` calls they always had (made absolute once:
Orbax wants absolute paths), so a local run writes exactly what it wrote before; a URI goes through
``etils.epath`` (fsspec underneath: ``gcsfs`` for gs://, ``s3fs`` for s3://), unchanged by
``resolve`` (``os.path.abspath`` would turn ``gs://b/r`` into ``<cwd>/gs:/b/r``).

Object stores have no rename and no append, but an object write is atomic (readers see the old
object or the new one, never a part), so an atomic write is one object write and an appended line
is a read and a rewrite of the object (logs are small and written once per epoch). Paths are joined
with ``os.path.join``, which on POSIX joins URIs as it joins folders.
"""
from __future__ import annotations

import builtins
import importlib.util
import os
import re
import stat
import tempfile
from typing import IO, Iterator

from etils import epath

from genre_jax.errors import GenreError

# The schemes etils.epath maps to a remote backend; any other ``x://`` it would treat as a local
# relative folder named ``x:``, so those are refused instead.
SCHEMES = ("gs", "s3", "az", "hf")
# The fsspec file system epath needs per scheme (unless TensorFlow is installed: then tf.io.gfile).
FILE_SYSTEMS = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}
# Orbax asks the GCS API whether a gs:// bucket has a hierarchical namespace (module, pip name).
CLIENTS = {"gs": ("google.cloud.storage", "google-cloud-storage")}
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path) -> str | None:
    """``gs`` for ``gs://b/r``; None for a local path. Case is kept: epath knows ``gs://``, not ``GS://``."""
    match = _URI.match(os.fspath(path))
    return match.group(1) if match else None


def is_remote(path) -> bool:
    return scheme(path) is not None


def resolve(path) -> str:
    """An absolute local path, or the URI unchanged (an unsupported scheme is an error)."""
    path = os.fspath(path)
    found = scheme(path)
    if found is None:
        return os.path.abspath(path)
    if found not in SCHEMES:
        raise GenreError(f"{path}: unsupported scheme {found}://; expected a local folder or one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    return path


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing parent package (google.cloud)
        return False


def check_backend(path) -> None:
    """Refuses a URI whose packages are missing, before any work (else the first write fails mid-run
    with an ImportError from fsspec or Orbax)."""
    found = scheme(resolve(path))
    if found is None:
        return
    missing = [] if _importable("tensorflow") or _importable(FILE_SYSTEMS[found]) else [FILE_SYSTEMS[found]]
    if found in CLIENTS and not _importable(CLIENTS[found][0]):
        missing.append(CLIENTS[found][1])
    if missing:
        raise GenreError(f"{path}: {found}:// paths need {' and '.join(missing)} (pip install {' '.join(missing)})")


def _remote(path) -> epath.Path:
    return epath.Path(os.fspath(path))


# ----- queries


def exists(path) -> bool:
    return _remote(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path) -> bool:
    return _remote(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path) -> list[str]:
    return [p.name for p in _remote(path).iterdir()] if is_remote(path) else os.listdir(path)


def getmtime(path) -> float:
    """Modification time in seconds (whole seconds for a URI)."""
    return float(_remote(path).stat().mtime) if is_remote(path) else os.path.getmtime(path)


def walk(path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` top-down (sorting ``dirs`` in place orders the descent); for a URI a walk by
    listing, since epath's fsspec walk yields roots without their ``gs://``."""
    if not is_remote(path):
        yield from os.walk(path)
        return
    try:
        names = listdir(path)
    except OSError:  # as os.walk: a missing or unreadable folder yields nothing
        return
    dirs = [n for n in names if isdir(os.path.join(path, n))]
    files = [n for n in names if n not in dirs]
    yield path, dirs, files
    for name in dirs:  # after the yield: the caller may have sorted or pruned dirs
        yield from walk(os.path.join(path, name))


def open(path, mode: str = "r") -> IO:  # noqa: A001 -- the module's reader, as paths.open
    """Opens for reading ("r" or "rb"); writes go through ``write``, ``write_atomic`` and ``append_line``."""
    if mode not in ("r", "rb"):
        raise ValueError(f"paths.open reads only; got mode {mode!r}")
    return _remote(path).open(mode) if is_remote(path) else builtins.open(path, mode)


def read_text(path) -> str:
    with open(path) as f:
        return f.read()


# ----- writes


def makedirs(path) -> None:
    if is_remote(path):
        _remote(path).mkdir(parents=True, exist_ok=True)  # object stores have no folders: a no-op there
    else:
        os.makedirs(path, exist_ok=True)


def rmtree(path) -> None:
    """Removes a folder and everything in it; a missing one or a failure is ignored (a clean-up)."""
    try:
        if is_remote(path):
            _remote(path).rmtree(missing_ok=True)
        else:
            import shutil
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def copytree(src, dst) -> None:
    """Copies the folder ``src`` into ``dst`` (merging with what is there), either side local or a URI."""
    if not is_remote(src) and not is_remote(dst):
        import shutil
        shutil.copytree(src, dst, dirs_exist_ok=True)
        return
    for root, _, files in walk(src):
        rel = os.path.relpath(root, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        makedirs(target)
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                write(os.path.join(target, name), f.read())


def write(path, data: str | bytes) -> None:
    """A plain write (local: the file is written in place; URI: one object write)."""
    mode = "wb" if isinstance(data, bytes) else "w"
    with (_remote(path).open(mode) if is_remote(path) else builtins.open(path, mode)) as f:
        f.write(data)


def write_atomic(path, text: str) -> None:
    """Readers see the old file or the new one, never a part. Local: a unique temporary file in the
    same folder, then ``os.replace`` (atomic there); an existing file keeps its permissions. URI:
    one object write, which object stores commit atomically."""
    if is_remote(path):
        _remote(path).write_text(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        if os.path.exists(path):  # mkstemp makes 0600; a rewritten file keeps the mode it had
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def append_line(path, line: str) -> None:
    """Appends ``line`` (ending in a newline). Local: one ``os.write`` in append mode, so a kill
    leaves the line or nothing (at worst a torn tail); URI: the object read and rewritten whole,
    which leaves the old object or the new one."""
    data = line.encode()
    if is_remote(path):
        target = _remote(path)
        old = target.read_bytes() if target.exists() else b""
        target.write_bytes(old + data)
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
