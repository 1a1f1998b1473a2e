"""`ringmesh status` for a person: the local peer's status document as aligned tables.

    render(status, cluster=None, color=False) -> str

`status` is the `status` query's document (`ringmesh status --json`), `cluster` the
`cluster` query's (items, holders, targets), from which the under-replicated items come.
Plain text; with `color`, ANSI colours mark states (the caller decides: a terminal, or the
PNG of docs/render_status.py). Every figure carries its unit.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable, Sequence

_STYLES = {"ok": "32", "warn": "33", "bad": "31", "dim": "2", "bold": "1", "head": "1;36"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
STATE_STYLE = {
    "alive": "ok",
    "suspect": "warn",
    "dead": "bad",
    "left": "dim",
    "closed": "ok",
    "half-open": "warn",
    "open": "bad",
    "delivered": "ok",
    "pulling": "warn",
    "waiting": "dim",
}
BAR = 20  # characters of a progress bar


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str | None) -> str:
        if not self.color or not style or not text:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def visible_len(s: str) -> int:
    return len(_ANSI.sub("", s))


def size(n: int | float | None) -> str:
    """Bytes with a binary unit: 512 B, 3.0 KiB, 64.0 MiB, 1.50 GiB."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else (f"{n:.2f} {unit}" if n < 10 else f"{n:.1f} {unit}")
        n /= 1024
    return f"{n} B"  # pragma: no cover


