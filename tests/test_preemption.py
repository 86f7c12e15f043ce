"""SIGTERM as a stop request: a flag while a run is in progress, a stop at once the second time."""
import os
import signal

import pytest

from genre_jax import preemption


def test_the_first_sigterm_only_requests_a_stop_at_the_next_check():
    preemption.check("nothing")  # no SIGTERM yet: no stop
    with preemption.graceful_sigterm():
        preemption.check("epoch 1")
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before the next bytecode
        with pytest.raises(preemption.Stopped, match="after epoch 2 \\(saved\\); run the same command"):
            preemption.check("epoch 2")
    preemption.check("after the run")  # the request ends with the run


def test_a_second_sigterm_stops_at_once_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Stopped, match="second SIGTERM"):
        with preemption.graceful_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    assert preemption.EXIT_CODE not in (0, 1, 2)  # distinct from success, crashes and bad input
