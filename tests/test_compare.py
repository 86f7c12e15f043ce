"""compare.py on two synthetic result files: cells, seed means, the change line, completeness, errors."""
import json

from experiments import compare


def _row(dataset, method, rmse, seed=0, protocol="cpu", wall_s=120.0):
    if rmse is None:
        return {"dataset": dataset, "method": method, "seed": seed, "protocol": protocol, "status": "failed"}
    split = {"mean": {"rmse": rmse, "mae": rmse, "r2": 1 - rmse, "spearman": 0.9},
             "distribution": {"crps": rmse / 2, "coverage_90": 0.9}}
    return {"dataset": dataset, "method": method, "seed": seed, "protocol": protocol, "status": "ok",
            "test": split, "val": split, "wall_time_s": wall_s}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_two_files_side_by_side(tmp_path, capsys):
    first = _write(tmp_path / "a.jsonl", [
        _row("d1", "ce", 0.5), _row("d1", "genre2", 0.4), _row("d2", "ce", 0.3), _row("d2", "genre2", 0.3),
        _row("d3", "ce", 0.9)])
    second = _write(tmp_path / "b.jsonl", [
        _row("d1", "ce", 0.6, protocol="paper"), _row("d1", "genre2", 0.2, protocol="paper"),
        _row("d1", "genre2", 0.4, seed=1, protocol="paper"),  # seeds averaged: 0.3
        _row("d2", "ce", 0.2, protocol="paper", wall_s=600), _row("d2", "genre2", None, protocol="paper")])
    assert compare.main([first, second, "--labels=cpu; paper", "--methods=ce,genre2", "--wall"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "| dataset | rows | ce | genre2 |"
    assert lines[2:6] == ["| d1 | cpu | 0.5000 (2 min) | 0.4000 (2 min) |",
                          "| d1 | paper | 0.6000 (2 min) | 0.3000 (2 min) |",
                          "| d2 | cpu | 0.3000 (2 min) | 0.3000 (2 min) |",
                          "| d2 | paper | 0.2000 (10 min) | – |"]
    # ce: +0.1 on d1, -0.1 on d2 -> mean 0, one better (lower RMSE); genre2: only d1 has both, -0.1
    assert lines[6] == "| mean change | paper − cpu | +0.0000, 1/2 better | -0.1000, 1/1 better |"
    assert len(lines) == 7  # d3 has no row in the second file
    assert "different seeds for d1" in captured.err

    assert compare.main([first, second, "--methods=ce,genre2", "--complete", "--metric=r2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:-1]] == ["| d1", "| d1"]  # d2 lacks genre2 in b
    assert lines[-1].endswith("| -0.1000, 0/1 better | +0.1000, 1/1 better |")  # R²: higher is better

    # a failed seed leaves the cell empty; a metric without a value (NaN) stays out of the change line
    third = _write(tmp_path / "c.jsonl", [_row("d1", "ce", 0.5, protocol="paper"), _row("d1", "ce", None, seed=1,
                                                                                        protocol="paper"),
                                          _row("d2", "ce", 0.4, protocol="paper")])
    rows = [json.loads(line) for line in open(first)]
    rows[2]["test"]["mean"]["rmse"] = float("nan")  # d2 ce
    nan_first = _write(tmp_path / "d.jsonl", rows)
    assert compare.main([nan_first, third, "--methods=ce"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # d1 has no cell in c.jsonl, so it is not listed; d2 compares NaN with 0.4: shown, left out of the change
    assert lines[2:] == ["| d2 | d.jsonl | – |", "| d2 | c.jsonl | 0.4000 |", "| mean change | c.jsonl − d.jsonl | – |"]

    # 'a+b' reads two files as one side, the later file's row of a key winning
    rerun = _write(tmp_path / "e.jsonl", [_row("d2", "ce", 0.25)])
    assert compare.main([f"{first}+{rerun}", third, "--methods=ce", "--labels=cpu;paper"]) == 0
    assert capsys.readouterr().out.splitlines()[2:4] == ["| d2 | cpu | 0.2500 |", "| d2 | paper | 0.4000 |"]


def test_bad_arguments_are_one_line(tmp_path, capsys):
    first = _write(tmp_path / "a.jsonl", [_row("d1", "ce", 0.5), _row("d1", "ce", 0.4, protocol="paper")])
    assert compare.main([first, first, "--labels=only one"]) == 2
    assert "expected two, separated by ';'" in capsys.readouterr().err
    assert compare.main([first, first]) == 2
    assert "a.jsonl: " in (err := capsys.readouterr().err) and "--protocols=<first>,<second>" in err
    assert compare.main([first, str(tmp_path / "none.jsonl"), "--protocols=cpu,cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.jsonl: no rows" in err
    assert compare.main([f"{first}+{tmp_path / 'typo.jsonl'}", first, "--protocols=cpu,cpu"]) == 2
    assert "typo.jsonl: no rows" in capsys.readouterr().err
