"""Launching subprocesses: the logging launcher and its stop, device slots per worker, groups run side by side."""
import shutil
import subprocess
import sys
import threading
import time

import pytest

from experiments import launches


def test_last_error_line():
    assert launches.last_error_line("a\nTraceback\nValueError: x\n") == "ValueError: x"
    assert launches.last_error_line("error: first\nmore\nerror: second\n100%|###|\r") == "error: second"
    assert launches.last_error_line("") == ""


def _prefixes(slots, workers):
    """The prefixes ``workers`` threads get from ``slots``, one each, sorted."""
    out = []
    threads = [threading.Thread(target=lambda: out.append(slots.prefix())) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(out)


def test_device_slots_one_gpu_per_worker_and_one_worker_on_a_tpu_host():
    assert launches.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 7"}) == ["2", "7"]
    assert launches.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    slots = launches.DeviceSlots(2, gpus=["0", "3", "5"], tpu=False)
    assert _prefixes(slots, 2) == [("env", "CUDA_VISIBLE_DEVICES=0"), ("env", "CUDA_VISIBLE_DEVICES=3")]
    with pytest.raises(ValueError, match="3 GPU"):
        launches.DeviceSlots(4, gpus=["0", "3", "5"], tpu=False)
    with pytest.raises(ValueError, match="TPU host"):
        launches.DeviceSlots(2, gpus=[], tpu=True)
    assert launches.DeviceSlots(1, gpus=[], tpu=True).prefix() == ()  # one worker: no prefix anywhere


def test_cpu_workers_each_get_their_own_cores_when_there_are_enough():
    cpu = dict(gpus=[], tpu=False, taskset=True)
    assert _prefixes(launches.DeviceSlots(2, cores=[0, 1, 2, 3], **cpu), 2) == [
        ("taskset", "-c", "0,1"), ("taskset", "-c", "2,3")]
    assert _prefixes(launches.DeviceSlots(3, cores=[4, 5, 6, 7], **cpu), 3) == [
        ("taskset", "-c", "4"), ("taskset", "-c", "5"), ("taskset", "-c", "6,7")]
    assert _prefixes(launches.DeviceSlots(3, cores=[0, 1], **cpu), 3) == [(), (), ()]  # fewer cores: shared
    assert _prefixes(launches.DeviceSlots(2, cores=[0, 1], gpus=[], tpu=False, taskset=False), 2) == [(), ()]
    assert launches.DeviceSlots(1, cores=[0, 1], **cpu).prefix() == ()
    if shutil.which("taskset") and len(launches.cpu_cores()) >= 2:  # the prefix really confines a launch
        core = launches.cpu_cores()[-1]
        out = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", "import os; print(os.sched_getaffinity(0))"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == str({core})


def test_run_in_parallel_keeps_each_group_in_order_and_an_interrupt_stops_the_rest():
    recorded, lock = [], threading.Lock()

    def run(job):
        time.sleep(0.01)
        return job * 10

    def record(job, row):
        with lock:
            recorded.append((job, row))

    groups = [[1, 2, 3], [4, 5], [6]]
    launches.run_in_parallel(groups, run, record, workers=2)
    assert sorted(recorded) == [(j, j * 10) for j in range(1, 7)]
    for group in groups:
        assert [j for j, _ in recorded if j in group] == group

    # job 4 raises while job 1 runs; job 1 returns only once the launches were stopped: nothing after
    # the interrupt is recorded and group [1, 2, 3] never reaches job 2
    recorded.clear()
    ran, released = [], threading.Event()

    def run_until_4(job):
        ran.append(job)
        if job == 4:
            raise KeyboardInterrupt
        released.wait(10)
        return job

    with pytest.raises(KeyboardInterrupt):
        launches.run_in_parallel([[1, 2, 3], [4, 5]], run_until_4, record, workers=2, stop_launches=released.set)
    time.sleep(0.1)  # job 1's worker finishes after the pool has been left
    assert released.is_set() and sorted(ran) == [1, 4] and recorded == []


def test_subprocess_launcher_logs_and_stop_all_ends_running_launches(tmp_path):
    launcher = launches.SubprocessLauncher()
    log = tmp_path / "ok.log"
    assert launcher([sys.executable, "-c", "print('hello')"], str(log), str(tmp_path)) == 0
    assert log.read_text().splitlines()[1] == "hello"  # first line: the command

    codes = []
    worker = threading.Thread(target=lambda: codes.append(launcher(
        [sys.executable, "-c", "import time; time.sleep(60)"], str(tmp_path / "slow.log"), str(tmp_path))))
    start = time.monotonic()
    worker.start()
    while not launcher._live and time.monotonic() - start < 10:
        time.sleep(0.05)
    launcher.stop_all()
    worker.join(timeout=20)
    assert not worker.is_alive() and codes and codes[0] != 0 and time.monotonic() - start < 20


def test_a_stopped_launcher_starts_nothing_more(tmp_path):
    # a worker that passed its stop check just before the runner stopped must not start a launch
    # that nobody would stop or record
    launcher = launches.SubprocessLauncher()
    launcher.stop_all()
    marker = tmp_path / "ran"
    code = launcher([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], str(tmp_path / "late.log"), str(tmp_path))
    assert code != 0 and not marker.exists()
    assert "not started" in (tmp_path / "late.log").read_text()
