"""Launches as subprocesses, for the suite, the claim studies and the search: a launcher that logs
each command and can stop the ones still running, one device slot per worker thread, and a pool
that runs groups of launches side by side (each group in order).
"""
from __future__ import annotations

import concurrent.futures
import os
import shlex
import shutil
import signal
import subprocess
import threading
from typing import Callable

# (command, log path, working directory) -> exit code; tests inject a fake.
Launcher = Callable[[list, str, str], int]


class SubprocessLauncher:
    """Runs one launch per call, logging to ``log_path``; ``stop_all`` ends the launches still running.

    Worker threads wait on their launches, so an interrupt that only reaches the suite (``kill -INT``,
    a SIGTERM from a scheduler) would leave them running, finishing work nobody records; the suite
    therefore stops them itself."""

    def __init__(self):
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def __call__(self, cmd: list, log_path: str, cwd: str) -> int:
        with open(log_path, "w") as log:
            log.write(shlex.join(cmd) + "\n")
            log.flush()
            # Started and registered under the lock that stop_all takes, so a launch a worker begins
            # while the runner is being stopped is either stopped with the others or never started.
            with self._lock:
                if self._stopped:
                    log.write("not started: the runner was stopping\n")
                    return -signal.SIGTERM
                process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
                self._live.add(process)
            with process:
                try:
                    return process.wait()
                except BaseException:  # an interrupt in this (main) thread: end the child before leaving
                    _stop(process)
                    raise
                finally:
                    with self._lock:
                        self._live.discard(process)

    def stop_all(self) -> None:
        """Ends the launches running now; later calls start nothing (the runner is stopping)."""
        with self._lock:
            self._stopped = True
            live = list(self._live)
        for process in live:
            _stop(process)


def _stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; launch.py resumes a cut phase from its checkpoints."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def last_error_line(text: str) -> str:
    """The last 'error: ...' line (launch's one-line failures), else the last non-empty line."""
    # Progress bars rewrite their line with \r; only the last segment is what was left on screen.
    lines = [seg.strip() for line in text.splitlines() for seg in line.split("\r")[-1:] if seg.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPUs a launch would see: CUDA_VISIBLE_DEVICES when set, else those ``nvidia-smi -L`` lists."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() not in ("", "-1")]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def tpu_present() -> bool:
    import glob
    return bool(glob.glob("/dev/accel*")) or os.path.exists("/dev/vfio/0")


def cpu_cores() -> list[int]:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


class DeviceSlots:
    """One command prefix per worker thread, held for the thread's life: on a GPU host
    ``env CUDA_VISIBLE_DEVICES=<gpu>``, so no two workers share a GPU (JAX preallocates most of a
    GPU's memory per process); on a CPU host with at least one core per worker, ``taskset -c <its
    cores>`` (the cores split into contiguous, nearly equal sets), so each launch's XLA thread pool is
    sized to its own cores instead of every launch running a thread per core on all of them; with more
    workers than cores, or without ``taskset``, nothing (the launches share the cores)."""

    def __init__(self, workers: int, gpus: list[str] | None = None, tpu: bool | None = None,
                 cores: list[int] | None = None, taskset: bool | None = None):
        gpus = visible_gpus() if gpus is None else gpus
        tpu = (not gpus and tpu_present()) if tpu is None else tpu
        if workers > 1 and gpus and workers > len(gpus):
            raise ValueError(f"--workers={workers} but {len(gpus)} GPU(s) are visible ({','.join(gpus)}); each "
                             f"worker needs its own GPU: use --workers={len(gpus)} or fewer")
        if workers > 1 and tpu:
            raise ValueError(f"--workers={workers} on a TPU host: every launch takes all the chips; use --workers=1")
        cores = cpu_cores() if cores is None else cores
        taskset = shutil.which("taskset") is not None if taskset is None else taskset
        if workers > 1 and gpus:
            prefixes = [("env", f"CUDA_VISIBLE_DEVICES={g}") for g in gpus[:workers]]
        elif 1 < workers <= len(cores) and taskset:
            sets = [cores[i * len(cores) // workers:(i + 1) * len(cores) // workers] for i in range(workers)]
            prefixes = [("taskset", "-c", ",".join(map(str, s))) for s in sets]
        else:
            prefixes = [()] * max(1, workers)
        self._free, self._local = list(prefixes), threading.local()
        self._lock = threading.Lock()

    def prefix(self) -> tuple[str, ...]:
        if not hasattr(self._local, "prefix"):
            with self._lock:
                self._local.prefix = self._free.pop(0)
        return self._local.prefix


def run_in_parallel(groups, run: Callable, record: Callable, workers: int,
                    stop_launches: Callable[[], None] | None = None) -> None:
    """Up to ``workers`` groups at once (the suite's: one workdir's jobs, CE first), each group's jobs
    one after another: ``record(job, run(job))``.

    An interrupt stops every worker before its next job and ends the running launches
    (``stop_launches``); the runs it cut short write no row: they are pending for the next start,
    like the one a serial suite was running when killed."""
    stop = threading.Event()

    def work(group):
        for job in group:
            if stop.is_set():
                return
            row = run(job)
            if stop.is_set():
                return
            record(job, row)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, group) for group in groups]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            if stop_launches is not None:
                stop_launches()
            raise


def sigterm_as_interrupt(signum, frame):
    """A SIGTERM handler: a scheduler's SIGTERM takes Ctrl-C's path (launches stopped, finished rows kept)."""
    raise KeyboardInterrupt
