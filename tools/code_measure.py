"""Measures real programs for code-metric regression: CPython's own test suite, one test method per row.

Build (resumable; one shard per test module under ``<build_dir>/shards``):
  python tools/code_measure.py --build_dir=runs/code_build --workers=2
  python tools/code_measure.py --build_dir=runs/code_build --finalize \\
      --out=datasets/code_metrics/cpython_tests.jsonl.gz

Protocol (recorded with the data, see ``protocol()``):
  * Unit = one test method of a module under the interpreter's ``Lib/test`` (``test.test_*`` files
    and the ``test_*.py`` files inside ``test.test_*`` packages), collected with unittest's loader.
    x = the method's source text (``inspect.getsource``, dedented); the file that defines it is its
    group, so a mixin method run by several classes never straddles splits.
  * Every run is isolated: the module worker imports the test module once, then ``os.fork``s a fresh
    child per run, which runs a one-test ``unittest.TestSuite`` (class and module fixtures included)
    with stdout/stderr sent to /dev/null. Wall time = ``time.perf_counter`` around that run; peak
    memory = tracemalloc's peak of Python allocations during a separate run (tracemalloc slows
    code, so time and memory never share a run). Each is the median of ``repeats`` runs.
  * ``test.support.use_resources = []``: tests that need network, GUI, audio, large memory or other
    regrtest resources raise ResourceDenied and are recorded as skipped.
  * A run that fails, errors, skips, exceeds ``timeout_s`` or dies is recorded as skipped with its
    reason; a unit is kept only if all its runs pass. Nothing is ever recorded as a zero measurement.
"""
from __future__ import annotations

import argparse
import gzip
import inspect
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import traceback

SCRIPT = os.path.abspath(__file__)  # module workers run this file again, from whatever working directory
REPO = os.path.dirname(os.path.dirname(SCRIPT))
if REPO not in sys.path:
    # finalize imports genre_jax; appended, so the measured tests still find the standard library first
    sys.path.append(REPO)

PROTOCOL_VERSION = 1
MAX_MODULE_TIMEOUTS = 3
DEFAULTS = dict(repeats=3, timeout_s=5.0, module_timeout_s=900.0)
# Modules that take the whole machine, fork servers or re-run the suite itself.
EXCLUDED_MODULES = frozenset({
    "test.test_regrtest", "test.test_concurrent_futures", "test.test_multiprocessing_fork",
    "test.test_multiprocessing_forkserver", "test.test_multiprocessing_spawn", "test.test_multiprocessing_main_handling",
    "test.test_tools", "test.test_peg_generator", "test.test_venv", "test.test_embed", "test.test_capi",
    "test.test_clinic", "test.test_idle", "test.test_tkinter", "test.test_ttk", "test.test_ttk_textonly",
    "test.test_gdb", "test.test_lldb", "test.test_tix", "test.test_turtle", "test.test_winreg", "test.test_winsound",
    "test.test_msilib", "test.test_launcher", "test.test_largefile", "test.test_bigmem", "test.test_signal",
    "test.test_faulthandler", "test.test_threadsignals", "test.test_curses", "test.test_ossaudiodev",
    "test.test_socketserver", "test.test_asyncio", "test.test_xmlrpc_net", "test.test_urllibnet",
    "test.test_urllib2net", "test.test_zipfile64", "test.test_site", "test.test_pty", "test.test_openpty",
    "test.test_ioctl", "test.test_wait3", "test.test_wait4", "test.test_fork1", "test.test_importlib",
})


def protocol(repeats: int, timeout_s: float) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"protocol_version": PROTOCOL_VERSION, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "repeats": repeats, "timeout_s": timeout_s,
            "time": "median perf_counter seconds of a forked one-test unittest run",
            "memory": "median tracemalloc peak bytes of a separate forked run",
            "source": "CPython Lib/test, one test method per row"}


