"""What a phase writes beside its checkpoints: log.jsonl lines on a local disk and a bucket alike,
TensorBoard scalars or one warning where they cannot be written (the profiler: tests/test_loop.py)."""
import json
import os
import struct

from genre_jax import runlog


def test_a_bucket_log_is_appended_and_truncated_like_a_local_one(tmp_path, bucket, capsys):
    local, uri = str(tmp_path / "log.jsonl"), bucket.URI + "/run/ce/log.jsonl"
    (bucket.root / "run" / "ce").mkdir(parents=True)  # the fake is a POSIX folder: Orbax would have made it
    for path in (local, uri):
        for epoch in range(3):
            runlog.append_log(path, {"epoch": epoch, "loss": 0.5})
        runlog.truncate_log(path, 2)  # resumed after epoch 2: epoch 2's line goes
        runlog.append_log(path, {"epoch": 2, "loss": 0.25})
    assert (bucket.root / "run" / "ce" / "log.jsonl").read_bytes() == (tmp_path / "log.jsonl").read_bytes()
    assert [json.loads(line)["loss"] for line in open(local)] == [0.5, 0.5, 0.25]
    runlog.truncate_log(bucket.URI + "/run/absent.jsonl", 0)  # no log yet: nothing to do
    assert os.listdir(bucket.root / "run" / "ce") == ["log.jsonl"]


def test_tensorboard_on_a_bucket_needs_its_package_or_is_skipped_with_one_warning(tmp_path, monkeypatch, capsys):
    from tensorboardX import record_writer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(record_writer, "GCS_ENABLED", False)
    assert runlog.board_unsupported(str(tmp_path)) == ""
    assert runlog.board_unsupported("gs://b/run/tensorboard/ce") == "tensorboardX needs google-cloud-storage for gs://"
    assert runlog.board_unsupported("az://b/run") == "tensorboardX cannot write az:// paths"
    board = runlog.Board("gs://b/run/tensorboard/ce")
    board.scalars(0, {"lr": 1.0})
    board.scalars(1, {"lr": 1.0})
    board.close()
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == ["warning: no TensorBoard scalars in gs://b/run/tensorboard/ce: tensorboardX needs "
                        "google-cloud-storage for gs://; log.jsonl has the same values"]
    assert os.listdir(tmp_path) == []  # no local folder named gs:
    monkeypatch.setattr(record_writer, "GCS_ENABLED", True)  # with the package, tensorboardX writes gs:// itself
    assert runlog.board_unsupported("gs://b/run/tensorboard/ce") == ""


def test_epoch_seconds_count_every_launch_of_every_phase_and_skip_a_torn_or_corrupt_tail(tmp_path, capsys):
    for folder, seconds in (("ce", [1.5, 2.0]), ("rl/genre2", [4.0])):
        board = runlog.Board(str(tmp_path / "tensorboard" / folder))
        for epoch, s in enumerate(seconds):
            board.scalars(epoch, {"time/epoch_s": s, "lr": 100.0})
        board.close()
    rl_dir = tmp_path / "tensorboard" / "rl" / "genre2"
    (first,) = rl_dir.iterdir()
    # a second launch of the RL phase (its own event file), killed while writing its last record
    torn = struct.pack("<Q", 64) + bytes(4) + bytes(10)  # a record header, and 10 of its 64 bytes
    (rl_dir / (first.name + ".2")).write_bytes(first.read_bytes() + torn)
    corrupt = struct.pack("<Q", 8) + bytes(4) + b"\xff" * 8 + bytes(4)  # framed, but no Event
    (tmp_path / "tensorboard" / "ce" / "events.out.tfevents.9.vm").write_bytes(corrupt + first.read_bytes())
    assert runlog.read_scalars(str(tmp_path / "tensorboard" / "ce"), "time/epoch_s") == [(0, 1.5), (1, 2.0)]
    assert runlog.read_scalars(str(rl_dir), "time/epoch_s") == [(0, 4.0), (0, 4.0)]
    assert runlog.epoch_seconds(str(tmp_path)) == 1.5 + 2.0 + 4.0 + 4.0  # the corrupt file: nothing after it
    assert "events.out.tfevents.9.vm: unreadable record at byte 0" in capsys.readouterr().err
    assert runlog.epoch_seconds(str(tmp_path / "absent")) == 0.0
