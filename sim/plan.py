"""The fault plan: a scenario's faults as an explicit list of timed events, drawn from its rates.

A plan is data: it is printed with a run, written to a file, read back (`--plan FILE`) and
shrunk (`sim/sweep.py` deletes events while the run still fails). Each event is whole — a
crash carries its downtime, a partition its duration — so any subset of a plan is a plan.

Every draw comes from `random.Random(f"{seed}/faults")`, kind by kind in a fixed order, so a
seed gives one plan; the run itself draws nothing from that source.

Kinds and their fields:
    crash       hosts=[h], duration                    the process dies, restarts from its disk
    spot        hosts=[h], notice (s, 0: none), duration  drain for `notice` s (SIGTERM), then the
                                                       host is gone with its disk; a replacement
                                                       with an empty disk starts `duration` s later
    partition   groups=[[..], [..]], duration, one_way, period (flapping: 0 = steady)
    pause       hosts=[h], duration                    SIGSTOP ... SIGCONT
    loss        loss, duration                         every link loses `loss` more
    disk_fill   hosts=[h], percent, duration           the disk fills to `percent`, then is freed
    corrupt     hosts=[h], duration                    its chunks fail verification; it gossips
                                                       undecodable facts
    rot         hosts=[h], count                       `count` stored games of one of its streams
                                                       go bad silently (`sim/rot.py`); its next
                                                       scrub (every `scrub_period` s) finds them
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from .scenario import Range, Scenario, matching

HOUR = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultEvent:
    at: float
    kind: str
    hosts: tuple[str, ...] = ()
    duration: float = 0.0
    notice: float = 0.0
    groups: tuple[tuple[str, ...], ...] = ()
    one_way: bool = False
    period: float = 0.0
    loss: float = 0.0
    percent: float = 0.0
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out: dict[str, Any] = {"at": self.at, "kind": self.kind}
        for k, v in d.items():
            if k not in out and v not in ((), 0.0, False):
                out[k] = [list(g) for g in v] if k == "groups" else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaultEvent:
        kw = dict(d)
        kw["hosts"] = tuple(kw.get("hosts", ()))
        kw["groups"] = tuple(tuple(g) for g in kw.get("groups", ()))
        return cls(**kw)

    def describe(self) -> str:
        who = ",".join(self.hosts)
        if self.kind == "partition":
            sides = " | ".join(f"{len(g)} hosts" for g in self.groups)
            how = "one-way" if self.one_way else "symmetric"
            flap = f", flapping every {self.period:g} s" if self.period else ""
            return f"t={self.at:.3f} partition {how} ({sides}) for {self.duration:g} s{flap}"
        if self.kind == "spot":
            notice = f"with {self.notice:g} s notice" if self.notice else "without notice"
            return f"t={self.at:.3f} spot termination of {who} {notice}; replaced after {self.duration:g} s"
        if self.kind == "loss":
            return f"t={self.at:.3f} extra loss {self.loss:g} for {self.duration:g} s"
        if self.kind == "rot":
            return f"t={self.at:.3f} rot of {self.count} stored game(s) of one stream on {who}"
        if self.kind == "disk_fill":
            return f"t={self.at:.3f} disk of {who} fills to {self.percent:g}% for {self.duration:g} s"
        return f"t={self.at:.3f} {self.kind} {who} for {self.duration:g} s"


Plan = list[FaultEvent]


def generate(sc: Scenario, seed: int) -> Plan:
    """The plan a seed gives for a scenario: Poisson arrivals over the safety phase."""
    rng = random.Random(f"{seed}/faults")
    ids = sc.ids
    persistent_ok = [h.name for h in sc.hosts if not h.voter]  # a voter keeps its disk: never a spot victim
    out: Plan = []
    T = sc.seconds
    for kind in ("crash", "spot", "partition", "pause", "loss", "disk_fill", "corrupt", "rot"):
        spec = sc.faults.get(kind)
        if spec is None:
            continue
        pool = matching(ids, spec.get("hosts"))
        if kind == "spot":
            pool = [h for h in pool if sc.host(h).ephemeral and h in persistent_ok]
        if kind in ("crash", "spot", "pause", "disk_fill", "rot") and not pool:
            continue
        per_host = "per_host_hour" in spec
        rate = _value(spec.get("per_host_hour" if per_host else "per_hour", 0.0), rng) / HOUR
        if per_host:
            rate *= len(pool)
        for at in _arrivals(rng, rate, T):
            out.append(_event(kind, spec, at, pool, ids, sc, rng))
    out.sort(key=lambda e: (e.at, e.kind, e.hosts))
    return out


def _arrivals(rng: random.Random, rate: float, T: float) -> list[float]:
    out: list[float] = []
    t = 0.0
    if rate <= 0:
        return out
    while len(out) < 100_000:
        t += rng.expovariate(rate)
        if t >= T:
            break
        out.append(round(t, 3))
    return out


def _value(v: Any, rng: random.Random, log: bool = False) -> float:
    if isinstance(v, tuple):
        lo, hi = v
        if log and lo > 0:
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return rng.uniform(lo, hi)
    return float(v)


def _event(
    kind: str, spec: Mapping[str, Any], at: float, pool: list[str], ids: list[str], sc: Scenario, rng: random.Random
) -> FaultEvent:
    r = lambda name, default: round(_value(spec.get(name, default), rng), 3)  # noqa: E731
    if kind == "crash":
        return FaultEvent(at=at, kind=kind, hosts=(rng.choice(pool),), duration=r("down", (5.0, 60.0)))
    if kind == "spot":
        host = rng.choice(pool)
        notice = r("notice", 25.0) if rng.random() < _value(spec.get("notice_fraction", 0.5), rng) else 0.0
        return FaultEvent(at=at, kind=kind, hosts=(host,), notice=notice, duration=r("back_after", (10.0, 60.0)))
    if kind == "pause":
        return FaultEvent(at=at, kind=kind, hosts=(rng.choice(pool),), duration=r("duration", (1.0, 20.0)))
    if kind == "disk_fill":
        return FaultEvent(
            at=at,
            kind=kind,
            hosts=(rng.choice(pool),),
            percent=r("percent", (75.0, 98.0)),
            duration=r("duration", (30.0, 120.0)),
        )
    if kind == "corrupt":
        return FaultEvent(at=at, kind=kind, hosts=(rng.choice(pool),), duration=r("duration", (30.0, 120.0)))
    if kind == "loss":
        return FaultEvent(at=at, kind=kind, loss=r("loss", 0.3), duration=r("duration", (5.0, 30.0)))
    if kind == "rot":
        return FaultEvent(at=at, kind=kind, hosts=(rng.choice(pool),), count=max(1, round(r("games", (1.0, 3.0)))))
    # partition
    duration = r("duration", (10.0, 60.0))
    one_way = rng.random() < _value(spec.get("one_way_fraction", 0.0), rng)
    flapping = rng.random() < _value(spec.get("flapping_fraction", 0.0), rng)
    period = r("period", (2.0, 10.0)) if flapping else 0.0
    groups = _sides(spec.get("sides", "random"), ids, sc, rng)
    return FaultEvent(at=at, kind="partition", groups=groups, duration=duration, one_way=one_way, period=period)


def _sides(how: Any, ids: list[str], sc: Scenario, rng: random.Random) -> tuple[tuple[str, ...], ...]:
    """Two sides: `random` (a random minority cut off), `providers` (one provider's hosts against
    the rest), `voters` (the voters split as evenly as possible, the others spread at random)."""
    if how == "providers":
        providers = sorted({sc.host(h).provider for h in ids})
        cut = rng.choice(providers)
        a = [h for h in ids if sc.host(h).provider == cut]
    elif how == "voters":
        voters = sc.voters()
        rng.shuffle(voters)
        k = len(voters) // 2
        others = [h for h in ids if h not in voters]
        a = voters[:k] + [h for h in others if rng.random() < 0.5]
    else:
        k = rng.randint(1, max(1, len(ids) // 2))
        a = rng.sample(ids, k)
    side = sorted(a)
    rest = sorted(set(ids) - set(side))
    return (tuple(side), tuple(rest))


# -- files ----------------------------------------------------------------------------------------


def dumps(plan: Iterable[FaultEvent]) -> str:
    return json.dumps([e.to_dict() for e in plan], indent=1, sort_keys=True)


def loads(text: str) -> Plan:
    data = json.loads(text)
    if isinstance(data, dict):  # a report or a shrink result: its plan
        data = data.get("plan", data.get("shrunk_plan"))
    if not isinstance(data, list):
        raise ValueError("a plan is a JSON list of fault events")
    return [FaultEvent.from_dict(d) for d in data]


def describe(plan: Iterable[FaultEvent]) -> list[str]:
    return [e.describe() for e in plan]


__all__ = ["FaultEvent", "Plan", "Range", "describe", "dumps", "generate", "loads"]
