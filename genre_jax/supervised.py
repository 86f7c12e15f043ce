"""Supervised phases: CE pretraining of the number decoder, token-level baselines fine-tuned from it
and the regression heads, all through one supervised step handed to the loop in ``loop.py``. The
``train_*`` / ``head_template`` / ``evaluate_head`` functions are what the registry's ``PhaseKind``
records (``methods.PHASE_KINDS``) call.

A supervised phase minimizes a loss that returns (sum, count), early-stopped on the same loss over
the validation split; the best-validation params are kept under ``<workdir>/<folder>/best``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from genre_jax import evaluate, heads, loop, objectives, parallel, sampling
from genre_jax.loop import LossSums, TrainState
from genre_jax.settings import Loop


@parallel.reused
def decoder_loss_fn(model, tokenizer, objective: Callable = objectives.token_cross_entropy, masked: bool = True):
    """Teacher-forced token loss over the decoder's logits, masked by the tokenizer's table or raw (as
    released): (params, batch, key, train) -> (sum, count)."""

    def loss_fn(params, batch, key, train):
        logits = sampling.teacher_forced_logits(model, params, batch["x"], batch["tokens"], tokenizer, train,
                                                rngs={"dropout": key} if train else None, masked=masked)
        return objective(logits, batch["tokens"], batch["weight"])

    return loss_fn


@parallel.reused
def supervised_update(loss_fn, tx: optax.GradientTransformation):
    """Pure (update(state, batch, base_key), eval_step(params, batch)) for a loss returning (sum, count);
    step s trains with dropout key fold_in(base_key, s)."""

    def mean_loss(params, batch, key, train):
        total, count = loss_fn(params, batch, key, train)
        return total / jnp.maximum(count, 1.0), LossSums(total, count)

    def update(state: TrainState, batch, base_key):
        key = jax.random.fold_in(base_key, state.step)
        grads, sums = jax.grad(mean_loss, has_aux=True)(state.params, batch, key, True)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), sums

    def eval_step(params, batch):
        return mean_loss(params, batch, None, False)[1]

    return update, eval_step


def supervised_steps(loss_fn, tx: optax.GradientTransformation, mesh, base_key: jax.Array):
    """Jitted (train_step(state, batch), eval_step(params, batch)), one batch per call."""
    update, eval_step = supervised_update(loss_fn, tx)
    train_step = loop.jit_update(update, mesh)
    return (lambda state, batch: train_step(state, batch, base_key)), parallel.data_parallel(eval_step, mesh)


def run_supervised(ctx, folder: str, settings: Loop, loss_fn, fields: tuple[str, ...], params_init,
                   meta: dict, select_fn=None) -> Any:
    """Minimizes ``loss_fn`` with early stopping on its validation value, or on ``select_fn``'s (a
    second (sum, count) function, reported as val_mse); returns the best params."""
    val = {k: ctx.arrays["val"][k] for k in fields}
    batch_size = parallel.batch_size_for(settings.batch_size, len(val["x"]), ctx.mesh)
    eval_step = None
    select_step = parallel.data_parallel(lambda p, b: LossSums(*select_fn(p, b, None, False)), ctx.mesh) \
        if select_fn else None

    def make_step(tx):
        nonlocal eval_step
        update, eval_fn = supervised_update(loss_fn, tx)
        eval_step = loop.jit_eval(eval_fn, ctx.mesh)
        return update, loop.phase_key(ctx.seed, settings, folder)

    def validate(params):
        out = {"val_loss": loop.split_sums(eval_step, params, val, batch_size, ctx.mesh)["loss"]}
        if select_step is not None:
            out = {"val_mse": loop.split_sums(select_step, params, val, batch_size, ctx.mesh)["loss"], **out}
        return out

    phase = loop.Phase(folder, settings, make_step, validate, fields, meta={**ctx.meta, **meta})
    return loop.run(ctx, phase, params_init)[0]


def run_ce_phase(ctx, params_init) -> Any:
    """CE pretraining with early stopping; returns the best-validation params (resuming if possible)."""
    loss_fn = decoder_loss_fn(ctx.model, ctx.tokenizer, masked=ctx.settings.ce_masked_loss)
    return run_supervised(ctx, ctx.settings.method("ce").folder, ctx.settings.ce, loss_fn, ("x", "tokens"),
                          params_init, {})


def run_token_phase(ctx, ce_params) -> Any:
    """A token-level baseline (``config.token.method``) fine-tuned from the CE checkpoint, early-stopped
    on its own validation loss."""
    token = ctx.settings.token
    meta = {"token": {"method": token.method.name, "weight": token.weight, "tau": token.tau}}
    loss_fn = decoder_loss_fn(ctx.model, ctx.tokenizer, token.objective, token.masked_loss)
    return run_supervised(ctx, token.method.folder, token.loop, loss_fn, ("x", "tokens"), ce_params, meta)


def head_model(ctx):
    """The configured head: its own MLP, or the decoder model's encoder sizes."""
    head = ctx.settings.head
    return heads.make_head_model(ctx.model_config, head.method.spec, head.num_bins, head.mlp_hidden, head.mlp_layers)


def init_head_params(ctx):
    """Fresh params of the configured head (seeded by config.seed); also the template to restore into."""
    x_1F = jnp.zeros((1, ctx.num_features), jnp.float32)
    return head_model(ctx).init({"params": jax.random.key(ctx.seed)}, x_1F, train=False)["params"]


def run_head_phase(ctx) -> Any:
    """Trains the configured head from scratch with early stopping; returns the params of the best
    epoch by validation MSE of the point prediction (as released) or by validation loss."""
    head, model = ctx.settings.head, head_model(ctx)
    values_C = heads.bin_layout(head, ctx.arrays["train"]["z"])[1]
    loss_fn = head.method.spec.make_loss(model, head, values_C)
    select_fn = heads.point_error_fn(head.method.spec, model, values_C) if head.select == "mse" else None
    return run_supervised(ctx, head.method.folder, head.loop, loss_fn, ("x", "z"), init_head_params(ctx),
                          {"head": head.config}, select_fn)


# ----- the PhaseKind entry points: (ctx, start params) -> (best params, progress), and the head's others

def train_ce(ctx, params_init):
    return run_ce_phase(ctx, params_init), {}


def train_token(ctx, ce_params):
    return run_token_phase(ctx, ce_params), {}


def train_head(ctx, _decoder_params):
    return run_head_phase(ctx), {}  # from scratch: a head does not start from the decoder's params


def head_template(ctx, _decoder_params):
    return init_head_params(ctx)


def evaluate_head(ctx, params, out_dir: str, name: str) -> dict:
    return evaluate.evaluate_head(ctx, params, head_model(ctx), out_dir)  # heads sample with their own settings
