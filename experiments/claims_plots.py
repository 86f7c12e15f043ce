"""The claim studies' plots (experiments/claims_report.py writes them beside its tables): the means
with their bootstrap intervals against the budget (or, in the one-budget studies, against the
tokenizer or expert weight), each (dataset, seed) as a thin line, and the reliability diagrams."""
from __future__ import annotations

import math

import numpy as np

from experiments.configs import claims as claims_config
from experiments.configs.claims import BUDGET_LABEL, BUDGET_ORDER, LEVELS

# Budgets along the x-axis by their size (log2 of the fraction of the paper's rollouts per input);
# `cpu` (~60 updates whatever the dataset's size) sits at 1/16: fewer rollouts than 1/8 on all but the
# two smallest datasets (boston 24 epochs, concrete 12; 2-8 on the others)
BUDGET_POSITION = {"cpu": -4.0, "1of8": -3.0, "1of3": math.log2(1 / 3), "1": 0.0}
TUKEY_K = 10.0  # values beyond the quartiles ± 10 IQR are drawn at the panel's edge, marked with their value


def level_label(level: str) -> str:
    """A variant's last part as an axis label: 'n4x4' -> '(4, 4)', 'ieee' -> 'IEEE', 'lambda0p05' -> 'λ 0.05'."""
    base, x, digits = level[1:].partition("x")
    if level.startswith("n") and x and base.isdigit() and digits.isdigit():
        return f"({base}, {digits})"
    if level == "ieee":
        return "IEEE"
    return "λ " + level[len("lambda"):].replace("p", ".") if level.startswith("lambda") else level


def layout(table: list[dict], runs: list[dict]):
    """How a study is drawn: (series of a row, its x position, {tick position: label}, x-axis title).
    Budgets go on the x-axis when the rows span several, spaced by their size (``BUDGET_POSITION``), one
    series per variant; at one budget (the tokenizer
    and expert studies) the variant's last part does, in the order the rows were run, one series
    per method ('grpo_mu4@n4x4': series grpo_mu4 at x (4, 4)); tokenizers in the study's order,
    expert weights by value."""
    if len({t["budget"] for t in table}) > 1:
        position = lambda budget: BUDGET_POSITION.get(budget, 1.0)  # noqa: E731  an unknown budget: last
        budgets = [b for b in BUDGET_ORDER if b in {t["budget"] for t in table}]
        return (lambda t: t["variant"]), (lambda t: position(t["budget"])), \
            {position(b): BUDGET_LABEL[b] for b in budgets}, \
            "RL budget, fraction of the paper's rollouts per input (log scale)"
    levels = list(dict.fromkeys(r["variant"].rpartition("@")[2] for r in runs or table))  # as run
    axis = "variant"
    if set(levels) <= set(claims_config.TOKENIZERS):
        levels, axis = [t for t in claims_config.TOKENIZERS if t in levels], "tokenizer"
    elif all(v.startswith("lambda") for v in levels):
        levels, axis = sorted(levels, key=lambda v: float(v[len("lambda"):].replace("p", "."))), "expert weight"
    return (lambda t: t["variant"].rpartition("@")[0] or t["variant"]), \
        (lambda t: levels.index(t["variant"].rpartition("@")[2])), dict(enumerate(level_label(v) for v in levels)), \
        f"{axis} (RL budget {BUDGET_LABEL.get(table[0]['budget'], table[0]['budget'])})"


def joined(pairs: list[frozenset]) -> list[bool]:
    """Which neighbouring points of a series (ordered along the x-axis) the plot joins by a line,
    given each point's (dataset, seed) pairs: only two that average the very same runs, so a segment
    never rises or falls because its datasets or seeds change. A point joined to neither neighbour
    is drawn hollow."""
    return [a == b for a, b in zip(pairs, pairs[1:])]


def outlier_limits(values, k: float = TUKEY_K) -> tuple[float, float] | None:
    """(low, high) y-limits that leave out the values beyond fences far past Tukey's (quartiles ∓ k·IQR), or
    None when no value lies beyond them: one run's IEEE mean 10⁶ z away would otherwise squash every
    other point of its panel into a line."""
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(x) < 4:
        return None
    q1, q3 = np.percentile(x, [25, 75])
    low, high = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    inside = x[(x >= low) & (x <= high)]
    if len(inside) == len(x) or not len(inside):
        return None
    pad = 0.1 * max(inside.max() - inside.min(), 1e-12)
    return float(inside.min() - pad), float(inside.max() + pad)


