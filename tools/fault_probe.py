"""Probes launch.py as an operator would: damaged files, two launches, bad values, bad data, a full
or read-only disk, kill -9 and SIGTERM at random moments. Prints one table row per case (exit code,
last stderr line, traceback?, what was left behind) and writes the table to --out as Markdown.

  python tools/fault_probe.py --out=/tmp/probe.md [--kills=6] [--sigterms=3] [--cases=all|damage,config,data,fs]

Runs the `tiny` config on the bundled cpu_act dataset (1 CPU device), each case in its own copy of a
trained reference workdir where it needs one. The full-disk and read-only cases mount tmpfs and
need root; without it they are reported as skipped. ~15-25 min on 2 cores.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(REPO, "datasets")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("XLA_FLAGS", None)


def launch_cmd(workdir: str, data_dir: str = BUNDLED, *overrides: str) -> list[str]:
    return [sys.executable, os.path.join(REPO, "launch.py"), f"--config={REPO}/experiments/configs/tabular.py:tiny",
            f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.dataset=cpu_act", "--noprogress",
            *overrides]


def run(cmd, timeout=900) -> tuple[int, str]:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return p.returncode, p.stderr


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING: All log")]
    return lines[-1].strip()[:160] if lines else ""


def leftovers(workdir: str, existed: bool) -> str:
    if not os.path.exists(workdir):
        return "none" if not existed else "workdir removed"
    tmp = glob.glob(os.path.join(workdir, "**", "*orbax-checkpoint-tmp*"), recursive=True)
    parts = [f"{len(tmp)} orbax tmp"] if tmp else []
    if not existed:
        parts.append("new workdir: " + ",".join(sorted(os.listdir(workdir))) if os.path.isdir(workdir) else "a file")
    return "; ".join(parts) or "unchanged workdir"


def step_file(workdir: str, phase: str, which: str = "best") -> str:
    """The largest array data file (OCDBT) of the newest step: a file every restore reads."""
    steps = sorted((d for d in os.listdir(os.path.join(workdir, phase, which)) if d.isdigit()), key=int)
    files = glob.glob(os.path.join(workdir, phase, which, steps[-1], "**", "ocdbt.process_0", "d", "*"),
                      recursive=True)
    return max(files, key=os.path.getsize)


def flip_bytes(path: str, n: int = 64) -> None:
    with open(path, "r+b") as f:
        size = os.path.getsize(path)
        f.seek(max(0, size // 2 - n // 2))
        data = bytearray(f.read(n))
        f.seek(max(0, size // 2 - n // 2))
        f.write(bytes(b ^ 0xFF for b in data))


def copy_dataset(root: str, edit) -> str:
    data_dir = os.path.join(root, f"data{random.randrange(10**9)}")
    shutil.copytree(os.path.join(BUNDLED, "cpu_act"), os.path.join(data_dir, "cpu_act"))
    edit(os.path.join(data_dir, "cpu_act"))
    return data_dir


def scale_npy(name: str, fn):
    def edit(folder):
        path = os.path.join(folder, name)
        np.save(path, fn(np.load(path, allow_pickle=True).astype(np.float64)))
    return edit


def set_first(a, value):
    a = a.copy()
    a.flat[0] = value
    return a


def mount_tmpfs(path: str, options: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True).returncode == 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="")
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--sigterms", type=int, default=3)
    p.add_argument("--cases", default="all")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    random.seed(args.seed)
    groups = {"damage", "config", "data", "fs", "kill"} if args.cases == "all" else set(args.cases.split(","))
    root = tempfile.mkdtemp(prefix="genre_probe_")
    rows = []

    def record(case: str, cmd, workdir: str, expect: str, existed: bool | None = None):
        existed = os.path.exists(workdir) if existed is None else existed
        started = time.time()
        rc, err = run(cmd)
        row = {"case": case, "exit": rc, "last line": last_line(err), "traceback": "Traceback" in err,
               "left": leftovers(workdir, existed), "expect": expect, "s": round(time.time() - started)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return rc, err

    ref = os.path.join(root, "ref")
    started = time.time()
    rc, err = run(launch_cmd(ref))
    ref_s = time.time() - started
    if rc != 0:
        print(f"reference run failed:\n{err[-3000:]}", file=sys.stderr)
        return 1
    ref_results = open(os.path.join(ref, "results.json")).read()
    print(f"reference run: {ref_s:.0f}s", flush=True)

    def fresh(name: str) -> str:
        w = os.path.join(root, name)
        shutil.copytree(ref, w)
        return w

    if "damage" in groups:
        w = fresh("flip_ce")
        flip_bytes(step_file(w, "ce"))
        record("64 bytes flipped in ce/best (results.json present)", launch_cmd(w), w, "error naming the step")
        w = fresh("flip_rl")
        flip_bytes(step_file(w, "rl/genre2"))
        record("64 bytes flipped in rl/genre2/best", launch_cmd(w), w, "error naming the step")
        w = fresh("flip_last")
        flip_bytes(step_file(w, "ce", "last"))
        record("64 bytes flipped in the newest ce/last step", launch_cmd(w, BUNDLED, "--config.ce.max_epochs=3"), w,
               "warning, resume from the older step")
        w = fresh("no_manifest")
        for f in glob.glob(os.path.join(w, "ce", "best", "*", "**", "manifest.ocdbt"), recursive=True):
            os.remove(f)
        record("Orbax manifest deleted (ce/best)", launch_cmd(w), w, "error naming the step")
        w = fresh("truncated")
        path = step_file(w, "ce")
        os.truncate(path, os.path.getsize(path) // 2)
        record("data file truncated (ce/best)", launch_cmd(w), w, "error naming the step")
        w = fresh("truncated_nosum")
        path = step_file(w, "ce")
        os.truncate(path, os.path.getsize(path) // 2)
        os.remove(os.path.join(w, "ce", "best", "checksums.json"))
        record("data file truncated, checksums.json deleted", launch_cmd(w), w, "one error line")
        w = fresh("empty_step")
        for step in glob.glob(os.path.join(w, "ce", "best", "[0-9]*")):
            for entry in os.listdir(step):
                shutil.rmtree(os.path.join(step, entry), ignore_errors=True) if os.path.isdir(
                    os.path.join(step, entry)) else os.remove(os.path.join(step, entry))
        record("empty step folder (ce/best)", launch_cmd(w), w, "error naming the step")
        w = fresh("config_shape")
        json.dump([1, 2], open(os.path.join(w, "config.json"), "w"))
        record("config.json holds a list", launch_cmd(w), w, "error naming the file")
        w = fresh("results_shape")
        json.dump({"results": 3}, open(os.path.join(w, "results.json"), "w"))
        record("results.json of the wrong shape", launch_cmd(w), w, "error naming the file")
        w = os.path.join(root, "two")  # trains from scratch, so the first launch holds the lock a while
        proc = subprocess.Popen(launch_cmd(w), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        lock = os.path.join(w, ".lock")
        while proc.poll() is None and not (os.path.exists(lock) and os.path.getsize(lock) > 0):
            time.sleep(0.1)
        record("second launch on a busy workdir", launch_cmd(w), w, "refused, one line", existed=True)
        proc.wait()
        record("the first launch of that pair, afterwards: resumes", launch_cmd(w), w, "exit 0")

    if "config" in groups:
        for override, expect in [
            ("--config.ce.learning_rate=-1", "one line"), ("--config.rl.learning_rate=-1", "one line"),
            ("--config.model.dropout=2.0", "one line"), ("--config.rl.max_epochs=-1", "one line"),
            ("--config.rl.temperature=0", "one line"), ("--config.eval.temperature=0", "one line"),
            ("--config.seed=-1", "one line"), ("--config.rl.num_rollouts=0", "one line, before CE"),
            ("--config.rl.num_rollouts=1", "one line (ReMax/GRPO need a group)"),
            ("--config.ce.max_epochs=0", "one line"),
        ]:
            w = os.path.join(root, f"cfg{len(rows)}")
            record(override, launch_cmd(w, BUNDLED, override), w, expect)
        rc, err = run([arg if not arg.startswith("--workdir=") else "--workdir=" for arg in launch_cmd("x")])
        rows.append({"case": "--workdir= (empty)", "exit": rc, "last line": last_line(err),
                     "traceback": "Traceback" in err, "left": "none" if not os.path.exists(
                         os.path.join(REPO, "ce")) else "ce/ in the cwd", "expect": "one line", "s": 0})
        print(json.dumps(rows[-1]), flush=True)

    if "data" in groups:
        for case, edit, expect in [
            ("one train target 1e300", scale_npy("y_train.npy", lambda y: set_first(y, 1e300)), "warning, runs"),
            ("all targets x 1e200", lambda f: [scale_npy(n, lambda y: y * 1e200)(f) for n in
                                              ("y_train.npy", "y_val.npy", "y_test.npy")], "runs"),
            ("one train feature 1e300", scale_npy("N_train.npy", lambda x: set_first(x, 1e300)), "runs"),
            ("one test feature 1e300", scale_npy("N_test.npy", lambda x: set_first(x, 1e300)),
             "one line naming N_test.npy"),
            ("an .npz saved as y_train.npy", lambda f: np.savez(os.path.join(f, "y_train.npz"), y=np.load(
                os.path.join(f, "y_train.npy"))) or os.replace(os.path.join(f, "y_train.npz"),
                                                               os.path.join(f, "y_train.npy")), "one line"),
            ("info.json missing", lambda f: os.remove(os.path.join(f, "info.json")), "warning, runs"),
        ]:
            data_dir = copy_dataset(root, edit)
            w = os.path.join(root, f"data{len(rows)}")
            record(case, launch_cmd(w, data_dir, "--config.phases=ce,eval"), w, expect)

    if "fs" in groups:
        w = os.path.join(root, "a_file")
        open(w, "w").write("not a folder")
        record("workdir is a file", launch_cmd(w), w, "one line", existed=True)
        ro = os.path.join(root, "ro")
        if mount_tmpfs(ro, "ro,size=1m"):
            record("read-only file system", launch_cmd(os.path.join(ro, "run")), os.path.join(ro, "run"), "one line")
            subprocess.run(["umount", ro])
        else:
            rows.append({"case": "read-only file system", "exit": "skipped (needs root to mount tmpfs)"})
        full = os.path.join(root, "full")
        size_kib = sum(os.path.getsize(f) for f in glob.glob(os.path.join(ref, "**", "*"), recursive=True)
                       if os.path.isfile(f)) // 1024
        if mount_tmpfs(full, f"size={max(64, size_kib // 3)}k"):
            record(f"full disk ({max(64, size_kib // 3)} KiB tmpfs; a run writes ~{size_kib} KiB)",
                   launch_cmd(os.path.join(full, "run")), os.path.join(full, "run"), "one line, no partial workdir")
            subprocess.run(["umount", full])
        else:
            rows.append({"case": "full disk", "exit": "skipped (needs root to mount tmpfs)"})

    if "kill" in groups:
        identical = 0
        for i in range(args.kills):
            w = os.path.join(root, f"kill{i}")
            at = random.uniform(3, ref_s)
            proc = subprocess.Popen(launch_cmd(w), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(at)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            rc, err = run(launch_cmd(w))
            same = rc == 0 and open(os.path.join(w, "results.json")).read() == ref_results
            identical += same
            print(json.dumps({"kill -9 at s": round(at, 1), "resume exit": rc, "identical results.json": same}),
                  flush=True)
        rows.append({"case": f"kill -9 at a random moment, then the same command (x{args.kills})",
                     "exit": f"{identical}/{args.kills} byte-identical results.json", "last line": "",
                     "traceback": False, "left": "", "expect": "N/N"})
        stopped = same_after = 0
        codes = []
        for i in range(args.sigterms):
            w = os.path.join(root, f"term{i}")
            proc = subprocess.Popen(launch_cmd(w), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            log = os.path.join(w, "ce", "log.jsonl")
            deadline = time.time() + 600
            while time.time() < deadline and not (os.path.exists(log) and os.path.getsize(log) > 0):
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate()
            codes.append(proc.returncode)
            stopped += proc.returncode == 75 and "Traceback" not in err
            rc, err2 = run(launch_cmd(w))
            same_after += rc == 0 and open(os.path.join(w, "results.json")).read() == ref_results
            print(json.dumps({"sigterm exit": proc.returncode, "line": last_line(err), "resume exit": rc}), flush=True)
        rows.append({"case": f"SIGTERM during CE, then the same command (x{args.sigterms})",
                     "exit": f"exits {sorted(set(codes))}; {stopped}/{args.sigterms} clean stops; "
                             f"{same_after}/{args.sigterms} byte-identical results.json",
                     "last line": "", "traceback": False, "left": "", "expect": "75, N/N"})

    table = ["| case | exit | last line (stderr) | traceback? | left behind |", "|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['case']} | {r['exit']} | {str(r.get('last line', '')).replace('|', '/')} | "
                     f"{'yes' if r.get('traceback') else 'no'} | {r.get('left', '')} |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
