"""The one training loop, driven by a linear model (cheap to compile): schedule, selection, early
stopping, the non-finite stop, RL-style starts and resume."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tabular
from genre_jax import checkpoint, loop, runlog, settings, supervised
from genre_jax.errors import GenreError
from genre_jax.settings import Optim
from genre_jax.tokenizers import NormalizedTokenizer

TOK = NormalizedTokenizer()


def test_schedule_warms_up_then_decays_to_the_floor():
    tx = loop.make_optimizer(Optim(learning_rate=1e-3, weight_decay=0.0, warmup_steps=10, lr_floor=0.1,
                                   grad_clip=0.0), 100)
    params = {"w": np.ones(())}
    state = tx.init(params)
    lrs = []
    for _ in range(100):
        updates, state = tx.update({"w": np.ones(())}, state, params)
        lrs.append(-float(updates["w"]))  # Adam's first step direction is ~1, so the update is ~lr
    assert lrs[0] < lrs[9] and abs(lrs[10] - 1e-3) < 1e-4
    assert abs(lrs[-1] - 1e-4) < 2e-5 and np.all(np.diff(lrs[11:]) <= 1e-9)


def linear_arrays(seed=0):
    rng = np.random.default_rng(seed)
    w_F = np.array([1.0, -2.0, 0.5], np.float32)
    arrays = {}
    for split, n in (("train", 100), ("val", 30)):
        x_NF = rng.normal(size=(n, 3)).astype(np.float32)
        arrays[split] = {"x": x_NF, "z": x_NF @ w_F + 0.1 * rng.normal(size=n).astype(np.float32)}
    return arrays


def squared_error(params, batch, key, train):
    pred_B = batch["x"] @ params["w"]
    return jnp.sum(batch["weight"] * jnp.square(pred_B - batch["z"])), jnp.sum(batch["weight"])


def linear_phase(ctx, validate=None, **overrides):
    def make_step(tx):
        return supervised.supervised_update(squared_error, tx)[0], jax.random.key(ctx.seed)

    val = ctx.arrays["val"]
    validate = validate or (lambda params: {"val_loss": float(np.mean((val["x"] @ np.asarray(params["w"])
                                                                         - val["z"]) ** 2))})
    rl = {k: overrides.pop(k) for k in [k for k in overrides if k in loop.RLPart.__dataclass_fields__]}
    return loop.Phase("lin", ctx.settings.ce, make_step, validate, ("x", "z"), rl=loop.RLPart(**rl), **overrides)


def config(**ce):
    c = tabular.get_config("tiny")
    c.ce.update(dict(learning_rate=0.05, batch_size=16, max_epochs=6, patience=6, warmup_steps=0, lr_floor=1.0,
                     weight_decay=0.0), **ce)
    return c


def tensorboard_scalars(log_dir):
    """{tag: [(step, value)]} from tensorboardX's event files (TFRecord framing: length, crc, data, crc)."""
    import glob
    import struct

    from tensorboardX.proto import event_pb2
    out = {}
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def read_log(ctx):
    with open(f"{ctx.workdir}/lin/log.jsonl") as f:
        return [json.loads(line) for line in f]


