"""What `ringmesh demo` draws: one live view on a terminal (redrawn in place), a few plain lines
elsewhere, and the closing summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringmesh.ops.demo import Demo


class Screen:
    """On a terminal: a block of lines redrawn in place, with the story's lines above it.
    Elsewhere: only the story, one plain line per step."""

    def __init__(self, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.enabled, self.tty = enabled, self.stream.isatty()
        self.drawn = 0
        self.story: list[str] = []

    def say(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.story.append(line)
        else:
            print(line, file=self.stream, flush=True)

    def show(self, lines: list[str]) -> None:
        if not (self.enabled and self.tty):
            return
        block = [*self.story[-6:], "", *lines]
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
        self.stream.write("\n".join(block) + "\n")
        self.stream.flush()
        self.drawn = len(block)

    def done(self) -> None:
        self.drawn = 0  # the last view stays on the screen; the summary goes below it


def live_lines(demo: Demo, statuses: dict[str, dict | None]) -> list[str]:
    from ringmesh.ops.demo import ROLES, SPOT, TRAINING

    leader = next((st["leader"] for st in statuses.values() if st and st.get("leader")), None)
    term = next((st["term"] for st in statuses.values() if st and st.get("leader")), None)
    out = [
        f"ringmesh demo  {demo.elapsed():5.1f} s   leader {leader or '(electing)'}"
        + (f" (term {term})" if term else "")
        + f"   {demo.phase}",
        "",
        f"{'HOST':7} {'ROLE':16} {'STATE':9} {'GAMES WRITTEN':>13} {'GAMES IN ITS DB':>15}  MODEL",
    ]
    model = demo.s.get("model")
    for name, role in ROLES.items():
        st = statuses.get(name)
        state = "killed" if st is None else "alive"
        w = demo.writers.get(name)
        written = str(len(w.done)) if w else "-"
        in_db = str(demo.arrivals.rows[name]) if name in TRAINING else "-"
        held = "-"
        if model and st is not None:
            xfer = next((t for t in st.get("transfers", []) if t["digest"] == model["digest"]), None)
            if xfer:
                held = f"pulling {xfer.get('chunks_verified', 0)}/{xfer.get('chunks') or '?'}"
            elif model.get("hosts") and name in model["hosts"]:
                held = "held"
        label = role + (" (spot)" if name == SPOT else "")
        out.append(
            f"{name + (' *' if name == leader else ''):7} {label:16} {state:9} {written:>13} {in_db:>15}  {held}"
        )
    every = sum(1 for g in demo.arrivals.first[TRAINING[0]] if g in demo.arrivals.first[TRAINING[1]])
    out += [
        "",
        f"games on both training hosts: {every}" + (f"   model: {demo.delivery_note}" if demo.delivery_note else ""),
    ]
    return out


def _p(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "-"
    return f"p50 {d['p50']:.2f} s  p99 {d['p99']:.2f} s  ({d['n']} games)"


def summary_lines(s: dict[str, Any], kept: Path | None) -> list[str]:
    out = [""]
    if "error" in s:
        out.append(f"demo FAILED: {s['error']}")
    g = s.get("games")
    if g:
        spot = g["spot_first_life"]
        out += [
            f"games produced {g['produced']}; on every training host {g['on_every_training_host']}; lost {g['lost']}",
            f"  publish -> durable (on a training host: 2 copies)  {_p(g['publish_to_durable_s'])}",
            f"  publish -> every training host                     {_p(g['publish_to_every_training_host_s'])}",
            f"  the spot host, SIGKILLed mid-stream: {spot['written']} games written, {spot['saved']} saved, "
            f"{spot['died_with_the_host']} died with it before they were durable",
            f"    (it had reported {spot['durable_reported']} durable; both training hosts hold "
            f"{min(spot['training_marks'] or [0])} of its stream)",
        ]
    m = s.get("model")
    if m and "delivered_s" in m:
        out.append(
            f"model of {m['size_bytes'] >> 20} MiB promoted (put --broadcast --wait): on all "
            f"{len(m['hosts'])} hosts {m['delivered_s']:.2f} s after put returned"
        )
    f = s.get("failover")
    if f:
        out.append(
            f"leader {f['killed']} SIGKILLed: {f['successor']} led {f['seconds']:.2f} s later; {f['killed']} back"
        )
    checks = s.get("checks", {})
    for what, c in checks.items():
        out.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {what}" + (f": {c['detail']}" if c["detail"] else ""))
    out.append(f"demo {'OK' if s.get('ok') else 'FAILED'} in {s.get('seconds', 0):.0f} s")
    if kept:
        out.append(f"data kept in {kept}")
    return out
