"""GroupCommitter and sync_many: one fsync covers every submit that arrived meanwhile."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from raft.storage import DurableLog, GroupCommitter, sync_many
from raft.types import Entry

WAIT_S = 10.0


class GatedLog:
    """A Syncable whose first sync blocks until released, counting every sync."""

    def __init__(self, inner: DurableLog | None = None) -> None:
        self.inner = inner
        self.syncs = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_with: BaseException | None = None

    @property
    def dirty(self) -> bool:
        return True if self.inner is None else self.inner.dirty

    def sync(self) -> None:
        self.syncs += 1
        self.entered.set()
        assert self.release.wait(WAIT_S)
        if self.fail_with is not None:
            raise self.fail_with
        if self.inner is not None:
            self.inner.sync()


def test_concurrent_submitters_share_one_fsync(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    gated = GatedLog(log)
    committer = GroupCommitter()
    try:
        log.append([Entry(1, 1, data=b"first")])
        first = committer.submit(gated)
        assert gated.entered.wait(WAIT_S)  # the thread is now inside sync #1

        submitters = 32
        futures: list[Future[None]] = []
        lock = threading.Lock()

        def submitter() -> None:
            with lock:
                log.append([Entry(log.last_index() + 1, 1, data=b"x" * 100)])
                futures.append(committer.submit(gated))

        threads = [threading.Thread(target=submitter) for _ in range(submitters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(futures) == submitters and log.last_index() == 1 + submitters
        assert not any(f.done() for f in futures)  # none is covered by the running sync
        gated.release.set()
        first.result(WAIT_S)
        for future in futures:
            future.result(WAIT_S)
        assert gated.syncs == 2  # 33 submits, 2 fsync rounds
        assert committer.syncs_performed == 2
        assert log.fsyncs_performed <= 2
        assert not log.dirty
    finally:
        gated.release.set()
        committer.close()
        log.close()


def test_real_concurrent_appenders_need_fewer_fsyncs_than_appends(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    append_lock = threading.Lock()
    appends_per_thread, threads_count = 20, 8

    def appender() -> None:
        for _ in range(appends_per_thread):
            with append_lock:
                log.append([Entry(log.last_index() + 1, 1, data=b"y" * 512)])
                future = committer.submit(log)
            future.result(WAIT_S)

    with GroupCommitter() as committer:
        threads = [threading.Thread(target=appender) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    total = appends_per_thread * threads_count
    assert log.last_index() == total
    assert 1 <= log.fsyncs_performed <= total
    log.close()
    with DurableLog(tmp_path) as reopened:
        assert reopened.last_index() == total


def test_a_failed_sync_fails_every_waiter_of_that_round() -> None:
    gated = GatedLog()
    gated.fail_with = OSError(5, "EIO")
    gated.release.set()
    with GroupCommitter() as committer:
        future = committer.submit(gated)
        with pytest.raises(OSError, match="EIO"):
            future.result(WAIT_S)


def test_close_finishes_pending_then_refuses() -> None:
    gated = GatedLog()
    committer = GroupCommitter()
    first = committer.submit(gated)
    assert gated.entered.wait(WAIT_S)
    second = committer.submit(gated)
    closer = threading.Thread(target=committer.close)
    closer.start()
    gated.release.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert first.result(0) is None and second.result(0) is None
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(gated)


def test_sync_many_syncs_only_dirty_logs(tmp_path: Path) -> None:
    logs = [DurableLog(tmp_path / str(i)) for i in range(4)]
    for log in logs[:3]:
        log.append([Entry(1, 1, data=b"z")])
    sync_many(logs)
    assert [log.fsyncs_performed for log in logs] == [1, 1, 1, 0]
    assert not any(log.dirty for log in logs)
    for log in logs:
        log.append([Entry(log.last_index() + 1, 1, data=b"w")])
    with ThreadPoolExecutor(max_workers=4) as pool:
        sync_many(logs, executor=pool)
    assert [log.fsyncs_performed for log in logs] == [2, 2, 2, 1]
    for log in logs:
        log.close()


def test_sync_many_reports_a_failure_after_trying_all(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.append([Entry(1, 1)])
    failing = GatedLog()
    failing.fail_with = OSError(28, "ENOSPC")
    failing.release.set()
    with pytest.raises(OSError, match="ENOSPC"):
        sync_many([failing, log])
    assert not log.dirty  # the healthy log was still synced
    log.close()


def test_fsync_failure_poisons_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = DurableLog(tmp_path)
    log.append([Entry(1, 1)])

    def failing_fdatasync(fd: int) -> None:
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError, match="EIO"):
        log.sync()
    monkeypatch.undo()
    with pytest.raises(OSError, match="failed an earlier fsync"):
        log.append([Entry(2, 1)])
    with pytest.raises(OSError, match="failed an earlier fsync"):
        log.sync()
    log.close()
