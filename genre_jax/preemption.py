"""A graceful stop on SIGTERM, the signal schedulers and preemptible VMs send before they kill.

The first SIGTERM only raises a flag: training finishes the epoch it is in (one jitted scan),
writes ``last`` (whatever ``checkpoint_every_s`` says), and then stops with ``Stopped``, which
``launch.py`` turns into one line and exit code ``EXIT_CODE``; evaluation stops between methods. The
same command resumes. A second SIGTERM stops at once, like the kill -9 that usually follows: the
checkpoints are written atomically, so that loses at most what was trained since ``last`` was
written (the epoch in progress, plus up to ``checkpoint_every_s`` seconds of epochs).

On several hosts every process asks ``parallel.any_process`` at the same points, so all of them
stop after the same epoch even when the signal reaches them at different times.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): "try again later"; distinct from errors (2) and crashes (1)

_requested = False


class Stopped(Exception):
    """Raised at a safe point after a SIGTERM; everything finished so far is saved."""


def _handler(signum, frame) -> None:
    global _requested
    if _requested:
        raise Stopped("a second SIGTERM: stopped at once; the last saved epoch resumes with the same command")
    _requested = True
    print("SIGTERM: finishing the current epoch, saving it, then stopping (a second SIGTERM stops at once)",
          file=sys.stderr, flush=True)


@contextlib.contextmanager
def graceful_sigterm():
    """Turns SIGTERM into a stop at the next ``check`` for the duration of a run (main thread only:
    Python delivers signals there; elsewhere the default stays)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested = False


def requested() -> bool:
    """Whether a SIGTERM came to any process (a collective on several hosts: call it at the same point
    on all of them)."""
    from genre_jax import parallel
    return parallel.any_process(_requested)


def check(done: str) -> None:
    """Raises ``Stopped`` if a SIGTERM came (on any process); ``done`` names what was saved."""
    if requested():
        raise Stopped(f"stopped by SIGTERM after {done} (saved); run the same command to resume")
