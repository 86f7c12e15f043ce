"""What a training phase writes beside its checkpoints: ``log.jsonl`` (one whole line per epoch, torn
tails dropped on resume), TensorBoard scalars (tensorboardX, no TensorFlow) and, with ``launch.py
--profile``, a ``jax.profiler`` trace of a few steps. ``loop.run`` drives them.
"""
from __future__ import annotations

import glob
import json
import os
import struct
import sys

import jax

from genre_jax import parallel, paths


class StepProfiler:
    """``launch.py --profile=N``: a ``jax.profiler`` trace (TensorBoard/XProf and Perfetto readable) of
    N training steps of the first phase this launch trains, after its first step (which compiles).
    Each traced step is annotated with its phase and number and waited for, so steps do not overlap."""

    def __init__(self, steps: int, out_dir: str):
        self.steps, self.out_dir = int(steps), paths.resolve(out_dir)
        self.calls, self.traced, self.active = 0, 0, False

    def call(self, name: str, step, *args):
        self.calls += 1
        if self.calls == 1 or self.traced >= self.steps:
            return step(*args)
        if not self.active:
            jax.profiler.start_trace(self.out_dir, create_perfetto_trace=True)
            self.active = True
        with jax.profiler.StepTraceAnnotation(name, step_num=self.traced):
            out = jax.block_until_ready(step(*args))
        self.traced += 1
        if self.traced >= self.steps:
            self.close()
        return out

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


class Board:
    """TensorBoard scalars of one phase (``tensorboard --logdir <workdir>/tensorboard``), written by
    the main process with tensorboardX (no TensorFlow); the writer opens at the first epoch.

    tensorboardX writes gs:// itself with ``google-cloud-storage`` and s3:// with ``boto3``; a bucket
    workdir without that package (or of another scheme) gets no scalars and one warning, since
    the scalars are only a view of ``log.jsonl``, which is written in any case."""

    def __init__(self, log_dir: str):
        self.log_dir, self.writer, self.off = log_dir, None, False

    def scalars(self, step: int, values: dict) -> None:
        if not parallel.is_main_process() or self.off:
            return
        if self.writer is None:
            from tensorboardX import SummaryWriter
            missing = board_unsupported(self.log_dir)
            if missing:
                print(f"warning: no TensorBoard scalars in {self.log_dir}: {missing}; log.jsonl has the same "
                      f"values", file=sys.stderr)
                self.off = True
                return
            self.writer = SummaryWriter(self.log_dir)
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def board_unsupported(log_dir: str) -> str:
    """Why tensorboardX cannot write to ``log_dir`` (a bucket URI), or "" when it can."""
    found = paths.scheme(log_dir)
    if found is None:
        return ""
    from tensorboardX import record_writer
    package = {"gs": ("GCS_ENABLED", "google-cloud-storage"), "s3": ("S3_ENABLED", "boto3")}.get(found)
    if found not in record_writer.REGISTERED_FACTORIES or package is None:
        return f"tensorboardX cannot write {found}:// paths"
    return "" if getattr(record_writer, package[0], False) else f"tensorboardX needs {package[1]} for {found}://"


def read_scalars(log_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every ``tag`` scalar ``Board`` wrote under ``log_dir``, oldest file first: a
    resumed phase appends a new event file, so epochs a killed launch ran (and its successor ran again)
    all appear. Read with tensorboardX's protobuf (TFRecord framing, CRCs unchecked); a tail torn by a
    kill is dropped."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto import event_pb2
    out = []
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        at = 0
        while at + 12 <= len(data):  # [length u64][crc u32][record][crc u32]
            (size,) = struct.unpack("<Q", data[at:at + 8])
            if at + 16 + size > len(data):
                break
            try:
                event = event_pb2.Event.FromString(data[at + 12:at + 12 + size])
            except DecodeError:  # a corrupt record: what follows it cannot be framed either
                print(f"warning: {path}: unreadable record at byte {at}; the rest of the file is skipped",
                      file=sys.stderr)
                break
            at += 16 + size
            out += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return out


def epoch_seconds(workdir: str) -> float:
    """Seconds the phases under ``workdir`` spent in epochs (training and validation, each launch's
    first-epoch compiles included; not loading, checkpoint writes or evaluation), summed over every
    launch that ran them: ``Board``'s ``time/epoch_s``.
    ``log.jsonl`` keeps no timings (identical runs keep identical logs), so this is where a resumed
    run's earlier launches are still counted."""
    events = glob.glob(os.path.join(workdir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
    return float(sum(value for d in {os.path.dirname(p) for p in events} for _, value in read_scalars(d, "time/epoch_s")))


def truncate_log(path: str, num_epochs: int) -> None:
    """Drops log lines of epochs after the resumed checkpoint (a crash may have logged them first)."""
    if not parallel.is_main_process() or not paths.exists(path):
        return
    kept = []
    with paths.open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a torn line: the process died while appending it
                print(f"warning: {path}:{number}: dropping a torn log line (the run was killed while writing it)",
                      file=sys.stderr)
                continue
            if isinstance(record, dict) and record.get("epoch", num_epochs) < num_epochs:
                kept.append(line if line.endswith("\n") else line + "\n")
    paths.write_atomic(path, "".join(kept))


def append_log(path: str, record: dict) -> None:
    """One write of the whole line (``paths.append_line``), so a kill leaves the line or nothing
    (at worst a torn tail, which ``truncate_log`` drops on resume)."""
    if not parallel.is_main_process():
        return
    paths.append_line(path, json.dumps(record) + "\n")
