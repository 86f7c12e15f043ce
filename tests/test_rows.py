"""The suite's JSONL rows: append/read round trip, the killed-mid-write repair, the row that counts."""
import json
import os

import pytest

from experiments import rows


def _row(method="ce", status="ok", seed=0, protocol="cpu", **extra):
    return {"dataset": "a", "method": method, "seed": seed, "protocol": protocol, "status": status, **extra}


def test_append_then_read_round_trips_every_value(tmp_path):
    path = str(tmp_path / "r.jsonl")
    assert rows.read_rows(path) == []  # no file yet: nothing finished
    written = [_row(test={"mean": {"rmse": 0.25}}, command="py launch.py --x='a b'"),
               _row("genre2", "failed", error="error: boom", returncode=2),
               _row("lightgbm", rmse_sd=float("nan"))]
    for row in written:
        rows.append_row(path, row)
    read = rows.read_rows(path)
    assert read[:2] == written[:2]
    assert read[2]["method"] == "lightgbm" and read[2]["rmse_sd"] != read[2]["rmse_sd"]  # NaN survives
    with open(path) as f:
        lines = f.read().split("\n")
    assert len(lines) == 4 and lines[-1] == ""  # one line per row, each ended by a newline
    assert [json.loads(line)["method"] for line in lines[:-1]] == ["ce", "genre2", "lightgbm"]


def test_an_incomplete_last_line_is_ignored_and_cut_off_only_on_repair(tmp_path, capsys):
    path = str(tmp_path / "r.jsonl")
    rows.append_row(path, _row())
    complete = os.path.getsize(path)
    with open(path, "a") as f:
        f.write('{"dataset": "a", "meth')  # the suite was killed in the middle of a write
    assert rows.read_rows(path) == [_row()]
    assert os.path.getsize(path) == complete + len('{"dataset": "a", "meth')  # reading alone keeps the file
    assert "incomplete last line (22 bytes)" in capsys.readouterr().err

    assert rows.read_rows(path, repair=True) == [_row()]
    assert os.path.getsize(path) == complete and "cut off" in capsys.readouterr().err
    rows.append_row(path, _row("remax"))  # the next append starts a fresh line
    assert [r["method"] for r in rows.read_rows(path)] == ["ce", "remax"]
    assert capsys.readouterr().err == ""


def test_a_file_of_only_an_incomplete_line_has_no_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"dataset"')
    assert rows.read_rows(str(path), repair=True) == [] and path.read_text() == ""


def test_a_malformed_complete_line_names_its_line_number(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_row()) + "\n\nnot json\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:3: not a JSON line"):
        rows.read_rows(str(path))


def test_latest_rows_keeps_the_last_success_else_the_last_row():
    history = [_row("ce", "failed", error="first"), _row("ce", "ok", wall_time_s=1.0),
               _row("ce", "failed", error="later"),  # a success is not undone by a later failure
               _row("genre2", "failed", error="one"), _row("genre2", "failed", error="two"),
               _row("remax", "ok", wall_time_s=1.0), _row("remax", "ok", wall_time_s=2.0),
               _row("ce", "ok", protocol="paper", wall_time_s=3.0), _row("ce", "ok", seed=1, wall_time_s=4.0)]
    latest = rows.latest_rows(history)
    assert set(latest) == {("a", "ce", 0, "cpu"), ("a", "genre2", 0, "cpu"), ("a", "remax", 0, "cpu"),
                           ("a", "ce", 0, "paper"), ("a", "ce", 1, "cpu")}
    assert latest[("a", "ce", 0, "cpu")]["wall_time_s"] == 1.0
    assert latest[("a", "genre2", 0, "cpu")]["error"] == "two"
    assert latest[("a", "remax", 0, "cpu")]["wall_time_s"] == 2.0
    assert set(rows.latest_rows(history, "paper")) == {("a", "ce", 0, "paper")}
    assert rows.row_key({**_row(), "seed": "1"}) == ("a", "ce", 1, "cpu")  # seeds compare as ints


def test_method_entries_of_a_workdir(tmp_path):
    assert rows.method_entries(str(tmp_path)) == {}  # before the first evaluation
    (tmp_path / "results.json").write_text(json.dumps({"dataset": "a", "phases": {"ce": {"num_samples": 8}}}))
    assert rows.method_entries(str(tmp_path)) == {"ce": {"num_samples": 8}}
    (tmp_path / "config.json").write_text('{"versions": ')  # cut short
    assert rows.read_json(str(tmp_path / "config.json")) is None
