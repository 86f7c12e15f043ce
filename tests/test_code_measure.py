"""The code-metric builder measures real test methods in forked children and never records a failure as 0."""
import gzip
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tools import code_measure

MODULE = textwrap.dedent('''
    import os, time, unittest

    class Cases(unittest.TestCase):
        def test_small(self):
            self.assertEqual(sum(range(10)), 45)

        def test_big_alloc(self):
            data = [bytes(1000) for _ in range(2000)]
            self.assertEqual(len(data), 2000)

        def test_fails(self):
            self.assertEqual(1, 2)

        def test_skips(self):
            self.skipTest("not here")

        def test_sleeps(self):
            time.sleep(30)

        def test_dies(self):
            os._exit(3)

        def test_leaves_a_process(self):
            import subprocess, sys
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            with open(os.environ["FAKE_PID_FILE"], "a") as f:
                f.write(f"{child.pid} ")
            time.sleep(30)

        def test_mutates(self):
            Cases.counter = getattr(Cases, "counter", 0) + 1  # isolation: every run starts from 0
            self.assertEqual(Cases.counter, 1)

    class NeedsNetwork(unittest.TestCase):
        def test_net(self):
            from test import support
            support.requires("network")
''')


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed with its group waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def module_name(tmp_path, monkeypatch):
    (tmp_path / "fake_measured_tests.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fake_measured_tests"
    sys.modules.pop("fake_measured_tests", None)


def _worker_rows(module: str, tmp_path, **env) -> list[dict]:
    """Runs the module worker as the builder does: a fresh process, since forking this JAX-threaded one
    could deadlock; the script runs from another working directory."""
    shard = tmp_path / f"{module}.jsonl"
    subprocess.run([sys.executable, code_measure.SCRIPT, "--module", module, "--repeats", "2",
                    "--timeout_s", "1", "--shard", str(shard)], check=True, timeout=120, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), **env})
    return [json.loads(line) for line in shard.read_text().splitlines()]


def test_measure_module_rows_and_reasons(module_name, tmp_path):
    rows = {r["id"].split(".")[-1]: r for r in _worker_rows(module_name, tmp_path, FAKE_PID_FILE=str(tmp_path / "pids"))}
    for name in ("test_small", "test_big_alloc", "test_mutates"):
        assert rows.get(name, {}).get("status") == "ok", rows
        assert len(rows[name]["wall_time_runs"]) == 2 and rows[name]["wall_time_s"] > 0
        assert rows[name]["source"].startswith(f"def {name}(self):")
    assert rows["test_big_alloc"]["peak_memory_bytes"] > 2_000_000 > 10 * rows["test_small"]["peak_memory_bytes"]
    expected = {"test_fails": "failed: AssertionError", "test_skips": "skipped by test: not here",
                "test_sleeps": "timeout", "test_dies": "crashed", "test_net": "skipped by test: Use of the 'network'",
                "test_leaves_a_process": "timeout"}
    for name, reason in expected.items():
        assert rows[name]["status"] == "skipped", rows[name]
        assert rows[name]["reason"].startswith(reason), rows[name]["reason"]
        assert "wall_time_s" not in rows[name] and "peak_memory_bytes" not in rows[name]
    for pid in map(int, (tmp_path / "pids").read_text().split()):  # the timeout killed the test's own children
        assert not _running(pid)


def test_module_that_cannot_load_is_one_skipped_row():
    rows = code_measure.measure_module("no_such_module_xyz", repeats=1, timeout_s=1.0)
    assert len(rows) == 1 and rows[0]["reason"].startswith("module failed to load: ModuleNotFoundError")


def test_build_resumes_and_finalize_writes_splits(module_name, tmp_path, monkeypatch):
    build_dir, out = tmp_path / "build", tmp_path / "out" / "rows.jsonl.gz"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + ":" + ":".join(sys.path))
    monkeypatch.chdir(tmp_path)  # the workers it starts must not depend on the working directory
    code_measure.build(str(build_dir), workers=1, repeats=1, timeout_s=1.0, module_timeout_s=120,
                       modules=[module_name])
    shard = build_dir / "shards" / f"{module_name}.jsonl"
    first = shard.read_text()
    code_measure.build(str(build_dir), workers=1, repeats=1, timeout_s=1.0, module_timeout_s=120,
                       modules=[module_name])
    assert shard.read_text() == first  # a finished module is not measured again
    stats = code_measure.finalize(str(build_dir), str(out))
    kept = [json.loads(line) for line in gzip.open(out, "rt")]
    skipped = [json.loads(line) for line in gzip.open(str(out).replace(".jsonl.gz", ".skipped.jsonl.gz"), "rt")]
    assert stats["kept"] == len(kept) == 3 and stats["skipped"] == len(skipped) == 6
    assert {r["split"] for r in kept} <= {"train", "val", "test"} and len({r["split"] for r in kept}) == 1  # one file
    assert stats["python"] and stats["repeats"] == 1


def test_discover_modules_finds_files_and_package_members(tmp_path):
    (tmp_path / "test_a.py").write_text("")
    (tmp_path / "helper.py").write_text("")
    pkg = tmp_path / "test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "test_b.py").write_text("")
    (tmp_path / "test_signal.py").write_text("")  # excluded: signals the whole process group
    assert code_measure.discover_modules(str(tmp_path)) == ["test.test_a", "test.test_pkg.test_b"]
