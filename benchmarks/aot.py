"""Compile-only sizing of a run's jitted programs for a TPU slice: no TPU needed, only libtpu.

With libtpu loaded, ``jax.experimental.topologies`` gives compile-only devices of a named slice; the
real programs of a run (the step factories of ``loop``/``train``/``rl``/``evaluate``, jitted by
``parallel.data_parallel`` on ``parallel.data_mesh(topology devices)``) are lowered with abstract
inputs (``jax.ShapeDtypeStruct``) and compiled by XLA:TPU. Per program and per chip it reports what
the executable says: argument / output / temp bytes, FLOPs, bytes accessed and XLA's own time
estimate (``optimal_seconds``), every collective in the optimized HLO with its bytes, and any host
round trip (callback, send/recv, in/outfeed). All of it is **estimated** from the compiler, never
measured on a chip; times are compile-time lower bounds.

Caveat that shapes the time model: XLA's cost analysis counts a ``while`` body once, not once per
iteration (checked here: a scan of 1, 2 or 8 matmuls reports the same FLOPs), so the epoch scan and
the sampler's L-step scan are undercounted. ``--table`` therefore builds its per-step times from
single-update programs, the analytic FLOPs of ``bench_rl.model_flops`` (cross-checked against XLA on
a loop-free program there), a latency term per sequential sampler step (the kernels in the loop
body, counted from the HLO, times an assumed per-kernel cost) and a per-epoch host term.

  .venv/bin/python benchmarks/aot.py --topology=v5e:2x4                 # paper programs, float32 + bfloat16
  .venv/bin/python benchmarks/aot.py --topology=v4:2x2x2 --variant=paper --out benchmarks/results/aot_v4-16.json
  .venv/bin/python benchmarks/aot.py --topology=v5e:2x4 --variant=tiny --programs=ce_epoch,rl_update --dtypes=float32
  .venv/bin/python benchmarks/aot.py --table --topology=v5e:2x4 --out benchmarks/results/aot_table_v5e-8.json

libtpu comes from ``TPU_LIBRARY_PATH`` or ``<repo>/.libtpu`` (``scripts/setup.sh`` installs it there,
outside the venv, so that ``launch.py`` on a CPU machine never sees a TPU plugin). The process runs
with ``JAX_PLATFORMS=cpu``: the TPU plugin is only used to compile.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
LIBTPU = os.path.join(ROOT, ".libtpu", "libtpu", "libtpu.so")


def use_libtpu() -> str | None:
    """Points JAX at libtpu for compiling only; returns the library path (None when absent).
    Must run before jax is imported: the CPU backend stays the one that executes."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    path = os.environ.get("TPU_LIBRARY_PATH") or (LIBTPU if os.path.isfile(LIBTPU) else None)
    if path is None or not os.path.isfile(path):
        return None
    os.environ["TPU_LIBRARY_PATH"] = path
    # Without them libtpu looks for a TPU VM's metadata and prints a page of warnings.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu takes /tmp/libtpu_lockfile for the chips of a real host; compiling needs no chips, so two
    # processes (the script and the CI test, two developers) may hold it at once
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    return path