def test_loop_learns_keeps_the_best_epoch_and_logs_every_epoch(make_context):
    ctx = make_context(linear_arrays(), config())
    best, progress = loop.run(ctx, linear_phase(ctx), {"w": np.zeros(3, np.float32)})
    log = read_log(ctx)
    assert [r["epoch"] for r in log] == list(range(6)) and progress["done"]
    assert set(log[0]) == {"epoch", "train_loss", "val_loss", "best_val_loss", "lr"}
    np.testing.assert_allclose([r["lr"] for r in log], 0.05, rtol=1e-6)  # constant: no warmup, lr_floor 1
    scalars = tensorboard_scalars(f"{ctx.workdir}/tensorboard/lin")
    assert [step for step, _ in scalars["val/loss"]] == list(range(6))
    np.testing.assert_allclose([v for _, v in scalars["val/loss"]], [r["val_loss"] for r in log], rtol=1e-6)
    assert {"train/loss", "lr", "time/epoch_s", "time/steps_per_s", "time/examples_per_s"} <= set(scalars)
    assert log[-1]["val_loss"] < 0.1 * log[0]["val_loss"]
    assert progress["best_val"] == min(r["val_loss"] for r in log)
    best_epoch = int(np.argmin([r["val_loss"] for r in log]))
    assert progress["best_epoch"] == best_epoch
    meta = checkpoint.PhaseCheckpoints(ctx.workdir, "lin").meta("best")
    assert meta["epoch"] == best_epoch and meta["val_loss"] == progress["best_val"]
    # done: a second call restores the best params without training
    again, _ = loop.run(ctx, linear_phase(ctx), {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(again["w"], best["w"])
    assert len(read_log(ctx)) == 6


def test_profiled_steps_write_a_trace_and_change_nothing(make_context, tmp_path):
    plain = make_context(linear_arrays(), config(max_epochs=2), workdir=tmp_path / "plain")
    expected, _ = loop.run(plain, linear_phase(plain), {"w": np.zeros(3, np.float32)})
    profiler = runlog.StepProfiler(3, str(tmp_path / "trace"))
    ctx = dataclasses.replace(make_context(linear_arrays(), config(max_epochs=2), workdir=tmp_path / "prof"),
                              profiler=profiler)
    best, _ = loop.run(ctx, linear_phase(ctx), {"w": np.zeros(3, np.float32)})
    np.testing.assert_allclose(best["w"], expected["w"], rtol=1e-6)  # one call per step vs a scanned epoch
    assert (profiler.traced, profiler.active) == (3, False) and profiler.calls > 4
    files = {p.name for p in (tmp_path / "trace").rglob("*") if p.is_file()}
    assert "perfetto_trace.json.gz" in files and any(f.endswith(".xplane.pb") for f in files)


def test_a_trimmed_last_batch_trains_as_the_padded_one(make_context, tmp_path, monkeypatch):
    # 100 rows in batches of 16: six full batches and one of 4 rows, padded to 16 or trimmed to 8 (8 devices)
    runs, tails = {}, []

    def jit_tail(update, mesh):  # the trimmed batch's own update: record the batch sizes it gets
        step = loop.parallel.data_parallel(update, mesh, batch_args=(1,), donate_argnums=0)

        def call(state, batch, extras):
            tails.append(len(batch["weight"]))
            return step(state, batch, extras)
        return call

    monkeypatch.setattr(loop, "jit_update", jit_tail)
    for how in ("pad", "trim"):
        c = config(max_epochs=2)
        c.last_batch = how
        ctx = make_context(linear_arrays(), c, workdir=tmp_path / how)
        runs[how] = loop.run(ctx, linear_phase(ctx), {"w": np.zeros(3, np.float32)})[0], read_log(ctx)
    assert tails == [8, 8]  # trim only: each epoch's 4-row batch, trimmed to the 8 devices
    np.testing.assert_allclose(runs["trim"][0]["w"], runs["pad"][0]["w"], rtol=1e-5)  # the padding weighed 0
    for a, b in zip(runs["pad"][1], runs["trim"][1]):
        assert np.isclose(a["train_loss"], b["train_loss"], rtol=1e-5) and np.isclose(a["val_loss"], b["val_loss"],
                                                                                      rtol=1e-5)


def test_a_second_run_with_the_same_settings_reuses_its_traced_steps(make_context, tmp_path):
    """The step factories are memoized by their settings (``parallel.reused``): the same settings
    trace nothing again and give the same parameters; another learning rate is another program."""
    traces = []

    def count_traces(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count_traces)
    try:
        runs = {}
        for name, lr in (("first", 0.05), ("again", 0.05), ("other_lr", 0.02)):
            traces.clear()
            ctx = make_context(linear_arrays(), config(max_epochs=2, learning_rate=lr), workdir=tmp_path / name)
            runs[name] = loop.run(ctx, linear_phase(ctx), {"w": np.zeros(3, np.float32)})[0], len(traces)
    finally:
        jax.monitoring.unregister_event_duration_listener(count_traces)
    assert runs["again"][1] == 0 and runs["other_lr"][1] > 0
    np.testing.assert_array_equal(runs["again"][0]["w"], runs["first"][0]["w"])
    assert not np.allclose(runs["other_lr"][0]["w"], runs["first"][0]["w"])


def test_patience_stops_early(make_context):
    ctx = make_context(linear_arrays(), config(max_epochs=20, patience=2))
    worse = iter(range(100))  # validation gets worse every epoch after the first
    _, progress = loop.run(ctx, linear_phase(ctx, validate=lambda p: {"val_loss": float(next(worse))}),
                           {"w": np.zeros(3, np.float32)})
    assert progress["epoch"] == 3 and progress["best_epoch"] == 0 and progress["bad_epochs"] == 2


def test_non_finite_values_stop_with_one_line(make_context):
    ctx = make_context(linear_arrays(), config())
    message = r"^lin phase: val_loss became nan at epoch 0; lower config\.ce\.learning_rate$"
    with pytest.raises(GenreError, match=message):
        loop.run(ctx, linear_phase(ctx, validate=lambda p: {"val_loss": float("nan")}), {"w": np.zeros(3, np.float32)})


def test_competing_start_fingerprint_and_extension(make_context):
    """RL's switches: the start is epoch -1 (best step 0), other settings are refused, and a finished
    phase continues when max_epochs is raised."""
    ctx = make_context(linear_arrays(), config(max_epochs=2))
    rewards = {}

    def reward(params):  # maximized; the zero start is already the best it will ever be here
        value = -float(np.sum(np.square(params["w"] - np.zeros(3))))
        rewards.setdefault(len(rewards), value)
        return {"val_reward": value}

    phase = linear_phase(ctx, validate=reward, maximize=True, start_competes=True, fingerprint={"a": 1})
    best, progress = loop.run(ctx, phase, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(best["w"], 0.0)
    assert progress["best_epoch"] == -1 and progress["start_val"] == 0.0
    ckpt = checkpoint.PhaseCheckpoints(ctx.workdir, "lin")
    assert ckpt.best_step() == 0 and ckpt.meta("best")["epoch"] == -1
    with pytest.raises(GenreError, match="other settings"):
        loop.run(ctx, linear_phase(ctx, validate=reward, maximize=True, start_competes=True, fingerprint={"a": 2}),
                 {"w": np.zeros(3, np.float32)})
    longer = make_context(linear_arrays(), config(max_epochs=3))
    _, progress = loop.run(longer, linear_phase(longer, validate=reward, maximize=True, start_competes=True,
                                                fingerprint={"a": 1}), {"w": np.zeros(3, np.float32)})
    assert progress["epoch"] == 3 and [r["epoch"] for r in read_log(ctx)] == [0, 1, 2]


def test_a_further_rule_keeps_its_own_best_without_the_start_and_resumes(make_context, tmp_path, monkeypatch):
    """A second selection rule (RL's both_selections) keeps its own best checkpoint; without
    start_competes (RL's keep_start = False) only trained epochs compete, though the start is best
    under that rule here; a resumed run reproduces both; a finished phase with a fingerprint
    continues when max_epochs is raised."""

    def validate(params):  # val_loss falls every epoch; |w0 - 0.6| is smallest midway (w0: 0 -> 1)
        w = np.asarray(params["w"])
        return {"val_loss": float(np.sum((w - np.array([1.0, -2.0, 0.5])) ** 2)), "val_near": abs(float(w[0]) - 0.6),
                "val_start": float(np.sum(w ** 2))}

    rules = (loop.Selection("near", "val_near", False), loop.Selection("start", "val_start", False))
    phase = lambda c: linear_phase(c, validate=validate, also_best=rules, fingerprint={"a": 1})  # noqa: E731
    init = {"w": np.zeros(3, np.float32)}
    straight = make_context(linear_arrays(), config(learning_rate=0.02), workdir=tmp_path / "a")
    best, progress = loop.run(straight, phase(straight), init)
    log = read_log(straight)
    near = int(np.argmin([r["val_near"] for r in log]))
    assert 0 < near < 5 and progress["best_epoch"] == 5  # the rules part
    assert progress["also"] == {"near": {"best_val": log[near]["val_near"], "best_epoch": near},
                                "start": {"best_val": log[0]["val_start"], "best_epoch": 0}}  # not the start's 0
    assert log[near]["best_val_near"] == log[near]["val_near"]
    ckpt = checkpoint.PhaseCheckpoints(straight.workdir, "lin")
    assert ckpt.meta("best_near")["epoch"] == near and ckpt.best_step("best_near") == near
    assert ckpt.meta("best")["epoch"] == 5 and ckpt.best_step("best_start") == 0
    w_near = ckpt.restore(loop.best_checkpoint("near"), init)[0]["w"]
    assert abs(float(w_near[0]) - 0.6) == pytest.approx(log[near]["val_near"])

    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "last" and step == near + 1:
            raise KeyboardInterrupt

    resumed = make_context(linear_arrays(), config(learning_rate=0.02), workdir=tmp_path / "b")
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run(resumed, phase(resumed), init)
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    _, progress_b = loop.run(resumed, phase(resumed), init)
    assert progress_b == progress and read_log(resumed) == log
    np.testing.assert_array_equal(checkpoint.PhaseCheckpoints(resumed.workdir, "lin").restore("best_near", init)[0]["w"],
                                  w_near)
    longer = make_context(linear_arrays(), config(learning_rate=0.02, max_epochs=7), workdir=tmp_path / "a")
    _, progress = loop.run(longer, phase(longer), init)
    assert progress["epoch"] == 7 and [r["epoch"] for r in read_log(longer)] == list(range(7))


def test_killed_loop_resumes_to_the_same_result(make_context, tmp_path, monkeypatch):
    init = {"w": np.zeros(3, np.float32)}
    straight = make_context(linear_arrays(), config(), workdir=tmp_path / "a")
    best_a, _ = loop.run(straight, linear_phase(straight), init)

    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "last" and step == 2:
            raise KeyboardInterrupt

    resumed = make_context(linear_arrays(), config(), workdir=tmp_path / "b")
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run(resumed, linear_phase(resumed), init)
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    best_b, _ = loop.run(resumed, linear_phase(resumed), init)
    np.testing.assert_array_equal(best_a["w"], best_b["w"])
    assert read_log(straight) == read_log(resumed)


def test_mean_stats_are_exact_over_uneven_batches():
    sums = [loop.LossSums(jnp.float32(3.0), jnp.float32(2.0)), loop.LossSums(jnp.float32(1.0), jnp.float32(6.0))]
    assert loop.mean_stats(sums) == {"loss": 0.5}
    assert loop.steps_per_epoch(100, 16) == 7 and loop.steps_per_epoch(100, 16, cap=3) == 3
    assert jax.tree.leaves(sums[0])  # stats are pytrees the jitted step can return


def test_phases_draw_distinct_streams_unless_shared(tiny_config):
    per_phase = settings.resolve(tiny_config(rng_streams="per_phase"), TOK)
    shared = settings.resolve(tiny_config(), TOK)
    assert shared.ce.rng_streams == "shared" and per_phase.rl.loop.rng_streams == "per_phase"
    folders = ("ce", "token/ntl_was", "head/riemann", "rl/genre2")
    keys = [jax.random.key_data(loop.phase_key(0, per_phase.ce, f)).tolist() for f in folders]
    assert len({str(k) for k in keys}) == len(folders)
    seed_key = jax.random.key_data(jax.random.key(0)).tolist()
    assert all(jax.random.key_data(loop.phase_key(0, shared.ce, f)).tolist() == seed_key for f in folders)
    # shared: the older layout, orders by (seed, offset + epoch); per_phase: by phase too
    orders = {f: loop.epoch_order(0, loop.Phase(f, per_phase.ce, None, None, ()), 1, 50).tolist() for f in folders}
    assert len({str(o) for o in orders.values()}) == len(folders)
    legacy = loop.Phase("token/ntl_was", shared.ce, None, None, ())
    np.testing.assert_array_equal(loop.epoch_order(0, legacy, 1, 50), np.random.default_rng([0, 1]).permutation(50))


def test_a_sparse_last_checkpoint_resumes_to_the_same_result(make_context, tmp_path, monkeypatch):
    """checkpoint_every_s: ``last`` only when due, at the end and on SIGTERM; a run killed after best
    checkpoints newer than its ``last`` drops them, retrains those epochs and ends as the straight run."""
    from genre_jax import preemption
    init = {"w": np.zeros(3, np.float32)}

    def sparse():
        c = config()
        c.checkpoint_every_s = 1e9
        return c

    writes = []
    original_save = checkpoint.PhaseCheckpoints.save

    def recording_save(self, which, step, tree, meta):
        writes.append((which, step))
        original_save(self, which, step, tree, meta)

    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", recording_save)
    straight = make_context(linear_arrays(), sparse(), workdir=tmp_path / "a")
    best_a, progress_a = loop.run(straight, linear_phase(straight), init)
    assert [step for which, step in writes if which == "last"] == [5]  # the end only
    assert progress_a["best_epoch"] == 5 and ("best", 4) in writes  # val_loss fell every epoch

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "best" and step == 3:
            raise KeyboardInterrupt  # after best of epochs 2 and 3, which the last of epoch 1 predates

    killed = make_context(linear_arrays(), sparse(), workdir=tmp_path / "b")
    monkeypatch.setattr(loop.Cadence, "due", lambda self: len(read_log(killed)) == 2)  # last after epoch 1 only
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run(killed, linear_phase(killed), init)
    ckpt = checkpoint.PhaseCheckpoints(killed.workdir, "lin")
    assert ckpt.meta("last")["epoch"] == 2 and ckpt.best_step() == 3
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    monkeypatch.setattr(loop.Cadence, "due", lambda self: False)
    best_b, progress_b = loop.run(killed, linear_phase(killed), init)
    np.testing.assert_array_equal(best_a["w"], best_b["w"])  # a run against itself on one machine
    assert progress_b == progress_a and read_log(killed) == read_log(straight)
    assert checkpoint.PhaseCheckpoints(killed.workdir, "lin").meta("best")["epoch"] == 5

    # SIGTERM writes last whether or not it is due, then stops
    epochs = []

    def validate_then_sigterm(params):
        epochs.append(len(epochs))
        if epochs[-1] == 1:
            preemption._requested = True
        return {"val_loss": float(np.sum(np.asarray(params["w"]) ** 2))}

    stopped = make_context(linear_arrays(), sparse(), workdir=tmp_path / "c")
    try:
        with pytest.raises(preemption.Stopped):
            loop.run(stopped, linear_phase(stopped, validate=validate_then_sigterm), init)
    finally:
        preemption._requested = False
    assert checkpoint.PhaseCheckpoints(stopped.workdir, "lin").meta("last")["epoch"] == 2
