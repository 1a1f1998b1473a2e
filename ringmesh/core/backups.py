"""The schedule of external backups (`allowed_external_storage[].schedule`): which target is due.

Every host keeps the schedule, on the core's time (`now`, seconds since the epoch under the
daemon), so that a host that becomes leader knows the next slot of each target; only the
leader runs a due target (`RunBackup`), and a slot that falls due while a host does not lead,
or while its previous run of that target is still under way, is skipped by it. The result
comes back as `BackupFinished` and is recorded, term-fenced, by the peer (`backup/<index>`).
"""

from __future__ import annotations

from datetime import datetime, timezone

from .cron import Cron, Every, parse_cron
from .messages import RunBackup


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, timezone.utc)


class BackupSchedule:
    def __init__(self, schedules: tuple[str | None, ...]) -> None:
        self.crons: dict[int, Cron | Every] = {i: parse_cron(s) for i, s in enumerate(schedules) if s}
        self.next_run: dict[int, float] = {}  # index -> when its next slot is due
        self.running: set[int] = set()  # indexes whose run (ours) has not reported back

    def start(self, now: float) -> None:
        """The schedule from `now` on."""
        self.next_run = {i: c.next_after(_at(now)).timestamp() for i, c in self.crons.items()}

    def tick(self, now: float, term: int | None) -> tuple[list[RunBackup], float | None]:
        """The runs due at `now` (`term`: the term we lead with a lease, None if we do not
        lead) and when the timer should fire next."""
        runs = []
        for i, due in sorted(self.next_run.items()):
            if now < due:
                continue
            self.next_run[i] = self.crons[i].next_after(_at(now)).timestamp()
            if term is not None and i not in self.running:
                self.running.add(i)
                runs.append(RunBackup(index=i, term=term, due=due))
        return runs, min(self.next_run.values(), default=None)

    def finished(self, index: int) -> None:
        self.running.discard(index)