def discover_modules(test_root: str | None = None) -> list[str]:
    """Importable test module names under Lib/test, sorted, minus ``EXCLUDED_MODULES``."""
    if test_root is None:
        import test
        test_root = os.path.dirname(test.__file__)
    names = []
    for entry in sorted(os.listdir(test_root)):
        path = os.path.join(test_root, entry)
        if entry.startswith("test_") and entry.endswith(".py"):
            names.append(f"test.{entry[:-3]}")
        elif entry.startswith("test_") and os.path.isdir(path) and os.path.exists(os.path.join(path, "__init__.py")):
            subs = [s[:-3] for s in sorted(os.listdir(path)) if s.startswith("test_") and s.endswith(".py")]
            names.extend(f"test.{entry}.{s}" for s in subs)
    return [n for n in names if not any(n == ex or n.startswith(ex + ".") for ex in EXCLUDED_MODULES)]


def _flatten(suite):
    for item in suite:
        if hasattr(item, "__iter__"):
            yield from _flatten(item)
        else:
            yield item


def _source_of(test) -> tuple[str, str] | None:
    """(dedented source, defining file relative to Lib/) of a test's method, or None."""
    func = getattr(type(test), getattr(test, "_testMethodName", ""), None)
    try:
        source = textwrap.dedent(inspect.getsource(func))
        path = inspect.getsourcefile(func) or ""
    except (TypeError, OSError):
        return None
    marker = os.sep + "test" + os.sep
    rel = path[path.rfind(marker) + 1:] if marker in path else os.path.basename(path)
    return source, rel


def _run_child(test, mode: str, write_fd: int) -> None:
    """In the forked child: one isolated run, then a JSON line on ``write_fd`` and ``os._exit``."""
    import gc
    import tracemalloc
    import unittest
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)  # its own process group: a timeout kills whatever the test started, too
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        suite, result = unittest.TestSuite([test]), unittest.TestResult()
        gc.collect()
        if mode == "memory":
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            suite.run(result)
            value = float(tracemalloc.get_traced_memory()[1] - base)
            tracemalloc.stop()
        else:
            start = time.perf_counter()
            suite.run(result)
            value = time.perf_counter() - start
        if result.skipped:
            out = {"status": "skipped", "reason": "skipped by test: " + str(result.skipped[0][1])[:200]}
        elif result.errors or result.failures:
            err = (result.errors or result.failures)[0][1].strip().splitlines()
            out = {"status": "failed", "reason": "failed: " + (err[-1] if err else "?")[:200]}
        elif result.testsRun == 0:
            out = {"status": "skipped", "reason": "not run (class or module fixture skipped)"}
        else:
            out = {"status": "ok", "value": value}
    except BaseException as e:  # noqa: BLE001 - anything the test throws becomes a recorded reason
        out = {"status": "failed", "reason": f"crashed in harness: {type(e).__name__}: {e}"[:200]}
    os.write(write_fd, (json.dumps(out) + "\n").encode())
    os._exit(0)


_CHILD = {"pid": None}  # the running child, so a SIGTERM to the module worker can take its group down too


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _on_sigterm(signum, frame):
    if _CHILD["pid"]:
        _kill_group(_CHILD["pid"])
    os._exit(1)


