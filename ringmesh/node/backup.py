"""Scheduled external backups (`allowed_external_storage`), carried out: `rsync` to a target
within this host's bandwidth limit, when the core says it is due (`RunBackup`).

The core keeps the schedule (`core/backups.py`): a run starts only while this host holds a
leader's lease, and its result is recorded (as a `backup/<n>` fact, through the core) only if
the host is still the leader of the same term; a leader that lost its lease meanwhile records
nothing, so a stale leader's run never passes for the current one's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING

from ringmesh.core.messages import BackupFinished, RunBackup

if TYPE_CHECKING:
    from ringmesh.config import ExternalStorage
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.backup")
LOCAL_HOSTS = ("", "local", "localhost", "127.0.0.1", "::1")
_BYTES = re.compile(r"Total transferred file size: ([\d,.]+)")


def rsync_command(target: ExternalStorage, source_dir: str, bytes_per_s: int | None) -> list[str]:
    dest = target.path if target.host in LOCAL_HOSTS else f"{target.host}:{target.path}"
    cmd = ["rsync", "-a", "--partial", "--mkpath", "--stats"]
    if bytes_per_s:
        cmd.append(f"--bwlimit={max(1, bytes_per_s // 1024)}")  # rsync counts KiB/s
    return cmd + [source_dir.rstrip("/") + "/", dest]


class Backups:
    def __init__(self, daemon: Daemon, timeout: float = 6 * 3600) -> None:
        self.d = daemon
        self.timeout = timeout

    def run(self, e: RunBackup) -> None:
        self.d.spawn(self._run(e.index, self.d.config.external_storage[e.index], e.term))

    async def _run(self, i: int, target: ExternalStorage, term: int) -> None:
        started = time.time()
        host = self.d.config.hosts.get(self.d.peer.me)
        cmd = rsync_command(target, str(self.d.data_dir / "files"), getattr(host, "egress_bytes_per_s", None))
        ok, moved, detail = False, 0, ""
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            ok = proc.returncode == 0
            m = _BYTES.search(out.decode(errors="replace"))
            moved = int(m[1].replace(",", "").replace(".", "")) if m else 0
            detail = "" if ok else err.decode(errors="replace").strip()[-500:]
        except Exception as e:  # reported as a failed run: the core's schedule goes on
            detail = f"{type(e).__name__}: {e}"
        level = logging.INFO if ok else logging.WARNING
        log.log(
            level,
            "backup %d to %s:%s %s in %.1fs (%d bytes)%s",
            i,
            target.host,
            target.path,
            "done" if ok else "FAILED",
            time.time() - started,
            moved,
            f": {detail}" if detail else "",
        )
        self.d.count("backups_ok" if ok else "backups_failed")
        self.d.submit_nowait(
            BackupFinished(
                index=i,
                term=term,
                ok=ok,
                bytes=moved,
                target=f"{target.host}:{target.path}",
                started_at=started,
                seconds=round(time.time() - started, 3),
                detail=detail,
            )
        )
