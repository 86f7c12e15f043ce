"""The claim studies (results/claims/): one CE model per (dataset, seed, tokenizer), then RL variants
started from a copy of it, each in its own workdir, each one JSONL row.

  python experiments/claims.py --study=budget --data_dir=/path/to/talent      # claim (a) + selection
  python experiments/claims.py --study=expert --data_dir=/path/to/talent      # claim (d)
  python experiments/claims.py --study=tokenizer --data_dir=/path/to/talent   # claim (c)
  python experiments/claims.py --study=budget --datasets=boston --seeds=0,1,2 --budgets=cpu,1/8 --dry_run

Every study uses the `quick` model (d_model 128, 2 layers) and its CE recipe at the `cpu` protocol's
CE budget (~1200 steps at lr 1e-3, suite_protocols.budget_overrides), the authors' tokenizer where
authors_hparams.csv has a row (the tokenizer study sets its own), exact evaluation where the tree
has ≤ 4,096 sequences (else 128 samples) and both calibrations (genre_jax/calibration.py).

RL as released but for the rate: AdamW (wd 0.01), linear warmup then cosine to 0.1× over the
budget, G = 16 rollouts, 128 inputs per update, clipping at norm 1, peak lr 1e-4 (the release runs
RL at its CE rate, 1e-5–1e-4 for models trained at that rate; ours trains CE at 1e-3, and the
`cpu` protocol's RL at 1e-4 was stable on all 33 datasets). Warmup: min(100, 10 % of the updates).

Budgets are fractions of the paper's rollouts per input (100 epochs × 16 rollouts = 1,600):
`1/8` = 13 RL epochs, `1/3` = 34, `1` = 100, and `cpu` = the `cpu` protocol's RL (~60 updates of
128 inputs: 2-8 % of the paper's on datasets of 1-5k train rows).

RL selects among RL epochs only, as released (rl.keep_start = False; rows made before it let the CE
start compete as epoch -1: their command lines lack the flag). The budget study keeps the best
checkpoint of both selection rules (rl.both_selections), so a (dataset, method, budget) is one run
whose two rows differ in the rule (``paired``: the aggregate_rmse variant's row is read from the
reward variant's run, its results entry "<method>@aggregate_rmse"; a paired variant whose source row
already exists runs on its own, as before).

Studies (``get_config(study)``; fields: study, config, datasets, seeds, budgets and the variant grid):
  budget     ReMax and GenRe² at every budget, each with rl.selection = reward (as released) and
             aggregate_rmse (validation RMSE of the exact mean); the controls: ``ce_continued`` (the
             CE loss trained on with the RL recipe, budget and selection: is a gain RL's objective or
             more training?) and ``ntl_mse`` (the token-level baseline the `cpu` table ranks best by
             mean R², fine-tuned with the RL recipe's optimizer for the same updates, no early stop,
             its best validation-loss epoch kept).
  expert     GenRe² at budget 1/8 with expert weight λ ∈ {0, 0.01, 0.05 (the default for normalized
             tokens), 0.1 (the default for IEEE tokens), 0.2}. Its CE, λ = 0 (ReMax) and λ = 0.05 are
             the budget study's runs: where budget.jsonl has them they are copied (``reuse``).
  tokenizer  CE → ReMax, CE → GRPO (μ = 1) and GRPO with μ = 4 passes (clipping acts) at budget 1/8,
             with the normalized tokenizer at (B, D) ∈ {(2, 8), (4, 4), (8, 3), (10, 3)} and IEEE
             (base 10, 1 exponent digit, 3 mantissa digits).
  distribution  RL on the whole predictive distribution (issue 37) at budget 1/8: ``crps_loo`` (each
             rollout's leave-one-out share of its group's CRPS) and ``exact_crps`` (the exact CRPS of
             the enumerated distribution), each without and with the GenRe² expert term
             (``--config.rl.expert=True``), rl.selection = reward. ``exact_crps`` runs only where the
             tokenizer allows it (≤ exact.MAX_SEQUENCES sequences; Abalone_reg's 4 × 8 digits do
             not): the runner leaves a run launch.py would refuse out of the plan. The CE and the
             comparisons (ReMax, GenRe² at reward selection) are the budget study's: where budget.jsonl
             has them they are copied (``reuse``). A pilot (``exact_crps_kl<λ>``, opt-in: run
             only where --variants names it): ``exact_crps`` plus λ · the exact KL to the CE
             policy (``rl.kl_weight``, λ in KL_WEIGHTS), the knob that trades CRPS for coverage.
             The second stage, 1x on the four smallest:
             ``--budgets=1 --datasets=boston,concrete_compressive_strength,airfoil_self_noise,auction_verification``.
"""
from __future__ import annotations

import ml_collections

STUDIES = ("budget", "expert", "tokenizer", "distribution")
KL_WEIGHTS = (0.1, 1.0)  # the distribution study's KL pilot
# ≤ ~5k train rows; the first five have TALENT's own splits
DATASETS = ("auction_verification,Abalone_reg,Wine_Quality_white,cpu_act,Bias_correction_r,airfoil_self_noise,"
            "boston,concrete_compressive_strength")