def _mark_outliers(ax, xs, ys, limits, color, row: int = 0) -> None:
    """Points beyond ``limits`` drawn at the panel's edge as one triangle per x and side, labelled with
    how many there are and the farthest value (``row``: the series' place, so labels stack, not overlap)."""
    beyond = {}
    for x, y in zip(xs, ys):
        if np.isfinite(y) and not limits[0] <= y <= limits[1]:
            beyond.setdefault((round(float(x), 6), y > limits[1]), []).append(y)
    for (x, above), values in beyond.items():
        edge, far = (limits[1], max(values)) if above else (limits[0], min(values))
        ax.plot([x], [edge], marker="^" if above else "v", color=color, ls="none", ms=7, clip_on=False)
        ax.annotate((f"{len(values)}: to " if len(values) > 1 else "") + f"{far:.2g}", (x, edge),
                    textcoords="offset points", xytext=(4, -10 - 8 * row if above else 4 + 8 * row), fontsize=7,
                    color=color)


def plot(table: list[dict], path: str, runs: list[dict] = (), aggregate: str = "mean") -> None:
    """Means with their intervals per series (``layout``), neighbours joined where they average the
    same runs (``joined``); thin lines: each (dataset, seed) across the x-axis. ``aggregate``: the point
    prediction the rows were scored by (the predictive distribution's mean or median), named in the
    titles; far outliers (``outlier_limits``) are marked at the panel's edge."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series_of, x_of, ticks, xlabel = layout(table, list(runs))
    names = sorted({series_of(t) for t in table})
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    points_of = {name: sorted((t for t in table if series_of(t) == name), key=x_of) for name in names}
    link_of = {name: joined([frozenset((r["dataset"], r["seed"]) for r in runs
                                       if series_of(r) == name and x_of(r) == x_of(t)) for t in ts])
               for name, ts in points_of.items()}
    alone_of = {name: np.array([len(link) > 0 and not any(link[max(j - 1, 0):j + 1]) for j in range(len(link) + 1)])
                for name, link in link_of.items()}
    panels = [("d_r2", f"ΔR² of the {aggregate} prediction\n(RL − CE), mean over datasets"),
              ("d_rmse", f"ΔRMSE (z) of the {aggregate} prediction\n(RL − CE), mean over datasets"),
              ("cov90", "test 90 % coverage (raw),\nmean over datasets"),
              ("crps_ratio", "test CRPS, RL / CE,\ngeometric mean over datasets"),
              ("rmse_1_ratio", "RMSE of one sample, RL / CE,\ngeometric mean over datasets")]
    for ax, (key, title) in zip(axes, panels):
        drawn = []  # (x, y, colour) of every point and thin-line vertex, for the outlier limits
        for i, name in enumerate(names):
            ts, link, alone = points_of[name], link_of[name], alone_of[name]
            shift = 0.06 * (i - (len(names) - 1) / 2)
            x = np.array([x_of(t) for t in ts]) + shift
            if key in ("d_r2", "d_rmse"):
                mine = [r for r in runs if series_of(r) == name]
                for pair in sorted({(r["dataset"], r["seed"]) for r in mine}):
                    rs = sorted((r for r in mine if (r["dataset"], r["seed"]) == pair), key=x_of)
                    if len(rs) > 1:
                        ax.plot(np.array([x_of(r) for r in rs]) + shift, [r[key] for r in rs],
                                color=f"C{i}", lw=0.7, alpha=0.3)
                    drawn += [(x_of(r) + shift, r[key], f"C{i}") for r in rs]
                mean = np.array([t[key][0] for t in ts])
                err = np.nan_to_num(np.array([[t[key][0] - t[key][1], t[key][2] - t[key][0]] for t in ts]).T)
            else:
                mean, err = np.array([t[key] for t in ts], np.float64), None
            drawn += [(xj, yj, f"C{i}") for xj, yj in zip(x, mean)]
            for j in np.flatnonzero(link):
                ax.plot(x[j:j + 2], mean[j:j + 2], color=f"C{i}")
            for points, face, label in ((~alone, None, name), (alone, "white", None if (~alone).any() else name)):
                if points.any():
                    ax.errorbar(x[points], mean[points], yerr=None if err is None else err[:, points], marker="o",
                                capsize=3, color=f"C{i}", mfc=face, ls="none", label=label)
        if key == "cov90":  # CE differs along a tokenizer axis (one CE per tokenizer): its mean at each x
            xs = sorted({x_of(t) for t in table})
            ce = [float(np.nanmean([t["ce_cov90"] for t in table if x_of(t) == x])) for x in xs]
            if len(set(ce)) > 1:
                ax.plot(xs, ce, color="gray", ls="--", lw=1, marker="_", label="CE")
            else:
                ax.axhline(ce[0], color="gray", ls="--", lw=1, label="CE")
            ax.axhline(0.9, color="black", ls=":", lw=1)
        if key.endswith("_ratio"):
            ax.axhline(1, color="gray", lw=1)
        if key in ("d_r2", "d_rmse"):
            ax.axhline(0, color="gray", lw=1)
        limits = outlier_limits([y for _, y, _ in drawn])
        if limits is not None:
            ax.set_ylim(*limits)
            for row, color in enumerate(sorted({c for _, _, c in drawn})):
                mine = [(x_, y_) for x_, y_, c in drawn if c == color]
                _mark_outliers(ax, [p[0] for p in mine], [p[1] for p in mine], limits, color, row)
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].legend(fontsize=8)
    fig.text(0.005, 0.005, "a line joins two means only where they average the same (dataset, seed) runs"
             + ("; hollow: a mean joined to neither neighbour (see the table)"
                if any(alone.any() for alone in alone_of.values()) else "")
             + "; triangles: values far beyond the panel (quartiles ± 10 IQR), with how many and the farthest", fontsize=8, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(table: list[dict], path: str, columns: int = 4) -> None:
    """Nominal against observed test coverage of the central intervals, one panel per variant and
    budget in a grid (a variant's budgets along a row where it has several): CE, RL as sampled, RL at
    the temperature T* fitted on validation, and split-conformal; each point a mean over datasets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = [float(x) for x in LEVELS]
    variants = list(dict.fromkeys(t["variant"] for t in table))
    per_variant = max(sum(t["variant"] == v for t in table) for v in variants)
    columns = per_variant if 1 < per_variant <= columns + 1 else columns
    cells = []  # (row, column, t): each variant on rows of its own when its budgets fill them
    if per_variant > 1:
        row = 0
        for v in variants:
            mine = [t for t in table if t["variant"] == v]
            for j, t in enumerate(mine):
                cells.append((row + j // columns, j % columns, t))
            row += -(-len(mine) // columns)
    else:
        cells = [(j // columns, j % columns, t) for j, t in enumerate(table)]
    rows = max(r for r, _, _ in cells) + 1
    columns = min(columns, max(c for _, c, _ in cells) + 1)
    fig, axes = plt.subplots(rows, columns, figsize=(3.1 * columns, 2.9 * rows), squeeze=False, sharex=True,
                             sharey=True)
    for ax in axes.flat:
        ax.set_visible(False)
    for r, c, t in cells:
        ax = axes[r][c]
        ax.set_visible(True)
        ax.plot([0, 1], [0, 1], color="black", ls=":", lw=1)
        for key, label in (("ce_cov_raw", "CE"), ("cov_raw", "RL"), ("cov_T", "RL, T*"),
                           ("cov_conformal", "RL, conformal")):
            ax.plot(levels, [t.get(f"{key}_{lv}", math.nan) for lv in LEVELS], marker="o", label=label)
        ax.set_title(f"{t['variant']} @ {BUDGET_LABEL.get(t['budget'], t['budget'])}", fontsize=9)
        ax.set_xlim(0.4, 1)
        ax.set_ylim(0, 1)
        if r == rows - 1 or not axes[min(r + 1, rows - 1)][c].get_visible():
            ax.set_xlabel("nominal coverage", fontsize=8)
        if c == 0:
            ax.set_ylabel("test coverage,\nmean over datasets", fontsize=8)
    axes[cells[0][0]][cells[0][1]].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
