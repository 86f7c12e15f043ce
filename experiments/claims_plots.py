"""The claim studies' plots (experiments/claims_report.py writes them beside its tables): the means
with their bootstrap intervals against the budget (or, in the one-budget studies, against the
tokenizer or expert weight), each (dataset, seed) as a thin line, and the reliability diagrams."""
from __future__ import annotations

import math

import numpy as np

from experiments.configs import claims as claims_config
from experiments.configs.claims import BUDGET_LABEL, BUDGET_ORDER, LEVELS, budget_order


def level_label(level: str) -> str:
    """A variant's last part as an axis label: 'n4x4' -> '(4, 4)', 'ieee' -> 'IEEE', 'lambda0p05' -> 'λ 0.05'."""
    base, x, digits = level[1:].partition("x")
    if level.startswith("n") and x and base.isdigit() and digits.isdigit():
        return f"({base}, {digits})"
    if level == "ieee":
        return "IEEE"
    return "λ " + level[len("lambda"):].replace("p", ".") if level.startswith("lambda") else level


def layout(table: list[dict], runs: list[dict]):
    """How a study is drawn: (series of a row, its x position, tick labels, x-axis title). Budgets go
    on the x-axis when the rows span several, one series per variant; at one budget (the tokenizer
    and expert studies) the variant's last part does, in the order the rows were run, one series
    per method ('grpo_mu4@n4x4': series grpo_mu4 at x (4, 4)); tokenizers in the study's order,
    expert weights by value."""
    if len({t["budget"] for t in table}) > 1:
        return (lambda t: t["variant"]), (lambda t: budget_order(t["budget"])), \
            [BUDGET_LABEL[b] for b in BUDGET_ORDER], "RL budget (fraction of the paper's rollouts per input)"
    levels = list(dict.fromkeys(r["variant"].rpartition("@")[2] for r in runs or table))  # as run
    axis = "variant"
    if set(levels) <= set(claims_config.TOKENIZERS):
        levels, axis = [t for t in claims_config.TOKENIZERS if t in levels], "tokenizer"
    elif all(v.startswith("lambda") for v in levels):
        levels, axis = sorted(levels, key=lambda v: float(v[len("lambda"):].replace("p", "."))), "expert weight"
    return (lambda t: t["variant"].rpartition("@")[0] or t["variant"]), \
        (lambda t: levels.index(t["variant"].rpartition("@")[2])), [level_label(v) for v in levels], \
        f"{axis} (RL budget {BUDGET_LABEL.get(table[0]['budget'], table[0]['budget'])})"


def joined(pairs: list[frozenset]) -> list[bool]:
    """Which neighbouring points of a series (ordered along the x-axis) the plot joins by a line,
    given each point's (dataset, seed) pairs: only two that average the very same runs, so a segment
    never rises or falls because its datasets or seeds change. A point joined to neither neighbour
    is drawn hollow."""
    return [a == b for a, b in zip(pairs, pairs[1:])]


def plot(table: list[dict], path: str, runs: list[dict] = ()) -> None:
    """Means with their intervals per series (``layout``), neighbours joined where they average the
    same runs (``joined``); thin lines: each (dataset, seed) across the x-axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series_of, x_of, ticks, xlabel = layout(table, list(runs))
    names = sorted({series_of(t) for t in table})
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    points_of = {name: sorted((t for t in table if series_of(t) == name), key=x_of) for name in names}
    link_of = {name: joined([frozenset((r["dataset"], r["seed"]) for r in runs
                                       if series_of(r) == name and x_of(r) == x_of(t)) for t in ts])
               for name, ts in points_of.items()}
    alone_of = {name: np.array([len(link) > 0 and not any(link[max(j - 1, 0):j + 1]) for j in range(len(link) + 1)])
                for name, link in link_of.items()}
    panels = [("d_r2", "ΔR² (RL − CE)"), ("d_rmse", "ΔRMSE, z (RL − CE)"), ("cov90", "test 90 % coverage"),
              ("crps_ratio", "test CRPS, RL / CE (geometric mean)"), ("rmse_1_ratio", "RMSE of one sample, RL / CE")]
    for ax, (key, title) in zip(axes, panels):
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
                mean = np.array([t[key][0] for t in ts])
                err = np.nan_to_num(np.array([[t[key][0] - t[key][1], t[key][2] - t[key][0]] for t in ts]).T)
            else:
                mean, err = np.array([t[key] for t in ts], np.float64), None
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
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=8)
    fig.text(0.005, 0.005, "a line joins two means only where they average the same (dataset, seed) runs"
             + ("; hollow: a mean joined to neither neighbour (see the table)"
                if any(alone.any() for alone in alone_of.values()) else ""), fontsize=8, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(table: list[dict], path: str) -> None:
    """Nominal against observed test coverage of the central intervals, per variant and budget:
    CE, RL as sampled, RL at the temperature T* fitted on validation, and split-conformal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = [float(x) for x in LEVELS]
    fig, axes = plt.subplots(1, len(table), figsize=(3.2 * len(table), 3.3), squeeze=False)
    for ax, t in zip(axes[0], table):
        ax.plot([0, 1], [0, 1], color="black", ls=":", lw=1)
        for key, label in (("ce_cov_raw", "CE"), ("cov_raw", "RL"), ("cov_T", "RL, T*"),
                           ("cov_conformal", "RL, conformal")):
            ax.plot(levels, [t.get(f"{key}_{lv}", math.nan) for lv in LEVELS], marker="o", label=label)
        ax.set_title(f"{t['variant']} @ {BUDGET_LABEL.get(t['budget'], t['budget'])}", fontsize=9)
        ax.set_xlim(0.4, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("nominal coverage")
    axes[0][0].set_ylabel("test coverage (mean over runs)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
