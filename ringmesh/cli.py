"""`ringmesh` command line: serve, put, ls, status, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from .config import ConfigError, load_config
from .core.catalog import FILE_TYPES
from .core.errors import RingmeshError

DEFAULT_DATA_DIR = os.environ.get("RINGMESH_DATA_DIR", os.path.expanduser("~/.ringmesh"))


def _serve(args) -> int:
    from .daemon import serve

    config = load_config(args.config)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s {args.node} %(name)s: %(message)s",
    )
    asyncio.run(serve(config, args.node, args.data_dir, args.listen))
    return 0


def _put(args) -> int:
    from .client import LocalClient

    with LocalClient(args.data_dir) as c:
        r = c.put(args.file, args.type, args.name or "", dict(args.attr), broadcast=args.broadcast)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(f"published {r['type']}/{r['name']} {r['digest']} ({r['size_bytes']} bytes, chunks of {r['chunk_size_bytes']} bytes)"
              + (", broadcast by the leader" if args.broadcast else ""))
    return 0


def _ls(args) -> int:
    from .client import LocalClient

    with LocalClient(args.data_dir) as c:
        doc = c.ls()
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{'item':40} {'size (bytes)':>14} {'digest':14} {'origin':16} holders")
    for it in doc["items"]:
        print(f"{it['type'] + '/' + it['name']:40} {it['size_bytes']:>14} {it['digest'][:12]:14} {it['origin']:16} {', '.join(it['holders'])}")
    return 0


def _status(args) -> int:
    from .client import LocalClient

    with LocalClient(args.data_dir) as c:
        doc = c.status()
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    e = doc["election"]
    print(f"node {doc['node']} at {doc['address']}  incarnation {doc['incarnation']}  "
          f"manifest {doc['fingerprint']}  gossip rounds {doc['gossip_rounds']}  items {doc['items']}")
    print(f"leader {doc['leader'] or '(none known)'}  term {doc['term']}  this host: {e['role']}"
          f"{' with lease ' + str(e['lease_left_s']) + ' s' if e['is_leader'] else ''}  local health {doc['local_health']}")
    print(f"{'member':20} {'state':8} {'address':22} {'role':12} {'voter':5} {'heartbeat':>9} {'breaker':9}")
    for m in doc["members"]:
        hb = "-" if m["heartbeat"] is None else m["heartbeat"]
        print(f"{m['name']:20} {m['state']:8} {m['address'] or '-':22} {m['role'] or '-':12} {'yes' if m['voter'] else 'no':5} "
              f"{hb:>9} {m['breaker']['state']:9}")
    for key, f in sorted(doc.get("freshness", {}).items()):
        age = "-" if f["newest_age_s"] is None else f"{f['newest_age_s']:.1f} s"
        print(f"games {key:12} {f['games']:>8} in {f['streams']} stream(s), newest {age} ago, "
              f"hosts behind: {', '.join(f['hosts_behind']) or 'none'}")
    for ev in doc.get("events", [])[-5:]:
        print(f"event {time.strftime('%H:%M:%S', time.localtime(ev['at']))} {ev['kind']} {ev['subject']} {ev['detail']}")
    for b in doc.get("blocked_items", []):
        print(f"BLOCKED {b['item']}: " + "; ".join(f"{h}: {why}" for h, why in sorted(b["left_out"].items())))
    for b in doc.get("broadcasts", []):
        by = f"term {b['term']} by {b['leader']}" if b["leader"] else "no directive"
        print(f"broadcast {b['item']} {b['digest'][:12]} ({by}): {b['delivered']}/{b['eligible']} delivered, {b['state']}")
        for h, state in b["hosts"].items():
            print(f"  {h:20} {state}")
        for h, why in b["ineligible"].items():
            print(f"  {h:20} not eligible: {why}")
    for t in doc["transfers"]:
        print(f"transfer {t['item']} {t['digest'][:12]} {t['size_bytes']} bytes, running {t['running_s']} s")
    return 0


def _sync(args) -> int:
    from .client import LocalClient

    with LocalClient(args.data_dir) as c:
        if args.config_key:
            doc = c.control("priority", config_key=args.config_key, priority=args.priority)
        else:
            doc = c.control("sync")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    recs = doc["recommendations"]
    print(f"{len(recs)} transfer(s) to make" + (f"; {args.config_key} at {args.priority} priority" if args.config_key else ""))
    for r in recs:
        eta = "no source yet" if r["estimated_seconds"] is None else f"~{r['estimated_seconds']} s at {r['rate_bytes_per_s'] / 1e6:.0f} MB/s"
        print(f"  {r['priority']:10} {r['host']:16} <- {','.join(r['sources']) or '-':16} {r['item']:40} {r['bytes']} bytes, {eta}")
    for b in doc["blocked_items"]:
        print(f"  BLOCKED {b['item']}: " + "; ".join(f"{h}: {why}" for h, why in sorted(b["left_out"].items())))
    return 0


def _games_ingest(args) -> int:
    """Take the completed games of self-play databases into this host's streams, once each
    (the cursors live in the data dir; see `ringmesh.games.ingest`)."""
    from .client import LocalClient
    from .games import ingest

    min_moves = int(args.min_moves) if args.min_moves and args.min_moves.isdigit() else args.min_moves
    if min_moves not in (None, "cluster") and not isinstance(min_moves, int):
        print(f"ringmesh games ingest: --min-moves takes 'cluster' or a number, not {min_moves!r}", file=sys.stderr)
        return 2
    with LocalClient(args.data_dir) as c:
        total = ingest(args.paths, os.path.join(args.data_dir, "ingest-cursors.json"), c.publish_games,
                       min_moves=min_moves)
    print(json.dumps({"games": total}) if args.json else f"{total} game(s) taken in")
    return 0


def _games_add(args) -> int:
    """One game record (msgpack or JSON on stdin) into this host's stream of --config-key."""
    from .client import LocalClient
    from .games import unpack_record

    raw = sys.stdin.buffer.read()
    record = unpack_record(raw)
    if record is None:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
    if not isinstance(record, dict) or not isinstance(record.get("game_id"), str):
        print("ringmesh games add: stdin is not a game record (msgpack or JSON with game_id and tables)", file=sys.stderr)
        return 2
    with LocalClient(args.data_dir) as c:
        (seq,) = c.publish_games(args.config_key, [record])
        durable = c.wait_durable(args.config_key, seq, args.wait) if args.wait else False
    print(json.dumps({"seq": seq, "durable": durable}))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(nodes=args.nodes, file_size=args.file_size, as_json=args.json, keep=args.keep)


