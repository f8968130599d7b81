"""The bot lock file across processes: another process holds it, kill -9 frees it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from telegram_gateway.poller import BotLock

pytestmark = pytest.mark.faults


def test_lock_is_exclusive_across_processes_and_freed_by_kill(tmp_path: Path):
    path = tmp_path / "locks" / "1.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys,time; os.makedirs(sys.argv[1].rsplit('/',1)[0], exist_ok=True);"
            "f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True);"
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        lock = BotLock(path)
        started = time.monotonic()
        assert not lock.try_acquire()
        assert time.monotonic() - started < 0.1  # never waits
        holder.kill()
        holder.wait(5)
        assert lock.try_acquire() and lock.held
        assert BotLock(path).try_acquire() is False  # a second descriptor in this process
        lock.release()
    finally:
        holder.kill()