PAPER_ROLLOUT_EPOCHS = 100  # the paper's RL budget: 100 epochs of every train input x G = 16
BUDGETS = ("cpu", "1/8", "1/3", "1")  # the budget study's, in order along the budget axis
BUDGET_LABEL = {"cpu": "cpu (~60 updates)", "1of8": "1/8", "1of3": "1/3", "1": "1x"}
LEVELS = ("0.5", "0.8", "0.9", "0.95")  # the central intervals' levels, keyed as the rows' calibration keys them
TOKENIZERS = {
    "n2x8": ["--config.tokenizer.name=normalized", "--config.tokenizer.base=2", "--config.tokenizer.digits=8"],
    "n4x4": ["--config.tokenizer.name=normalized", "--config.tokenizer.base=4", "--config.tokenizer.digits=4"],
    "n8x3": ["--config.tokenizer.name=normalized", "--config.tokenizer.base=8", "--config.tokenizer.digits=3"],
    "n10x3": ["--config.tokenizer.name=normalized", "--config.tokenizer.base=10", "--config.tokenizer.digits=3"],
    "ieee": ["--config.tokenizer.name=ieee", "--config.tokenizer.base=10", "--config.tokenizer.exponent_digits=1",
             "--config.tokenizer.mantissa_digits=3"],
}


def budget_tag(budget: str) -> str:
    """A budget as run folders and protocol tags write it: 1/8 -> 1of8 (one folder level)."""
    return budget.replace("/", "of")


BUDGET_ORDER = tuple(budget_tag(b) for b in BUDGETS)


def budget_order(budget: str) -> int:
    """A budget tag's place along the budget axis (an unknown one goes last)."""
    return BUDGET_ORDER.index(budget) if budget in BUDGET_ORDER else len(BUDGET_ORDER)


def ce_tag_of(variant: str) -> str:
    """The CE a variant started from: 'ce' or 'ce-<tokenizer>' for the tokenizer study's 'remax@n4x4'."""
    tail = variant.rpartition("@")[2]
    return f"ce-{tail}" if tail in TOKENIZERS else "ce"


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
    study = arg or "budget"
    if study not in STUDIES:
        raise ValueError(f"claims.py: unknown study {study!r}; expected one of {STUDIES}")
    c = ml_collections.ConfigDict()
    c.study = study
    c.config = "experiments/configs/tabular.py:quick"
    c.datasets = DATASETS
    c.seeds = "0"
    c.ce_steps = 1200  # the cpu protocol's CE budget
    c.rl_learning_rate = 1e-4
    c.common = ["--config.eval.decode=auto", "--config.eval.num_samples=128", "--config.eval.calibration=both"]
    c.rl = ["--config.rl.weight_decay=0.01", "--config.rl.lr_floor=0.1", "--config.rl.grad_clip=1.0",
            "--config.rl.batch_size=128", "--config.rl.num_rollouts=16", "--config.rl.requantize_targets=True",
            "--config.rl.keep_start=False"]
    # variants: name -> (method, tokenizer ("" = the authors' / quick's), extra flags); an RL method runs
    # the RL recipe above, a token-level one (methods.py's kind) the same optimizer for the same updates
    variants = {}
    # paired variant -> (the variant whose run also writes its row, the rule of the entry it reads)
    c.paired = {}
    c.opt_in = []  # variants a plan takes only when --variants names them (a pilot)
    if study == "budget":
        c.budgets = ",".join(BUDGETS)
        for method in ("remax", "genre2", "ce_continued"):
            for selection in ("reward", "aggregate_rmse"):
                variants[f"{method}@{selection}"] = (method, "", [f"--config.rl.selection={selection}",
                                                                  "--config.rl.both_selections=True"])
            c.paired[f"{method}@aggregate_rmse"] = (f"{method}@reward", "aggregate_rmse")
        variants["ntl_mse"] = ("ntl_mse", "", [])
    elif study == "expert":
        c.budgets = "1/8"
        for weight in (0.0, 0.01, 0.05, 0.1, 0.2):
            # ConfigDict keys may not hold dots: lambda0p05 is λ = 0.05
            variants[f"genre2@lambda{weight:g}".replace(".", "p")] = ("genre2", "", [f"--config.rl.expert_weight={weight}"])
        # The same launches as the budget study's (same CE; λ = 0 is ReMax, λ = 0.05 GenRe²'s default): their
        # finished rows are copied, not re-run (on boston and concrete the re-runs matched to the last digit).
        c.reuse_from = "budget"
        c.reuse = {"ce": "ce", "genre2@lambda0": "remax@reward", "genre2@lambda0p05": "genre2@reward"}
    elif study == "distribution":
        c.budgets = "1/8"
        for method in ("crps_loo", "exact_crps"):
            variants[f"{method}@reward"] = (method, "", ["--config.rl.selection=reward"])
            variants[f"{method}_expert@reward"] = (method, "", ["--config.rl.selection=reward",
                                                                "--config.rl.expert=True"])
        for weight in KL_WEIGHTS:  # the pilot: exact_crps held near the CE policy, to keep its coverage
            name = f"exact_crps_kl{weight:g}@reward".replace(".", "p")
            variants[name] = ("exact_crps", "", ["--config.rl.selection=reward", f"--config.rl.kl_weight={weight}"])
            c.opt_in.append(name)
        for method in ("remax", "genre2"):  # the comparisons at the same budget
            variants[f"{method}@reward"] = (method, "", ["--config.rl.selection=reward"])
        c.reuse_from = "budget"
        c.reuse = {"ce": "ce", "remax@reward": "remax@reward", "genre2@reward": "genre2@reward"}
    else:
        c.budgets = "1/8"
        for tok in TOKENIZERS:
            variants[f"remax@{tok}"] = ("remax", tok, [])
            variants[f"grpo@{tok}"] = ("grpo", tok, ["--config.rl.ppo_epochs=1"])
            variants[f"grpo_mu4@{tok}"] = ("grpo", tok, ["--config.rl.ppo_epochs=4"])
    c.variants = variants
    return c