def _config_check(args) -> int:
    from .configcheck import run_check

    return run_check(args.file, node=args.node, as_json=args.json)


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        n = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M, 1G)") from None
    if n < 0:
        raise argparse.ArgumentTypeError("size must not be negative")
    return int(n)


def _attr(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ringmesh", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run this host's peer in the foreground")
    s.add_argument("--config", required=True, help="distributed_hosts.yaml")
    s.add_argument("--node", required=True, help="this host's name in the config")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--listen", help="HOST:PORT to listen on (default: the host's address)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=_serve)

    s = sub.add_parser("put", help="publish a file version through the local peer")
    s.add_argument("file")
    s.add_argument("--type", required=True, choices=FILE_TYPES)
    s.add_argument("--name", help="item name (default: the file's base name)")
    s.add_argument("--attr", action="append", default=[], type=_attr, metavar="KEY=VALUE")
    s.add_argument("--broadcast", action="store_true",
                   help="promote it: the leader has every eligible host pull it now, at critical priority")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_put)

    for name, fn, hlp in (("ls", _ls, "list items and their holders"), ("status", _status, "show the local peer")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
        s.add_argument("--json", action="store_true")
        s.set_defaults(fn=fn)

    s = sub.add_parser("sync", help="plan transfers now; with --config-key, move that config's data to the front")
    s.add_argument("--config-key", help="e.g. hex8_2p")
    s.add_argument("--priority", default="high", choices=["critical", "high", "normal", "low", "background"])
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_sync)

    g = sub.add_parser("games", help="game streams").add_subparsers(dest="games_command", required=True)
    s = g.add_parser("ingest", help="take completed games out of self-play databases (each once)")
    s.add_argument("paths", nargs="+", metavar="DB")
    s.add_argument("--min-moves", default=None, help="'cluster' for the cluster's filters, or a number")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_games_ingest)
    s = g.add_parser("add", help="one game record on stdin")
    s.add_argument("--config-key", required=True)
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait until it is durable")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.set_defaults(fn=_games_add)

    s = sub.add_parser("demo", help="a local cluster of real peers on loopback")
    s.add_argument("--nodes", type=int, default=5)
    s.add_argument("--file-size", type=_size, default=_size("64M"), help="size of the published model (e.g. 64M, 1G)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--keep", action="store_true", help="keep the demo's data dirs")
    s.set_defaults(fn=_demo)

    s = sub.add_parser("config", help="inspect a distributed_hosts.yaml")
    csub = s.add_subparsers(dest="config_command", required=True)
    s = csub.add_parser("check", help="validate a config; print each host's effective settings and their sources")
    s.add_argument("file", help="distributed_hosts.yaml")
    s.add_argument("--node", help="show only this host")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, RingmeshError) as e:
        print(f"ringmesh: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
