"""A stop asked for while a Dagster run executes in the process still stops the command."""

from __future__ import annotations

import os
import signal

import dagster as dg
import pytest
from dagster._utils.interrupts import capture_interrupts

from recon_pipeline.child_processes import sigterm_as_interrupt


def test_sigterm_outside_a_run_interrupts_at_once() -> None:
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # a bytecode boundary: the handler has run by now


def test_no_signal_is_no_stop() -> None:
    with sigterm_as_interrupt() as stop:
        stop.raise_if_requested()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_dagster_captured_is_still_a_stop(signum: int) -> None:
    with sigterm_as_interrupt() as stop:
        with capture_interrupts():  # what Dagster holds around a run's framework code
            os.kill(os.getpid(), signum)
        # Dagster forgot it on leaving; the command has not.
        with pytest.raises(KeyboardInterrupt):
            stop.raise_if_requested()


def test_a_signal_during_a_step_fails_the_run_and_stops_the_command() -> None:
    @dg.op
    def interrupted() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    @dg.job
    def one_step() -> None:
        interrupted()

    with sigterm_as_interrupt() as stop:
        result = one_step.execute_in_process(raise_on_error=False)
        assert not result.success  # Dagster turned the interrupt into a failed run …
        with pytest.raises(KeyboardInterrupt):
            stop.raise_if_requested()  # … and the command still learns it must stop


def test_the_handlers_are_restored_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    before_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before_fd)
    with sigterm_as_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(before_fd) == before_fd
