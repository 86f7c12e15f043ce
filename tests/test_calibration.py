"""Post-hoc calibration: split-conformal half-widths and their coverage, distribution reports."""
import numpy as np

from genre_jax import calibration, scores


def test_conformal_half_width_is_the_ceil_n_plus_1_level_th_residual():
    point = np.zeros(9)
    target = np.array([0.3, -0.1, 0.9, -0.5, 0.2, 0.7, -0.4, 0.05, 1.5])  # |r| sorted: .05 .1 .2 .3 .4 .5 .7 .9 1.5
    half = calibration.conformal_half_widths(calibration.sorted_residuals(point, target), levels=(0.5, 0.8, 0.9, 0.95))
    assert half == {"0.5": 0.4, "0.8": 0.9, "0.9": 1.5, "0.95": None}  # ceil(10 l) = 5, 8, 9, 10 > 9
    report = calibration.conformal_report(point, target, {"0.5": 0.4})
    assert report == {"coverage": {"0.5": 5 / 9}, "width": {"0.5": 0.8}}
    assert calibration.conformal_report(point, target, {"0.95": None}) == {"coverage": {"0.95": None},
                                                                           "width": {"0.95": None}}


def test_conformal_index_is_exact_where_floating_point_rounds_up():
    # (74 + 1) * 0.68 = 51 exactly, 51.00000000000001 in floating point (whose ceiling is 52)
    assert (74 + 1) * 0.68 > 51
    residuals = np.arange(1.0, 75.0)  # the k-th smallest residual is k
    assert calibration.conformal_half_width(residuals, 0.68) == 51.0
    assert calibration.conformal_half_width(residuals, np.float64(0.68)) == 51.0
    assert calibration.conformal_half_width(residuals, 0.9) == 68.0  # ceil(67.5)
    assert calibration.conformal_half_width(residuals[:9], 0.9) == 9.0  # ceil(9.0): a true integer stays
    assert calibration.conformal_half_width(residuals[:9], 0.95) is None  # ceil(9.5) = 10 > n


def test_conformal_intervals_cover_at_least_the_level_on_exchangeable_data():
    rng = np.random.default_rng(0)
    covered = {k: [] for k in ("0.5", "0.8", "0.9")}
    for _ in range(400):  # a badly miscalibrated model: its point ignores half of the signal
        x = rng.normal(size=60)
        y = x + rng.standard_t(3, size=60)
        point = 0.5 * x
        half = calibration.conformal_half_widths(calibration.sorted_residuals(point[:30], y[:30]),
                                                 levels=(0.5, 0.8, 0.9))
        for k, q in half.items():
            covered[k].append(np.mean(np.abs(y[30:] - point[30:]) <= q))
    for k, cov in covered.items():
        # guaranteed in expectation: >= level (and < level + 1/(n+1)); the mean of 400 repeats lies
        # within 4 standard errors of that range (0.026, 0.020 and 0.015 for these levels)
        margin = 4 * np.std(cov) / np.sqrt(len(cov))
        assert float(k) - margin <= np.mean(cov) <= float(k) + 1 / 31 + margin, (k, np.mean(cov), margin)


def test_distribution_report_of_a_discrete_distribution():
    dist = scores.Discrete([-1.0, 0.0, 1.0], [[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]])
    report = calibration.distribution_report(dist, [0.0, 0.0], levels=(0.5,))
    # means 0 and 1; 50 % intervals [Q(.25), Q(.75)]: [-1, 0] (CDF -1: .25, 0: .75) holds 0, [1, 1] does not
    assert np.isclose(report["rmse_mean"], np.sqrt(0.5))
    assert report["coverage"] == {"0.5": 0.5} and report["width"] == {"0.5": 0.5}
    assert np.isclose(report["crps"], dist.crps([0.0, 0.0]))


def test_samples_share_the_discrete_interface():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(50, 64))
    target = rng.normal(size=50)
    dist = scores.Samples(samples)
    assert np.allclose(dist.mean(), samples.mean(1))
    assert dist.crps(target) == scores.crps(samples, target)
    report = calibration.distribution_report(dist, target, levels=(0.9,))
    assert report["coverage"]["0.9"] == scores.interval_coverage(samples, target, 0.9)