def measure_once(test, mode: str, timeout_s: float) -> dict:
    """Forks a child that runs ``test`` once; returns {"status", "value"|"reason"}."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(test, mode, write_fd)
    try:
        os.setpgid(pid, pid)  # also from the parent, so a kill can never race the child's own setpgid
    except (ProcessLookupError, PermissionError):
        pass
    _CHILD["pid"] = pid
    os.close(write_fd)
    deadline = time.monotonic() + timeout_s
    chunks = b""
    while not chunks.endswith(b"\n"):  # one line, then stop: a leftover grandchild may hold the pipe open
        left = deadline - time.monotonic()
        ready = select.select([read_fd], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            _kill_group(pid)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {"status": "timeout", "reason": f"timeout: exceeded {timeout_s:g} s"}
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks += chunk
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    _kill_group(pid)  # whatever the test left running must not share the CPU with the next runs
    _CHILD["pid"] = None
    try:
        return json.loads(chunks.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        how = f"signal {-os.waitstatus_to_exitcode(status)}" if os.WIFSIGNALED(status) else \
            f"exit code {os.waitstatus_to_exitcode(status)}"
        return {"status": "crashed", "reason": f"crashed: child ended with {how} before reporting"}


def measure_test(test, repeats: int, timeout_s: float) -> dict:
    """Median wall time and tracemalloc peak over ``repeats`` isolated runs each, or a skip reason."""
    values = {"time": [], "memory": []}
    for mode in ("time", "memory"):
        for _ in range(repeats):
            out = measure_once(test, mode, timeout_s)
            if out["status"] != "ok":
                return {"status": "skipped", "reason": out["reason"]}
            values[mode].append(out["value"])
    return {"status": "ok", "wall_time_s": statistics.median(values["time"]),
            "peak_memory_bytes": statistics.median(values["memory"]),
            "wall_time_runs": values["time"], "peak_memory_runs": values["memory"]}


def measure_module(module: str, repeats: int, timeout_s: float, max_tests: int = 0) -> list[dict]:
    """Rows (kept and skipped) for every test method of ``module``; runs in a module worker."""
    import importlib
    import unittest

    import test.support
    signal.signal(signal.SIGTERM, _on_sigterm)
    test.support.use_resources = []  # network, gui, cpu, ... -> ResourceDenied (a skip)
    try:
        mod = importlib.import_module(module)
        tests = list(_flatten(unittest.defaultTestLoader.loadTestsFromModule(mod)))
        import gc
        gc.collect()
        gc.freeze()  # the children's gc then skips inherited objects instead of copying every page
    except BaseException as e:  # noqa: BLE001 - a module that cannot load is one skipped row
        return [{"id": module, "module": module, "status": "skipped",
                 "reason": f"module failed to load: {type(e).__name__}: {e}"[:200]}]
    rows, timeouts = [], 0
    for case in tests[: max_tests or None]:
        row = {"id": case.id(), "module": module}
        if timeouts >= MAX_MODULE_TIMEOUTS:  # a module whose tests hang would hold a worker for minutes
            rows.append({**row, "status": "skipped", "reason": f"timeout: module gave up after {timeouts} timeouts"})
            continue
        found = _source_of(case)
        if found is None:
            rows.append({**row, "status": "skipped", "reason": "no source (generated or loader-made test)"})
            continue
        row["source"], row["file"] = found
        if not row["source"].strip():
            rows.append({**row, "status": "skipped", "reason": "empty source"})
            continue
        rows.append({**row, **measure_test(case, repeats, timeout_s)})
        timeouts += rows[-1].get("reason", "").startswith("timeout")
    return rows


def _shard_path(build_dir: str, module: str) -> str:
    return os.path.join(build_dir, "shards", module + ".jsonl")


def _write_rows(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def _is_worker_failure(path: str) -> bool:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return len(rows) == 1 and rows[0]["id"] == rows[0]["module"] and \
        rows[0]["reason"].startswith(("module worker", "worker error"))


def build(build_dir: str, workers: int, repeats: int, timeout_s: float, module_timeout_s: float,
          modules: list[str] | None = None, max_tests: int = 0, retry_failed: bool = False) -> None:
    """Measures every module without a finished shard, ``workers`` module processes at a time.

    ``retry_failed`` also re-measures modules whose worker timed out or crashed as a whole.
    """
    from concurrent.futures import ThreadPoolExecutor
    from tqdm.auto import tqdm

    os.makedirs(os.path.join(build_dir, "shards"), exist_ok=True)
    if retry_failed:
        for name in os.listdir(os.path.join(build_dir, "shards")):
            if name.endswith(".jsonl") and _is_worker_failure(os.path.join(build_dir, "shards", name)):
                os.remove(os.path.join(build_dir, "shards", name))
    todo = [m for m in (modules or discover_modules()) if not os.path.exists(_shard_path(build_dir, m))]
    # Every invocation of a resumed build is recorded: how many modules it measured, with what load.
    path = os.path.join(build_dir, "protocol.json")
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
    else:
        record = {**protocol(repeats, timeout_s), "invocations": []}
    record["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": workers,
                                  "repeats": repeats, "timeout_s": timeout_s, "modules": len(todo),
                                  "loadavg_start": os.getloadavg()})
    with open(path, "w") as f:
        json.dump(record, f, indent=1)

    def run_module(module: str) -> None:
        cmd = [sys.executable, SCRIPT, "--module", module, "--repeats", str(repeats),
               "--timeout_s", str(timeout_s), "--max_tests", str(max_tests),
               "--shard", _shard_path(build_dir, module)]
        # Own session: a test that signals its process group cannot reach the builder.
        worker = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            worker.wait(timeout=module_timeout_s)
        except subprocess.TimeoutExpired:
            worker.terminate()  # the worker's SIGTERM handler kills its running child's group
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(worker.pid)
                worker.wait()
        if not os.path.exists(_shard_path(build_dir, module)):
            _write_rows(_shard_path(build_dir, module), [{"id": module, "module": module, "status": "skipped",
                                                           "reason": f"module worker did not finish within "
                                                                     f"{module_timeout_s:g} s or crashed"}])

    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(run_module, todo), total=len(todo), desc="code-metrics", unit="module"))


def finalize(build_dir: str, out: str) -> dict:
    """Merges shards into one gzipped JSONL of kept rows plus ``<out>.skipped.jsonl.gz``; returns stats."""
    if not out.endswith(".jsonl.gz"):
        raise SystemExit(f"error: --out={out}: expected a path ending in .jsonl.gz")
    shards = sorted(os.listdir(os.path.join(build_dir, "shards")))
    kept, skipped, kept_ids = [], [], set()
    for name in shards:
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(build_dir, "shards", name)) as f:
            for line in f:
                row = json.loads(line)
                if row["status"] == "ok" and row["id"] in kept_ids:  # collected twice: keep its first good run
                    row = {**row, "status": "skipped", "reason": "duplicate: test id measured twice"}
                if row["status"] == "ok":
                    kept_ids.add(row["id"])
                (kept if row["status"] == "ok" else skipped).append(row)
    from genre_jax.data.code_metrics import split_of
    for row in kept:
        row["split"] = split_of(row["file"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for path, rows in ((out, kept), (out.replace(".jsonl.gz", ".skipped.jsonl.gz"), skipped)):
        with open(path + ".tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:  # same rows,
            f.write("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode())  # same bytes
        os.replace(path + ".tmp", path)
    with open(os.path.join(build_dir, "protocol.json")) as f:
        proto = json.load(f)
    reasons: dict[str, int] = {}
    for row in skipped:
        key = row["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    stats = {**proto, "loadavg_end": os.getloadavg(), "kept": len(kept), "skipped": len(skipped),
             "skip_reasons": reasons, "splits": {s: sum(r["split"] == s for r in kept) for s in ("train", "val", "test")},
             "files": len({r["file"] for r in kept})}
    with open(out.replace(".jsonl.gz", ".protocol.json"), "w") as f:
        json.dump(stats, f, indent=1)
    return stats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build_dir", default="runs/code_build")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
    p.add_argument("--timeout_s", type=float, default=DEFAULTS["timeout_s"])
    p.add_argument("--module_timeout_s", type=float, default=DEFAULTS["module_timeout_s"])
    p.add_argument("--modules", default="", help="comma list; default every test module")
    p.add_argument("--max_tests", type=int, default=0, help="per module; 0 = all")
    p.add_argument("--retry_failed", action="store_true", help="re-measure modules whose worker failed as a whole")
    p.add_argument("--finalize", action="store_true")
    p.add_argument("--out", default="datasets/code_metrics/cpython_tests.jsonl.gz")
    p.add_argument("--module", help=argparse.SUPPRESS)  # internal: the module worker
    p.add_argument("--shard", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.module:
        try:
            rows = measure_module(a.module, a.repeats, a.timeout_s, a.max_tests)
        except BaseException:  # noqa: BLE001
            rows = [{"id": a.module, "module": a.module, "status": "skipped",
                     "reason": "worker error: " + traceback.format_exc().strip().splitlines()[-1][:200]}]
        _write_rows(a.shard, rows)
    elif a.finalize:
        print(json.dumps(finalize(a.build_dir, a.out), indent=1))
    else:
        build(a.build_dir, a.workers, a.repeats, a.timeout_s, a.module_timeout_s,
              [m for m in a.modules.split(",") if m] or None, a.max_tests, a.retry_failed)


if __name__ == "__main__":
    main()
