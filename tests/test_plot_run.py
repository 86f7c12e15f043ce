"""plot_run: one PNG of a workdir's training curves."""
from experiments import plot_run


def test_plot_run_draws_every_phase_of_a_workdir(tiny_run, tmp_path, capsys):
    workdir, _ = tiny_run
    assert set(plot_run.read_logs(workdir)) == {"ce", "rl/genre2"}
    assert plot_run.main([workdir, f"--out={tmp_path / 'c.png'}"]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_run.main([str(tmp_path)]) == 2 and "no <phase>/log.jsonl" in capsys.readouterr().err
