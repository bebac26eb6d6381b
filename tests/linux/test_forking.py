"""pybuild.linux.forking: work in a child, its failure reported in the parent."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from pybuild.linux.forking import ChildFailed, run_in_child


def test_the_work_runs_in_a_child_whose_state_does_not_leak(tmp_path: Path) -> None:
    before = os.getcwd()
    marker = tmp_path / "ran"

    def work() -> None:
        os.chdir(tmp_path)
        Path("ran").write_text(str(os.getpid()))

    run_in_child(work)
    assert os.getcwd() == before
    assert int(marker.read_text()) != os.getpid()


def test_an_oserror_comes_back_with_its_errno_and_message() -> None:
    def work() -> None:
        raise OSError(errno.EBUSY, "device busy for a reason")

    with pytest.raises(ChildFailed) as info:
        run_in_child(work)
    assert info.value.errno == errno.EBUSY
    assert info.value.strerror == "device busy for a reason"


def test_another_exception_comes_back_as_its_text() -> None:
    def work() -> None:
        raise ValueError("not like that")

    with pytest.raises(ChildFailed) as info:
        run_in_child(work)
    assert info.value.errno == 0
    assert info.value.strerror == "not like that"


def test_a_child_killed_by_a_signal_is_a_failure() -> None:
    def work() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ChildFailed, match="killed by signal 9"):
        run_in_child(work)
