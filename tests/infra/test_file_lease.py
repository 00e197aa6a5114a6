"""The SQLite lease (an `flock` on a file) released from two threads at once closes its file
once. A second `os.close` of the same number closes whatever the process opened under that
number meanwhile (a client's socket, say): a shutdown racing a timed-out stop did that."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from infra import lease as lease_module
from infra.lease import FileLease


def test_two_threads_releasing_at_once_close_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = FileLease(tmp_path / "mfa.sqlite.projections.lease")
    assert held.try_acquire()
    closed: list[int] = []
    real_close, real_flock = os.close, fcntl.flock

    def slow_flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_UN:
            time.sleep(0.2)  # both threads are inside `release` by now, unless one waits
        real_flock(fd, operation)

    def counted_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(lease_module.fcntl, "flock", slow_flock)
    monkeypatch.setattr(lease_module.os, "close", counted_close)
    errors: list[BaseException] = []

    def release() -> None:
        try:
            held.release()
        except BaseException as exc:  # (EBADF from the second flock, before the fix)
            errors.append(exc)

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(closed) == 1, closed
    assert errors == []
    assert not held.still_held()


def test_a_released_lease_can_be_taken_by_the_next_holder_and_back(tmp_path: Path) -> None:
    path = tmp_path / "mfa.sqlite.relay.lease"
    first, second = FileLease(path), FileLease(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    assert first.try_acquire()
    first.release()
