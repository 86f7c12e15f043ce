"""The run recipes ``quick``, ``paper`` and ``tiny``: tabular decoding-based regression on one TALENT-format
dataset, CE pretraining, RL fine-tuning (GenRe² by default), then evaluation of both.

They live in the library so that an installed package (no checkout) builds the same configs as
launch.py: ``experiments/configs/tabular.py`` re-exports them for ``--config=...tabular.py:<variant>``,
and ``GenReRegressor(config=<variant>)`` reads them here.

Variants:
  quick  (default) a model and budget for 2 CPU cores: d_model 128, 2 decoder layers, CE lr 1e-3
         until 16 epochs pass without a better validation loss (at most 100), then 8 RL epochs at a
         constant lr 1e-4 (after 10 warmup steps, no weight decay, 128 inputs per update) with G = 16
         rollouts. The default dataset is the bundled airfoil_self_noise (about 100 s on 2 cores). Heads on the
         decoder model's encoder (Riemann: integrated soft labels, train-mean tails, selected by
         validation loss); losses over masked logits; shared PRNG streams (as its tables were made).
         Evaluation decodes exactly where the tokenizer allows at most 4,096 sequences (the default
         base 2 x 8 digits: 256), i.e. the exact predictive distribution at a fifth of the cost of
         128 samples; sampled otherwise (the cpu suite protocol pins sampling).
  paper  the paper's defaults: d_model 256, 3 layers, 4 heads, FFN 1024, the released decoder
         (sinusoidal positions, no final LayerNorm) and encoder (3 hidden layers of 1024), CE lr
         1e-4, batch 128, up to 200 epochs with patience 20, warmup 100 steps, cosine floor 0.1x; RL 100 epochs,
         G = 16, the CE learning rate, expert weight 0.05 (0.1 with IEEE tokens), the released RL
         optimizer (AdamW wd 0.01, warmup 100, cosine to 0.1x, 512 inputs per update, no clipping)
         and training reward against the re-quantized target; CE and expert CE over raw logits; the
         RL checkpoint selected among RL epochs only, as released, under both rules at once (the
         configured one is the method's; quick and tiny let the CE start compete, one rule).
         Baselines as released: token-level losses 100 epochs (warmup 100); heads on their own MLP
         (3 x 2048, AdamW lr 1e-5, wd 0, 100 epochs, warmup 100, cosine to 0.1x, best epoch by
         validation MSE), Riemann soft labels of sigma 0.75 bin width at the bin centres, tails at
         ∓0.5·√(2/π) beyond the edges. Every phase draws its own PRNG stream; an epoch's last,
         partial batch is trimmed to its rows (last_batch = trim), not padded.
  tiny   a toy model for tests and smoke runs (seconds), on the bundled cpu_act.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from genre_jax import exact

VARIANTS = ("quick", "paper", "tiny")
# The default job's dataset: small (961 train rows), so CE stops on its patience and RL visibly moves the
# test error within two minutes on 2 cores; cpu_act (5,242 rows) gains ~0.001 R² from RL at this budget.
DEFAULT_DATASET = "airfoil_self_noise"
QUICK_RL_EPOCHS = 8


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = arg or "quick"
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; expected one of {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.data_dir = ""  # "" = the checkout's bundled datasets/ folder (launch.py; the estimator passes arrays)
    c.dataset = DEFAULT_DATASET
    c.phases = "ce,rl,eval"  # comma-separated subset; always run in the order ce, rl, token, head, gbdt, eval
    # per_phase: each phase its own dropout/rollout keys and batch orders; shared: the older layout
    # (later phases replay CE's), which the quick variant's committed tables were made with.
    c.rng_streams = "per_phase"
    # The epoch's last, partial batch: trim (cut to its rows, rounded up to the device count: one more
    # compiled update, no computed padding; at 512 inputs per update the padding is 36 % of an RL
    # epoch's rows on concrete and 41 % on stock) | pad (padded to the full batch: one compiled shape,
    # the cheaper choice when batches are small, as in quick and tiny).
    c.last_batch = "trim"
    # ``last`` (what a resume starts from) is written once this many seconds of training have passed since
    # the previous write, at the phase's end and on SIGTERM (0 = after every epoch); ``best`` whenever it
    # improves. A hard kill loses at most this much training, which the resumed run redoes identically.
    c.checkpoint_every_s = 60.0

    # normalized uses base/digits; ieee uses base/exponent_digits/mantissa_digits.
    c.tokenizer = ml_collections.ConfigDict(dict(
        name="normalized", base=2, digits=8, exponent_digits=1, mantissa_digits=4))
    c.model = ml_collections.ConfigDict(dict(
        name="tabular_decoder", d_model=256, num_layers=3, num_heads=4, d_ff=1024, dropout=0.1,
        mlp_hidden=1024, mlp_layers=3, pos_embedding="sinusoidal", final_norm=False,  # as released
        dtype="float32"))  # or bfloat16: compute in bfloat16, parameters and optimizer state in float32
    c.ce = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, weight_decay=0.01, batch_size=128, max_epochs=200, patience=20,
        warmup_steps=100, lr_floor=0.1, grad_clip=1.0,
        masked_loss=False))  # as released: CE over the raw logits; True: over the tokenizer's allowed tokens
    # RL fine-tuning from the best CE checkpoint. method: genre2 (ReMax + dense expert CE), remax,
    # grpo (group-normalized, clipped ratio, ppo_epochs passes), rloo, crps_loo, exact_reward, exact_crps
    # (genre_jax/methods.py). None = inherit / method default; expert: the dense expert CE on any method
    # (None = only where the method has it: genre2).
    # Optimizer as released: AdamW (wd 0.01), 100 warmup steps, cosine to 0.1x over the RL budget,
    # 512 inputs per update (128 per process x 4 processes in the release).
    c.rl = ml_collections.ConfigDict(dict(
        method="genre2", reward="neg_mse", num_rollouts=16, temperature=1.0, batch_size=512, max_epochs=100,
        steps_per_epoch=0,  # 0 = a full pass over the train split; > 0 caps the steps of each RL epoch
        learning_rate=placeholder(float), expert=placeholder(bool), expert_weight=placeholder(float),
        kl_weight=0.0, entropy_weight=0.0,
        clip_eps=0.2, ppo_epochs=1, warmup_steps=100, weight_decay=0.01, grad_clip=0.0,  # none in the release
        lr_floor=0.1,  # cosine decay to learning_rate * lr_floor over the RL budget; 1.0 = constant
        requantize_targets=True,  # train reward against detok(tok(y)) as released; validation uses y
        masked_expert=False,  # the expert CE over raw logits, as released
        # the checkpoint kept: best validation mean sampled reward (as released), or aggregate_rmse:
        # best validation RMSE of the reported mean prediction (exact mean where eval decodes exactly)
        selection="reward",
        keep_start=False,  # as released, RL epochs only compete; True: the CE start too, as epoch -1
        # also keep the other rule's best checkpoint, evaluated as "<method>@<rule>" beside the method
        both_selections=True))
    # Token-level baselines fine-tuned from the CE checkpoint: ntl_mse, ntl_was, dist2 (or ce).
    # weight None = the method's default (0.3, 0.3, 0.1); tau: DIST2's smoothing temperature.
    # As released: 100 epochs, warmup 100 then cosine; the best validation-loss epoch is kept.
    c.token = ml_collections.ConfigDict(dict(
        method="ntl_was", weight=placeholder(float), tau=1.0, learning_rate=1e-4, weight_decay=0.01,
        batch_size=128, max_epochs=100, patience=100, warmup_steps=100, lr_floor=0.1, grad_clip=1.0,
        masked_loss=False))
    # Traditional heads, trained from scratch: riemann (histogram) or pointwise. As released: their
    # own MLP (mlp_layers x mlp_hidden; mlp_hidden 0 = the decoder model's encoder), AdamW lr 1e-5,
    # wd 0, 100 epochs, the best epoch by validation MSE (select: mse | loss); Riemann soft labels of
    # sigma = smoothing bin widths at the bin centres (targets: centres | integrated) and tail bins
    # at ∓0.5·√(2/π) beyond the edges (tails: half_normal | train_mean). See genre_jax/heads.py.
    c.head = ml_collections.ConfigDict(dict(
        method="riemann", num_bins=256, low=-3.0, high=3.0, smoothing=0.75, targets="centres",
        tails="half_normal", mlp_hidden=2048, mlp_layers=3, select="mse", learning_rate=1e-5,
        weight_decay=0.0, batch_size=128, max_epochs=100, patience=100, warmup_steps=100, lr_floor=0.1,
        grad_clip=0.0, num_samples=128))
    # decode: sample (num_samples draws per input) | exact (every sequence's probability: exact mean,
    # median, CRPS, coverage) | auto (exact when the tokenizer allows <= exact_max_sequences sequences).
    # calibration (fitted on val, reported beside the raw distribution; genre_jax/calibration.py):
    # none | temperature (the sampling temperature with the best val CRPS) | conformal (split-conformal
    # intervals around the mean) | both.
    c.eval = ml_collections.ConfigDict(dict(
        num_samples=128, temperature=1.0, batch_size=256, splits="val,test", decode="sample",
        exact_max_sequences=exact.MAX_SEQUENCES, calibration="both"))

    if variant in ("quick", "tiny"):  # our choices where the release's are not needed (see the docstring)
        c.rng_streams = "shared"
        c.last_batch = "pad"
        c.ce.masked_loss = c.token.masked_loss = c.rl.masked_expert = True
        # selection as their tables were made: the CE start competes, one rule's checkpoint kept
        c.rl.update(keep_start=True, both_selections=False)
        c.token.update(max_epochs=50, patience=10, warmup_steps=10)
        c.head.update(smoothing=1.0, targets="integrated", tails="train_mean", mlp_hidden=0, mlp_layers=0,
                      select="loss", learning_rate=1e-4, weight_decay=0.01, max_epochs=200, patience=20,
                      grad_clip=1.0)
    if variant == "quick":
        c.model.update(d_model=128, num_layers=2, num_heads=4, d_ff=512, mlp_hidden=256, mlp_layers=2,
                       pos_embedding="learned", final_norm=True)
        # CE stops on its patience (at 81-92 epochs on airfoil_self_noise, seeds 0-2), not on max_epochs
        c.ce.update(learning_rate=1e-3, max_epochs=100, patience=16)
        # RL at a constant rate after a short warmup, no weight decay, clipping at norm 1, 128 inputs
        # per update: the budgets measured and tabulated with this variant (README, results/).
        c.rl.update(max_epochs=QUICK_RL_EPOCHS, learning_rate=1e-4, batch_size=128, warmup_steps=10,
                    weight_decay=0.0, lr_floor=1.0, grad_clip=1.0, requantize_targets=False)
        c.token.update(max_epochs=10, patience=3)
        c.head.update(learning_rate=1e-3, max_epochs=40, patience=8)
        c.eval.decode = "auto"
    elif variant == "tiny":
        c.dataset = "cpu_act"  # the tests' bundled dataset
        c.checkpoint_every_s = 0.0  # after every epoch: the tests kill and resume at chosen epochs
        c.model.update(d_model=16, num_layers=1, num_heads=2, d_ff=32, mlp_hidden=16, mlp_layers=1,
                       pos_embedding="learned", final_norm=True)
        c.ce.update(learning_rate=3e-3, batch_size=64, max_epochs=2, patience=2, warmup_steps=5)
        c.rl.update(num_rollouts=4, batch_size=64, max_epochs=1, warmup_steps=10, weight_decay=0.0, lr_floor=1.0,
                    grad_clip=1.0, requantize_targets=False)
        c.token.update(batch_size=64, max_epochs=1)
        c.head.update(learning_rate=3e-3, batch_size=64, max_epochs=2, num_bins=32, num_samples=8)
        c.eval.update(num_samples=8, batch_size=128)
    return c
