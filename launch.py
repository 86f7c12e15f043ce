"""Entry point: a config, a workdir, and the phases to run.

  python launch.py                                       # default job: CE -> GenRe² -> eval on bundled airfoil_self_noise
  python launch.py --config=experiments/configs/tabular.py:paper --workdir=runs/x --config.dataset=NAME \
      --config.data_dir=/path/to/talent --config.phases=ce,rl,eval --config.rl.method=remax
  python launch.py --workdir=runs/prof --config.phases=rl --profile=5   # trace 5 RL steps (runs/prof/profile)

Every run writes <workdir>/config.json (resolved config, seed, versions, devices) and
<workdir>/results.json (metrics per evaluated phase, split and aggregation). Re-running with the
same workdir resumes: finished phases are restored, an interrupted phase continues.
Bad input and file-system errors end with one line on stderr and exit code 2. SIGTERM (preemption)
finishes the epoch in progress, saves it and exits with code 75 (genre_jax/preemption.py); the same
command resumes.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments", "configs", "tabular.py")


def _define_flags() -> None:
    # config_flags parses the default config and every --config.x override while defining the flag.
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file (path[:variant]).", lock_config=True)
    flags.DEFINE_string("workdir", "runs/default", "Output folder; re-using one resumes its run.")
    flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-node GPU).")
    flags.DEFINE_integer("profile", 0, "Trace this many training steps of the first phase this launch trains "
                         "(after its compiling first step) with jax.profiler.", lower_bound=0)
    flags.DEFINE_string("profile_dir", "", "Where the trace goes (default <workdir>/profile).")
    flags.DEFINE_bool("progress", True, "Show the training loop's progress bars (--noprogress: none).")


FLAGS = flags.FLAGS


def run(config, workdir: str, profile_steps: int = 0, profile_dir: str = "", progress: bool = True) -> dict:
    """Runs the configured phases (see genre_jax/pipeline.py); returns this run's results."""
    from genre_jax import pipeline
    return pipeline.run(config, workdir, profile_steps, profile_dir, progress=progress)


def _enable_compilation_cache() -> None:
    import jax
    cache = os.environ.get("GENRE_JAX_CACHE_DIR", os.path.expanduser("~/.cache/genre_jax/xla"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; use --config.<field>=value", file=sys.stderr)
        return 2
    from genre_jax.errors import GenreError
    from genre_jax.evaluate import format_table
    from genre_jax.paths import resolve
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    # Orbax's writer tasks that fail (a full disk) are logged again by asyncio when collected, with
    # tracebacks, after the one-line error has been printed
    import logging as std_logging
    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    sys.excepthook, sys.unraisablehook = _without_closed_loop(sys.excepthook), _without_closed_loop(sys.unraisablehook)
    _enable_compilation_cache()
    if FLAGS.multihost:
        from genre_jax import parallel
        parallel.initialize_multihost()
    start = time.time()
    try:
        config = FLAGS.config
        config.to_dict()  # a config file that failed to load only raises on first use
    except (OSError, KeyError, AttributeError, ValueError) as e:  # a config file that failed to load
        _config_error(e)
    from genre_jax import preemption
    try:
        with preemption.graceful_sigterm():
            summary = run(config, FLAGS.workdir, FLAGS.profile, FLAGS.profile_dir, FLAGS.progress)
    except GenreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: read-only, full, not a folder, no permission
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e} (the run's finished work is kept; fix this and run the same "
              f"command to resume)", file=sys.stderr)
        return 2
    except preemption.Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return preemption.EXIT_CODE
    if summary["phases"]:
        print(format_table(summary["phases"]))
    print(f"done in {time.time() - start:.1f}s; outputs in {resolve(FLAGS.workdir)}")
    return 0


def _without_closed_loop(hook):
    """``hook`` minus "Event loop is closed": tensorstore's callbacks of a failed Orbax write (a full
    disk) still fire after the write's event loop closed, once per pending chunk."""
    def filtered(*args):
        exc = args[1] if len(args) == 3 else getattr(args[0], "exc_value", None)
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        hook(*args)
    return filtered


def _one_line(e: BaseException) -> str:
    text = str(e)
    if "Traceback" in text:  # config_flags embeds the config module's traceback in its message
        text = [line for line in text.splitlines() if line.strip()][-1]
    return " ".join(text.split()).strip("\"'")


def _config_error(e: BaseException) -> None:
    if isinstance(e, (KeyError, AttributeError)):
        print(f"error: unknown config field {_one_line(e)!r} in a --config.<field> override", file=sys.stderr)
    else:
        print(f"error: bad --config or override ({type(e).__name__}): {_one_line(e)}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        _config_error(e)


if __name__ == "__main__":
    try:
        _define_flags()
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        _config_error(e)
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