def duration(s: float | None) -> str:
    """Seconds for a person: 0.4 s, 12.3 s, 4m05s, 2h03m, 3d04h."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    s = int(s)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(done: int, total: int, width: int = BAR) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    full = int(frac * width)
    return "[" + "#" * full + "." * (width - full) + f"] {int(frac * 100):3d} %"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    paint: _Painter,
    indent: str = "  ",
    right: Iterable[int] = (),
) -> list[str]:
    """Aligned columns (cells may carry colour codes); `right`: columns aligned right (numbers)."""
    rows = [list(r) for r in rows]
    right = set(right)
    widths = [max([len(h)] + [visible_len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str], head: bool = False) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            pad = " " * (w - visible_len(c))
            cell = pad + c if i in right else (c + pad if i < len(widths) - 1 else c)
            out.append(paint(cell, "dim") if head else cell)
        return (indent + "  ".join(out)).rstrip()

    return [line(headers, head=True)] + [line(r) for r in rows]


def render(
    status: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    *,
    color: bool = False,
    now: float | None = None,
    events: int = 5,
) -> str:
    now = time.time() if now is None else now
    paint = _Painter(color)
    st = status
    out: list[str] = []

    def section(title: str, note: str = "") -> None:
        out.append("")
        out.append(paint(title, "head") + (f"  {paint(note, 'dim')}" if note else ""))

    # -- header ------------------------------------------------------------------------------
    disk = st.get("disk") or {}
    me: dict[str, Any] = next((m for m in st["members"] if m["name"] == st["node"]), {})
    out.append(
        paint(f"ringmesh {st['node']}", "bold") + f"  {st['address']}  role {me.get('role') or '-'}  "
        f"incarnation {st['incarnation']}  up {duration(st.get('uptime_s'))}"
    )
    disk_txt = (
        f"disk {disk['used_percent']:.1f} % used, {size(disk.get('free_bytes'))} free"
        if disk
        else "disk not measured yet"
    )
    out.append(
        f"manifest {st['fingerprint']}  gossip rounds {st['gossip_rounds']}  items {st['items']}  {disk_txt}"
        + (f"  metrics http://{st['metrics']['listen']}/metrics" if st.get("metrics") else "")
    )
    e = st["election"]
    leader = paint(st["leader"], "ok") if st["leader"] else paint("(none known)", "warn")
    lease = f", lease {e['lease_left_s']:.2f} s left" if e["is_leader"] else ""
    out.append(
        f"leader {leader}  term {st['term']}  this host: {e['role']}{lease}  "
        f"elections started here {e['elections_started']}  local health {st['local_health']}"
    )
    if st.get("paused"):
        out.append(paint(f"PAUSED: {st['paused']} (no event is handled until the write succeeds)", "bad"))
    errors = st.get("core_errors") or {}
    if errors.get("total"):
        last = errors["recent"][-1]["what"] if errors.get("recent") else "?"
        out.append(
            paint(
                f"CORE ERRORS: {errors['total']} step(s) raised, {errors['last_10_min']} in the last 10 min "
                f"(timers re-armed; a bug: see the log). Last: {last}",
                "bad",
            )
        )

    # -- members -----------------------------------------------------------------------------
    members = st["members"]
    counts: dict[str, int] = {}
    for m in members:
        counts[m["state"]] = counts.get(m["state"], 0) + 1
    section("MEMBERS", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    rows = []
    for m in members:
        b = m.get("breaker") or {"state": "closed"}
        breaker = "-" if m["name"] == st["node"] else paint(b["state"], STATE_STYLE.get(b["state"]))
        if b.get("consecutive_failures"):
            breaker += f" ({b['consecutive_failures']} failed)"
        if m["name"] == st["node"]:
            behind = "-"
        elif m.get("lag_changes"):
            behind = paint(f"{m['lag_changes']} change(s), {duration(m['lag_s'])}", "warn")
        else:
            behind = "up to date"
        rows.append(
            [
                m["name"]
                + (" *" if m["name"] == st["node"] else "")
                + (" (leader)" if m["name"] == st["leader"] else ""),
                paint(m["state"], STATE_STYLE.get(m["state"])),
                m.get("role") or "-",
                "yes" if m.get("voter") else "no",
                "yes" if m.get("ephemeral") else "no",
                str(m["incarnation"]) if m["incarnation"] is not None else "-",
                "-" if m.get("last_heard_s") is None else duration(m["last_heard_s"]),
                behind,
                breaker,
                (f"NAT'd, via {', '.join(m['relays']) or 'no relay yet'}" if m.get("nat_blocked") else None)
                or m.get("address")
                or "-",
            ]
        )
    out += table(
        ["MEMBER", "STATE", "ROLE", "VOTER", "SPOT", "INCARNATION", "LAST HEARD", "BEHIND", "BREAKER", "ADDRESS"],
        rows,
        paint,
        right={5, 6},
    )

    links = st.get("links") or {}
    if links.get("nat_blocked"):
        up = links.get("up") or []
        style = "bad" if not up else "warn" if len(up) < links.get("wanted", 3) else None
        text = f"{len(up)} of {links.get('wanted', 3)} up: {', '.join(up) or 'none (nothing reaches this host)'}"
        section("LINKS", "nobody can dial this host (nat_blocked): everything for it comes over these")
        out.append("  " + paint(text, style))
    elif links.get("relaying_for"):
        section("LINKS", f"relaying for {', '.join(links['relaying_for'])} (hosts nobody can dial)")

    # -- games per config --------------------------------------------------------------------
    fresh = st.get("freshness") or {}
    games = st.get("games") or {}
    held: dict[str, int] = {}
    for stream, hw in (games.get("streams") or {}).items():
        key = stream.rpartition("/")[2]
        held[key] = held.get(key, 0) + hw
    durable = games.get("durable_through") or {}
    landed = games.get("materialised_through") or {}
    held_back = games.get("held") or {}
    section("GAMES PER CONFIG", "cluster-wide, from every stream's high-water marks")
    if fresh:
        rows = []
        for key, f in sorted(fresh.items()):
            behind = f["hosts_behind"]
            rows.append(
                [
                    key,
                    str(f["games"]),
                    str(f["streams"]),
                    duration(f["newest_age_s"]) + " ago" if f["newest_age_s"] is not None else "-",
                    str(held.get(key, 0)),
                    str(durable.get(key, "-")),
                    str(landed.get(key, "-")),
                    paint(", ".join(f"{n} {kind}" for kind, n in sorted(held_back[key].items())), "bad")
                    if held_back.get(key)
                    else "-",
                    paint(", ".join(behind), "warn") if behind else paint("none", "ok"),
                ]
            )
        out += table(
            [
                "CONFIG",
                "GAMES",
                "STREAMS",
                "NEWEST GAME",
                "IN LOG HERE",
                "DURABLE (OURS)",
                "IN EVERY DB (OURS)",
                "HELD BACK HERE",
                "HOSTS BEHIND",
            ],
            rows,
            paint,
            right={1, 2, 3, 4, 5, 6},
        )
    else:
        out.append("  no game streams yet")

    # -- items under-replicated --------------------------------------------------------------
    if cluster is not None:
        items = cluster.get("items", [])
        under = [it for it in items if it["hosts_behind"] or it["copies"] < it["wanted_copies"]]
        section("ITEMS UNDER-REPLICATED", f"{len(under)} of {len(items)} item(s)")
        if under:
            rows = [
                [
                    it["item"],
                    it["digest"][:12],
                    size(it["size_bytes"]),
                    f"{it['copies']}/{max(it['wanted_copies'], len(it['targets']))}",
                    paint(", ".join(it["hosts_behind"]) or "-", "warn"),
                    paint("BLOCKED", "bad") if it["blocked"] else "",
                ]
                for it in under
            ]
            out += table(["ITEM", "DIGEST", "SIZE", "COPIES", "HOSTS BEHIND", ""], rows, paint, right={2, 3})
        else:
            out.append("  " + paint("every item is where the router wants it", "ok"))
    for b in st.get("blocked_items", []):
        out.append(
            "  "
            + paint(f"BLOCKED {b['item']}: ", "bad")
            + "; ".join(f"{h}: {why}" for h, why in sorted(b["left_out"].items()))
        )

    # -- data at rest ------------------------------------------------------------------------
    sc = st.get("scrub")
    if sc:
        section("AT REST", "scrub and serve-time checks")
        out += ["  " + line for line in scrub_lines(sc, paint, now)]

    # -- transfers ---------------------------------------------------------------------------
    transfers = st.get("transfers") or []
    section("TRANSFERS", f"{len(transfers)} pull(s) under way here")
    if transfers:
        rows = []
        for t in transfers:
            n, done = t.get("chunks"), t.get("chunks_verified")
            prog = f"{bar(done, n)}  {done}/{n} chunks" if n else "[ fetching the recipe ]"
            rows.append(
                [
                    t["item"],
                    t["digest"][:12],
                    t.get("priority", "-"),
                    size(t["size_bytes"]),
                    prog,
                    duration(t["running_s"]),
                ]
            )
        out += table(["ITEM", "DIGEST", "CLASS", "SIZE", "PROGRESS", "RUNNING"], rows, paint, right={3, 5})

    # -- broadcasts --------------------------------------------------------------------------
    bcs = st.get("broadcasts") or []
    if bcs:
        section("BROADCASTS", "promoted versions; delivery per eligible host")
        for b in bcs:
            by = f"term {b['term']} by {b['leader']}" if b["leader"] else "no directive"
            state = paint(b["state"], "ok" if b["state"] == "delivered" else "warn")
            origin = paint(f"{size(b['size_bytes'])} from {b['publisher']}", "dim")
            out.append(
                f"  broadcast {b['item']} {b['digest'][:12]} ({by}): {b['delivered']}/{b['eligible']} delivered, "
                f"{state}  {origin}"
            )
            hw = max([len(h) for h in [*b["hosts"], *b["ineligible"]]] or [0])
            cells = [f"{h:{hw}} {paint(s, STATE_STYLE.get(s))}" for h, s in b["hosts"].items()]
            cw = max([visible_len(c) for c in cells] or [0])
            cells = [c + " " * (cw - visible_len(c)) for c in cells]
            for i in range(0, len(cells), 4):
                out.append(("    " + "   ".join(cells[i : i + 4])).rstrip())
            for h, why in b["ineligible"].items():
                out.append(f"    {h:{hw}} {paint('not eligible: ' + why, 'dim')}")

    # -- events ------------------------------------------------------------------------------
    evs = (st.get("events") or [])[-events:]
    if evs:
        section("RECENT EVENTS")
        out += table(
            ["TIME", "EVENT", "SUBJECT", "DETAIL"],
            [
                [
                    time.strftime("%H:%M:%S", time.localtime(ev["at"])),
                    paint(ev["kind"], "bad" if ev["kind"] == "declared-dead" else None),
                    ev["subject"] or "-",
                    ev["detail"],
                ]
                for ev in evs
            ],
            paint,
        )
    return "\n".join(out) + "\n"


def scrub_lines(
    sc: dict[str, Any], paint: Callable[[str, str | None], str] | None = None, now: float | None = None
) -> list[str]:
    """The scrub's report (`ringmesh scrub`, the status's AT REST section)."""
    paint = paint or (lambda text, style: text)
    now = time.time() if now is None else now
    last = sc.get("last_full_scrub")
    verified = sc["bytes_verified"]
    out = [
        f"last full scrub {duration(now - last) + ' ago' if last else 'not finished yet'}, every "
        f"{duration(sc['interval_seconds'])} at {size(sc['rate_bytes_per_s'])}/s; verified "
        + ", ".join(f"{size(verified[w])} of {w}" for w in ("files", "games", "manifest"))
    ]
    if sc.get("full_pass_s") and sc["full_pass_s"] > sc["interval_seconds"]:
        out.append(
            paint(
                f"a full pass takes {duration(sc['full_pass_s'])} at this rate, more than the interval: "
                "raise ringmesh.scrub_rate to keep the schedule",
                "warn",
            )
        )
    cur = sc.get("current")
    if cur:
        out.append(f"now verifying {cur['name']}  {bar(cur['done'], cur['size'] or 1)}")
    found, repaired = sc["found"], sc["repaired"]
    out.append(
        "damage found/repaired: " + ", ".join(f"{w} {found[w]}/{repaired[w]}" for w in ("files", "games", "manifest"))
    )
    for d in sc["unrepaired"]:
        out.append(paint(f"DAMAGED {d['what']} {d['name']} {d['digest'][:12]}: {d['kind']}, {d['detail']}", "bad"))
    if sc.get("below_min_copies"):
        out.append(paint("fewer good copies than min_copies: " + ", ".join(sc["below_min_copies"]), "bad"))
    return out