LIBRARY = use_libtpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench_rl import model_flops  # noqa: E402
from experiments.configs import suite_protocols, tabular  # noqa: E402
from genre_jax import decode, evaluate, exact, loop, models, parallel, rl, settings, supervised  # noqa: E402
from genre_jax.tokenizers import make_tokenizer  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip peaks (the Cloud TPU documentation page named in ``source``)."""
    kind: str
    bf16_flops: float
    hbm_bytes_per_s: float
    hbm_bytes: float
    source: str


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 1200e9, 32 * 2**30, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 197e12, 819e9, 16e9, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 459e12, 2765e9, 95e9, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", 918e12, 1638e9, 32e9, "https://cloud.google.com/tpu/docs/v6e"),
    # dense bf16 (the datasheet's 1979 TFLOP/s is with sparsity)
    "h100": Chip("NVIDIA H100 SXM", 989e12, 3.35e12, 80e9,
                 "https://www.nvidia.com/en-us/data-center/h100/ (datasheet, H100 SXM)"),
}

# --topology -> (Cloud TPU slice, get_topology_desc arguments). Host bounds as the slices are sold
# (v5e/v6e: 8 chips per host; v4/v5p: 4 chips per host, megacore), not libtpu's default of 4
# chips per host, which would split a v5litepod-8 into two processes.
TOPOLOGIES = {
    "v5e:2x4": ("v5litepod-8, 1 host", dict(chips_per_host_bounds=(2, 4, 1))),
    "v6e:2x4": ("v6e-8, 1 host", dict(chips_per_host_bounds=(2, 4, 1))),
    "v5p:2x2x1": ("v5p-8, 1 host", dict(chip_config_name="megacore", chips_per_host_bounds=(2, 2, 1))),
    "v4:2x2x2": ("v4-16, 2 hosts", dict(chip_config_name="megacore", chips_per_host_bounds=(2, 2, 1))),
    # A compile-only CUDA target: the jax-cuda12 plugin (not the CUDA wheels) in .jax_cuda/ and XLA's
    # target description of the GPU (benchmarks/gpu_targets/); XLA:GPU gives no cost analysis there.
    "h100:1x1x8": ("8 x H100 SXM, 1 host", dict(topology="1x1x8")),
}
CUDA_PLUGIN = os.path.join(ROOT, ".jax_cuda")
PROGRAMS = ("ce_epoch", "ce_update", "ce_eval", "rl_update", "rl_epoch", "rl_val", "sampler", "exact", "exact_temperatures",
            "head_epoch")
EPOCH_STEPS = 4  # scanned batches in the *_epoch programs: the scan body is one program, whatever its length
# Time-model inputs that are not from the compiler (see benchmarks/README.md): the cost of one kernel
# (an HLO fusion, dot, collective) run in sequence on a TPU core (assumed), and the host work of one
# epoch outside the compiled calls, dominated by the loop's checkpoint writes: a `best` and a `last`
# Orbax save of a paper-size RL state took 1.6-2.2 s per epoch on the 2-core development VM
# (measured, loaded machine, local disk; checksum read-back included); --epoch_host_s changes it.
KERNEL_S = 1.5e-6
EPOCH_HOST_S = 1.7


def chip_for(topology: str) -> Chip:
    return CHIPS[topology.split(":")[0]]


def topology_mesh(topology: str):
    from jax.experimental import topologies
    if topology.startswith("h100"):
        if not os.path.isdir(os.path.join(CUDA_PLUGIN, "jax_plugins")):
            raise RuntimeError(f"no CUDA plugin in {CUDA_PLUGIN}: pip install --no-deps --target {CUDA_PLUGIN} "
                               f"jax-cuda12-pjrt==0.10.2 jax-cuda12-plugin==0.10.2")
        sys.path.insert(0, CUDA_PLUGIN)  # found by JAX's plugin discovery; JAX_PLATFORMS=cpu keeps it compile-only
        with open(os.path.join(ROOT, "benchmarks", "gpu_targets", "h100.txtpb")) as f:
            target = f.read()
        devices = topologies.get_topology_desc(platform="cuda", target_config=target,
                                               **TOPOLOGIES[topology][1]).devices
        return parallel.data_mesh(devices)
    if LIBRARY is None:
        raise RuntimeError("libtpu not found: run `bash scripts/setup.sh` (installs it into .libtpu/) or set "
                           "TPU_LIBRARY_PATH to a libtpu.so")
    _, kwargs = TOPOLOGIES[topology]
    devices = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs).devices
    return parallel.data_mesh(devices)


def variant_config(variant: str, dtype: str, overrides: dict | None = None):
    config = tabular.get_config(variant)
    config.model.dtype = dtype
    for field, value in (overrides or {}).items():
        section, name = field.split(".")
        config[section][name] = value
    return config


def _abstract(tree):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), tree)


def _batch(rows: int, features: int, length: int, steps: int = 0, fields=("x", "tokens", "z", "weight")):
    lead = (steps, rows) if steps else (rows,)
    shapes = {"x": ((*lead, features), jnp.float32), "tokens": ((*lead, length), jnp.int32),
              "z": (lead, jnp.float32), "weight": (lead, jnp.float32)}
    return {k: jax.ShapeDtypeStruct(*shapes[k]) for k in fields}


def build_programs(config, mesh, features: int, train_rows: int, wanted=PROGRAMS):
    """{name: (jitted, abstract args, note)}: the programs a run of ``config`` compiles, built by the
    library's own factories with the shapes a ``train_rows``-row dataset gives them."""
    tok = make_tokenizer(config.tokenizer, np.linspace(-3.0, 3.0, 101))  # the range only sets constants
    model = models.make_model(config.model, tok)
    run = settings.resolve(config, tok)
    key = jax.eval_shape(lambda: jax.random.key(0))
    params = jax.eval_shape(lambda k: models.init_params(model, features, tok.length, k), key)
    L = tok.length
    out = {}

    def state_of(tx, p):
        return jax.eval_shape(lambda q: loop.TrainState(jnp.zeros((), jnp.int32), q, tx.init(q)), p)

    def epoch_batch(loop_settings, fields):
        size = parallel.batch_size_for(loop_settings.batch_size, train_rows, mesh)
        return size, _batch(size, features, L, EPOCH_STEPS, fields)

    if {"ce_epoch", "ce_update", "ce_eval"} & set(wanted):
        tx = loop.make_optimizer(run.ce.optim, 1000)
        update, eval_fn = supervised.supervised_update(supervised.decoder_loss_fn(model, tok, masked=run.ce_masked_loss), tx)
        size, batches = epoch_batch(run.ce, ("x", "tokens", "weight"))
        out["ce_epoch"] = (loop.jit_epoch(update, mesh), (state_of(tx, params), batches, key),
                           f"{EPOCH_STEPS} x {size} rows, dropout on")
        out["ce_update"] = (loop.jit_update(update, mesh), (state_of(tx, params), jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), batches), key), f"{size} rows")
        val_size = parallel.batch_size_for(run.ce.batch_size, train_rows // 4, mesh)
        out["ce_eval"] = (loop.jit_eval(eval_fn, mesh), (params, _batch(val_size, features, L,
                                                                         fields=("x", "tokens", "weight"))),
                          f"{val_size} rows")
    if {"rl_update", "rl_epoch", "rl_val"} & set(wanted):
        tx = loop.make_optimizer(run.rl.loop.optim, 1000)
        update, val_fn = rl.make_rl_update(model, tok, run.rl, tx)
        size, batches = epoch_batch(run.rl.loop, rl.FIELDS + ("weight",))
        state = state_of(tx, params)
        G = run.rl.num_rollouts
        out["rl_update"] = (loop.jit_update(update, mesh), (state, _batch(size, features, L), (params, key)),
                            f"{size} inputs x G {G}, {run.rl.method.name}")
        out["rl_epoch"] = (loop.jit_epoch(update, mesh), (state, batches, (params, key)),
                           f"{EPOCH_STEPS} x {size} inputs x G {G}")
        val_size = parallel.batch_size_for(run.rl.loop.batch_size, train_rows // 4, mesh)
        out["rl_val"] = (loop.jit_eval(val_fn, mesh), (params, _batch(val_size, features, L), key),
                         f"{val_size} inputs x G {G}")
    x_eval = jax.ShapeDtypeStruct((parallel.round_up(run.eval.batch_size, mesh.size), features), jnp.float32)
    temperature = jax.ShapeDtypeStruct((), jnp.float32)
    if "sampler" in wanted:
        out["sampler"] = (decode.predict_fn(model, tok, mesh, "sample", run.eval.num_samples),
                          (params, x_eval, key, temperature), f"{x_eval.shape[0]} rows x {run.eval.num_samples} "
                                                              f"samples + greedy, L {L}")
    exact_ok = exact.num_sequences(tok) <= run.eval.exact_max_sequences
    if "exact" in wanted and exact_ok:
        out["exact"] = (decode.predict_fn(model, tok, mesh, "exact", run.eval.num_samples),
                        (params, x_eval, key, temperature), f"{x_eval.shape[0]} rows x {exact.num_sequences(tok)} "
                                                            f"sequences")
    if "exact_temperatures" in wanted and exact_ok:
        from genre_jax import calibration
        temps = jax.ShapeDtypeStruct((len(calibration.TEMPERATURES),), jnp.float32)
        out["exact_temperatures"] = (evaluate._probs_at_temperatures_fn(model, tok, mesh), (params, x_eval, temps),
                                     f"{x_eval.shape[0]} rows x {len(calibration.TEMPERATURES)} temperatures")
    if "head_epoch" in wanted:
        ctx = types.SimpleNamespace(settings=run, model_config=config.model.to_dict())
        head_model = supervised.head_model(ctx)
        values_C = heads_values(run.head)
        loss_fn = run.head.method.spec.make_loss(head_model, run.head, values_C)
        tx = loop.make_optimizer(run.head.loop.optim, 1000)
        head_params = jax.eval_shape(lambda k: head_model.init({"params": k}, jnp.zeros((1, features)),
                                                               train=False)["params"], key)
        size, batches = epoch_batch(run.head.loop, ("x", "z", "weight"))
        out["head_epoch"] = (loop.jit_epoch(supervised.supervised_update(loss_fn, tx)[0], mesh),
                             (state_of(tx, head_params), batches, key),
                             f"{run.head.method.name}, {EPOCH_STEPS} x {size} rows")
    return {k: v for k, v in out.items() if k in wanted}, params, tok


def heads_values(head):
    from genre_jax import heads
    return heads.bin_layout(head, np.linspace(-3.0, 3.0, 101))[1]


# ---------------------------------------------------------------------------------------------
# What the compiled program says

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(.*?)\s+(all-reduce|all-reduce-start|all-gather|all-gather-start|reduce-scatter|"
                 r"all-to-all|collective-permute|collective-permute-start)\(")
_HOST = re.compile(r"\b(send|recv|send-done|recv-done|infeed|outfeed)\(|custom_call_target=\"[^\"]*"
                   r"(callback|host|Host)[^\"]*\"")


def shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(text):
        total += _BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
    return total


def collectives(hlo: str) -> list[dict]:
    found = []
    for line in hlo.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        name = re.search(r"op_name=\"([^\"]*)\"", line)
        found.append({"op": m.group(2).removesuffix("-start"), "bytes": shape_bytes(m.group(1)),
                      "shape": m.group(1)[:120], "source": name.group(1)[-140:] if name else ""})
    return found


def host_round_trips(hlo: str) -> list[str]:
    return sorted({m.group(0)[:80] for m in _HOST.finditer(hlo)})


def kernel_counts(hlo: str) -> dict:
    """Kernels (fusions, dots, collectives, custom calls, ...) launched by the entry computation and,
    per while loop, by its body with the loop's trip count when XLA knows it."""
    per_computation, bounds, current, entry = {}, {}, None, None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head:
            current = head.group(2)
            per_computation[current] = 0
            entry = current if head.group(1) else entry
        elif current and (bound := re.search(r"= s32\[\]\S* constant\((\d+)\)", line)):
            bounds.setdefault(current, []).append(int(bound.group(1)))  # a scan's condition: i < trip count
        elif current and re.search(r"=\s.*\b(fusion|convolution|dot|all-reduce(-start)?|all-gather(-start)?|"
                                   r"custom-call|reduce|scatter|gather|sort|rng-bit-generator)\(", line):
            per_computation[current] += 1
    loops = []
    for line in hlo.splitlines():
        if " while(" not in line:
            continue
        body = re.search(r"body=%?([\w.\-]+)", line)
        condition = re.search(r"condition=%?([\w.\-]+)", line)
        trips = re.search(r"\"known_trip_count\":\{\"n\":\"(\d+)\"", line)
        found = bounds.get(condition.group(1), []) if condition else []
        trip_count = int(trips.group(1)) if trips else (found[0] if len(found) == 1 else None)
        loops.append({"body": body.group(1) if body else "", "trip_count": trip_count,
                      "body_kernels": per_computation.get(body.group(1), 0) if body else 0})
    return {"entry_kernels": per_computation.get(entry, 0), "while_loops": loops}


def analyse(compiled, chip: Chip, param_bytes: int) -> dict:
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}  # None from a compile-only GPU
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else cost
    hlo = compiled.as_text()
    found = collectives(hlo)
    per_chip = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes \
        - memory.alias_size_in_bytes
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    return {
        "argument_bytes": memory.argument_size_in_bytes, "output_bytes": memory.output_size_in_bytes,
        "temp_bytes": memory.temp_size_in_bytes, "alias_bytes": memory.alias_size_in_bytes,
        "code_bytes": memory.generated_code_size_in_bytes, "per_chip_bytes": per_chip,
        "fits_hbm": per_chip <= chip.hbm_bytes, "flops": flops, "bytes_accessed": accessed,
        # XLA:TPU reports a negative estimate when it cannot cost some instruction: no estimate then
        "optimal_seconds": optimal if (optimal := float(cost.get("optimal_seconds", -1.0))) >= 0 else None,
        "roofline_s": max(flops / chip.bf16_flops, accessed / chip.hbm_bytes_per_s) if cost else None,
        "collectives": found, "all_reduce_bytes": sum(c["bytes"] for c in found if c["op"] == "all-reduce"),
        "param_bytes": param_bytes, "host_round_trips": host_round_trips(hlo), **kernel_counts(hlo),
    }


def ms(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3f}"


def tree_bytes(tree) -> int:
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def compile_all(topology: str, variant: str, dtypes, wanted, features: int, train_rows: int, overrides=None):
    mesh = topology_mesh(topology)
    chip = chip_for(topology)
    rows = []
    for dtype in dtypes:
        config = variant_config(variant, dtype, overrides)
        programs, _, tok = build_programs(config, mesh, features, train_rows, wanted)
        for name, (jitted, args, note) in programs.items():
            start = time.perf_counter()
            compiled = jitted.lower(*args).compile()
            own = getattr(args[0], "params", args[0])  # a train state's params, or the params themselves
            row = {"program": name, "dtype": dtype, "variant": variant, "shapes": note, "length": tok.length,
                   "compile_s": round(time.perf_counter() - start, 2), **analyse(compiled, chip, tree_bytes(own))}
            rows.append(row)
            print(f"[{topology} {variant} {dtype}] {name}: {row['per_chip_bytes'] / 2**20:.1f} MiB/chip, "
                  f"{row['flops'] / 1e9:.2f} GFLOP, XLA est. {ms(row['optimal_seconds'])} ms, all-reduce "
                  f"{row['all_reduce_bytes'] / 2**20:.2f} MiB (params {row['param_bytes'] / 2**20:.2f} MiB), "
                  f"compiled in {row['compile_s']} s", flush=True)
    return mesh, rows


# ---------------------------------------------------------------------------------------------
# The paper's table on one slice: a compile-time lower bound


def authors_tasks(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def task_overrides(row: dict) -> dict:
    """The authors' per-task model and tokenizer, mapped as the suite maps them (suite_protocols)."""
    flags = suite_protocols.authors_overrides(row, "base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,"
                                                   "mlp_hidden")
    out = {}
    for flag in flags:
        field, _, value = flag.removeprefix("--config.").partition("=")
        out[field] = int(value)
    return out


def step_estimate(row: dict, chip: Chip, chips: int, analytic_flops: float, layer_scale: float = 1.0) -> float:
    """Seconds of one call: the largest of XLA's estimate, the analytic FLOPs at peak (XLA counts each
    loop body once), the bytes accessed at HBM bandwidth and the entry's kernels x KERNEL_S; plus every
    further trip of each loop as its kernels x KERNEL_S (the sampler's sequential steps are
    latency-bound at these widths). ``layer_scale`` scales kernel counts to another decoder depth."""
    compute = max(row["optimal_seconds"] or 0.0, analytic_flops / chips / chip.bf16_flops,
                  row["bytes_accessed"] / chip.hbm_bytes_per_s, row["entry_kernels"] * layer_scale * KERNEL_S)
    loops = sum(max((w["trip_count"] or 1) - 1, 0) * w["body_kernels"] * layer_scale * KERNEL_S
                for w in row["while_loops"])
    return compute + loops


def table_estimate(compiled: dict, topology: str, csv_path: str, features: int,
                   epoch_host_s: float = EPOCH_HOST_S) -> dict:
    """The paper's whole table on one slice, per task of authors_hparams.csv: CE (200 epochs at batch
    128, no early stop), ReMax and GenRe² (100 epochs each at 512 inputs x G 16), validation every
    epoch, evaluation of the three with 128 samples on validation and test.

    ``compiled`` holds the paper programs of one run of this script (``--from``): the per-step
    bytes and kernel counts come from them (the default architecture, which 41 of the 100 tasks
    use); each task's own width, depth and sequence length enter through the analytic FLOPs and by
    scaling the kernel counts with its decoder depth and its L - 1 sequential sampler steps."""
    chip, chips = chip_for(topology), compiled["chips"]
    rows = {r["program"]: r for r in compiled["programs"]}
    base = tabular.get_config("paper")
    B_ce, B_rl, G, S = base.ce.batch_size, base.rl.batch_size, base.rl.num_rollouts, base.eval.num_samples
    tasks = []
    for row in authors_tasks(csv_path):
        over = task_overrides(row)
        config = variant_config("paper", "float32", over)
        tok = make_tokenizer(config.tokenizer, np.linspace(-3.0, 3.0, 101))
        L, V = tok.length, tok.vocab_size
        size = dict(d_model=config.model.d_model, num_layers=config.model.num_layers, d_ff=config.model.d_ff,
                    mlp_hidden=config.model.mlp_hidden, mlp_layers=config.model.mlp_layers)
        scale = config.model.num_layers / base.model.num_layers

        def loop_scaled(program):  # the task's own number of sequential sampler steps
            r = dict(rows[program])
            r["while_loops"] = [{**w, "trip_count": L - 1 if w["trip_count"] == rows[program]["length"] - 1
                                 else w["trip_count"]} for w in r["while_loops"]]
            return r

        n = int(row["train_size"])
        n_val, n_test = max(n // 4, 1), max(n * 20 // 64, 1)
        one = model_flops(size, B_ce, 1, L, features, V)  # G = 1: its teacher-forced pass is CE's forward
        ce_flops = one["rl_step"] - one["kv_cache"]  # forward + backward, 3x the forward
        t_ce = step_estimate(rows["ce_update"], chip, chips, ce_flops, scale)
        t_ce_val = step_estimate(rows["ce_eval"], chip, chips, ce_flops / 3, scale)
        t_rl = step_estimate(loop_scaled("rl_update"), chip, chips,
                             model_flops(size, B_rl, G, L, features, V)["rl_step"], scale)
        t_val = step_estimate(loop_scaled("rl_val"), chip, chips,
                              model_flops(size, B_rl, G, L, features, V)["kv_cache"], scale)
        t_eval = step_estimate(loop_scaled("sampler"), chip, chips,
                               model_flops(size, base.eval.batch_size, S, L, features, V)["kv_cache"], scale)
        ce_epochs, rl_epochs = base.ce.max_epochs, base.rl.max_epochs
        ce_s = ce_epochs * (math.ceil(n / B_ce) * t_ce + math.ceil(n_val / B_ce) * t_ce_val)
        rl_s = 2 * rl_epochs * (math.ceil(n / B_rl) * t_rl + math.ceil(n_val / B_rl) * t_val)
        eval_s = 3 * math.ceil((n_val + n_test) / base.eval.batch_size) * t_eval
        host_s = (ce_epochs + 2 * rl_epochs) * epoch_host_s
        tasks.append({"dataset": row["dataset"], "train_rows": n, "model": over, "ce_step_s": t_ce,
                      "rl_step_s": t_rl, "ce_s": ce_s, "rl_s": rl_s, "eval_s": eval_s, "host_s": host_s,
                      "total_s": ce_s + rl_s + eval_s + host_s})
    total = {k: sum(t[k] for t in tasks) for k in ("ce_s", "rl_s", "eval_s", "host_s", "total_s")}
    return {"topology": topology, "dtype": compiled["programs"][0]["dtype"], "tasks": tasks, "total": total,
            "assumptions": {"kernel_s": KERNEL_S, "epoch_host_s": epoch_host_s, "features": features,
                            "ce_epochs": base.ce.max_epochs, "rl_epochs_per_method": base.rl.max_epochs,
                            "val_rows": "train/4 (64/16/20 split)", "test_rows": "train*20/64",
                            "early_stopping": "none: CE runs all 200 epochs (the top of the paper's budget)"}}


# ---------------------------------------------------------------------------------------------


def markdown(topology: str, rows: list[dict], chips: int) -> str:
    chip = chip_for(topology)
    lines = [f"{topology} ({TOPOLOGIES[topology][0]}, {chips} chips, {chip.kind}: {chip.bf16_flops / 1e12:.0f} "
             f"TFLOP/s bf16, {chip.hbm_bytes_per_s / 1e9:.0f} GB/s, {chip.hbm_bytes / 2**30:.1f} GiB HBM per chip, "
             f"{chip.source}); estimated per chip, compile-time lower bounds:", "",
             "| program | dtype | shapes | arg / out / temp MiB | GFLOP | GB accessed | XLA est. ms | roofline ms "
             "| all-reduce MiB (params MiB) | other collectives | host round trips |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        others = collections.Counter(c["op"] for c in r["collectives"] if c["op"] != "all-reduce")
        lines.append(
            f"| {r['program']} | {r['dtype']} | {r['shapes']} | {r['argument_bytes'] / 2**20:.1f} / "
            f"{r['output_bytes'] / 2**20:.1f} / {r['temp_bytes'] / 2**20:.1f} | {r['flops'] / 1e9:.2f} | "
            f"{r['bytes_accessed'] / 1e9:.3f} | {ms(r['optimal_seconds'])} | {ms(r['roofline_s'])} | "
            f"{r['all_reduce_bytes'] / 2**20:.2f} ({r['param_bytes'] / 2**20:.2f}), "
            f"{sum(c['op'] == 'all-reduce' for c in r['collectives'])} ops | "
            f"{', '.join(f'{k} x{v}' for k, v in others.items()) or 'none'} | "
            f"{', '.join(r['host_round_trips']) or 'none'} |")
    return "\n".join(lines)


def process_shapes(mesh, rows: int) -> dict:
    """{process: its rows of a ``rows``-row batch and the first row of each contiguous block of them}."""
    return {p: {"rows": int(len(r)), "blocks": [int(r[i]) for i in np.flatnonzero(np.diff(r, prepend=-2) != 1)]}
            for p, r in parallel.process_rows(mesh, rows).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="v5e:2x4", choices=sorted(TOPOLOGIES))
    parser.add_argument("--variant", default="paper", choices=tabular.VARIANTS)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--features", type=int, default=21, help="input features (21: cpu_act)")
    parser.add_argument("--train_rows", type=int, default=5242, help="train split rows (5242: cpu_act)")
    parser.add_argument("--table", default="", help="a JSON this script wrote for the paper variant: estimate the "
                        "paper's whole table (authors_hparams.csv) from its programs")
    parser.add_argument("--dtype", default="bfloat16", help="--table: which of its dtypes")
    parser.add_argument("--epoch_host_s", type=float, default=EPOCH_HOST_S,
                        help="--table: host seconds per epoch outside the compiled calls (checkpoints, log)")
    parser.add_argument("--markdown", nargs="*", default=None, help="print the tables of JSON files this script wrote")
    parser.add_argument("--authors_hparams", default=os.path.join(ROOT, "..", "shared", "datasets", "talent",
                                                                  "authors_hparams.csv"))
    parser.add_argument("--out", default="", help="JSON file for every number (default: print only)")
    args = parser.parse_args(argv)
    if LIBRARY is None and not args.table and not args.topology.startswith("h100"):
        print("error: libtpu not found: `bash scripts/setup.sh` installs it into .libtpu/ (or set TPU_LIBRARY_PATH)",
              file=sys.stderr)
        return 2
    if args.markdown:
        for path in args.markdown:
            with open(path) as f:
                saved = json.load(f)
            print(markdown(saved["topology"], saved["programs"], saved["chips"]) + "\n")
        return 0
    if args.table:
        with open(args.table) as f:
            compiled = json.load(f)
        compiled["programs"] = [r for r in compiled["programs"] if r["dtype"] == args.dtype]
        result = table_estimate(compiled, compiled["topology"], args.authors_hparams, args.features,
                                args.epoch_host_s)
        t = result["total"]
        print(f"{len(result['tasks'])} tasks on {compiled['topology']} ({args.dtype}): estimated "
              f"{t['total_s'] / 3600:.2f} h = CE {t['ce_s'] / 3600:.2f} h + RL {t['rl_s'] / 3600:.2f} h + eval "
              f"{t['eval_s'] / 3600:.3f} h + host per-epoch work {t['host_s'] / 3600:.2f} h")
    else:
        wanted = [p for p in args.programs.split(",") if p]
        mesh, rows = compile_all(args.topology, args.variant, args.dtypes.split(","), wanted, args.features,
                                 args.train_rows)
        print(markdown(args.topology, rows, mesh.size))
        result = {"topology": args.topology, "slice": TOPOLOGIES[args.topology][0], "chips": mesh.size,
                  "chip": dataclasses.asdict(chip_for(args.topology)), "variant": args.variant,
                  "processes": process_shapes(mesh, 512), "programs": rows}
        if len(result["processes"]) > 1:
            print(f"--multihost: a 512-input batch is fed as {result['processes']} (rows per process, first row "
                  f"of each contiguous block)")
    result.update(jax=jax.__version__, libtpu=LIBRARY, command=" ".join(sys.argv),
                  note="estimated from compile-only devices (XLA:TPU cost and memory analysis), not measured")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