def test_best_temperature_takes_the_lowest_crps_and_the_lower_temperature_on_ties():
    assert calibration.best_temperature({0.5: 0.3, 1.0: 0.2, 2.0: 0.25}) == 1.0
    assert calibration.best_temperature({2.0: 0.2, 1.0: 0.2}) == 1.0


def _descend(curve, start=1.0):
    calls = []

    def crps_at(t):
        calls.append(t)
        return curve(t)

    scored = calibration.descend_temperatures(crps_at, start)
    assert sorted(calls) == sorted(scored) and len(set(calls)) == len(calls)  # each temperature decoded once
    return scored


def test_temperature_descent_finds_the_grid_minimum_of_unimodal_curves_with_fewer_decodes():
    grid = calibration.TEMPERATURES
    for best in grid:  # a V and a smooth bowl around every grid point
        for curve in (lambda t: abs(np.log(t) - np.log(best)), lambda t: (t - best) ** 2 + 0.1):
            scored = _descend(curve)
            assert calibration.best_temperature(scored) == best
            assert calibration.best_temperature(scored) == calibration.best_temperature({t: curve(t) for t in grid})
            assert len(scored) <= abs(grid.index(best) - grid.index(1.0)) + 3 < len(grid) + 1
    assert sorted(_descend(lambda t: abs(t - 1.0))) == [0.85, 1.0, 1.2]  # already best: the two neighbours only
    # a tie between neighbours goes to the lower temperature, as best_temperature does
    flat = _descend(lambda t: 0.0 if t in (0.85, 1.0) else 1.0)
    assert calibration.best_temperature(flat) == 0.85 == calibration.best_temperature(
        {t: 0.0 if t in (0.85, 1.0) else 1.0 for t in grid})
    # a start off the grid begins at the nearest grid point; a curve falling to the grid's edge walks there
    assert calibration.best_temperature(_descend(lambda t: -t, start=1.9)) == max(grid) == 16.0
    assert calibration.best_temperature(_descend(lambda t: t, start=0.6)) == 0.5
    assert calibration.descend_temperatures(lambda t: 0.3, temperatures=(1.5,)) == {1.5: 0.3}  # a one-point grid
    # where the curve is not unimodal the descent stops at the first rise (documented)
    bumpy = {0.5: 0.0, 0.7: 0.9, 0.85: 0.8, 1.0: 0.5, 1.2: 0.6}
    assert calibration.best_temperature(_descend(lambda t: bumpy.get(t, 1.0))) == 1.0


def test_calibration_file_in_a_bucket_workdir(tmp_path, bucket):
    fitted = {"temperature": {"value": 1.5}, "conformal": {"residuals_z": [0.1, 0.2]}}
    out_dir = bucket.URI + "/run/eval/genre2"
    assert calibration.load(out_dir) is None
    (bucket.root / "run" / "eval" / "genre2").mkdir(parents=True)  # the fake is a POSIX folder
    calibration.save(out_dir, fitted)
    calibration.save(str(tmp_path), fitted)
    assert calibration.load(out_dir) == fitted
    assert (bucket.root / "run" / "eval" / "genre2" / calibration.FILE).read_bytes() == \
        (tmp_path / calibration.FILE).read_bytes()


def test_the_grid_reaches_past_4_and_its_top_is_flagged():
    grid = calibration.TEMPERATURES
    assert list(grid) == sorted(set(grid)) and grid[:10] == (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0)
    assert max(grid) == 16.0  # the stated cap
    assert calibration.at_grid_top(16.0) and not calibration.at_grid_top(4.0)
    assert calibration.at_grid_top(4.0, temperatures=(1.0, 4.0))  # the old grid's top


def test_distribution_report_carries_the_quantile_scores_at_its_levels():
    dist = scores.Discrete([-1.0, 0.0, 1.0], [[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]])
    report = calibration.distribution_report(dist, [0.0, 0.0], levels=(0.5, 0.9))
    assert {"rmse_mean", "crps", "coverage", "width"} <= set(report)  # the keys results.json had
    expected = scores.quantile_scores(dist, np.array([0.0, 0.0]), interval_levels=(0.5, 0.9))
    assert report["interval_score"] == expected["interval_score"] and set(expected["interval_score"]) == {"0.5", "0.9"}
    assert report["log_score"] == expected["log_score"] and report["pinball"] == expected["pinball"]
