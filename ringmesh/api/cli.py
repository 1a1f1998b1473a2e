"""`ringmesh` command line: serve, put, ls, status, doctor, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime, timezone

from ringmesh.config import ConfigError, load_config
from ringmesh.core.catalog import FILE_TYPES
from ringmesh.core.errors import RingmeshError

DEFAULT_DATA_DIR = os.environ.get("RINGMESH_DATA_DIR", os.path.expanduser("~/.ringmesh"))


def _serve(args) -> int:
    from ringmesh.node.runtime import serve
    from ringmesh.ops import malloc
    from ringmesh.ops.logs import setup

    config = load_config(args.config)
    setup(args.node, json_lines=args.log_json or config.log_json, verbose=args.verbose)
    malloc.tune()  # before the daemon's threads: RSS that stays flat across model transfers
    asyncio.run(serve(config, args.node, args.data_dir, args.listen, args.metrics_listen))
    return 0


def _put(args) -> int:
    from ringmesh.api.client import LocalClient

    with LocalClient(args.data_dir) as c:
        r = _with_import_progress(
            args,
            lambda: c.put(
                args.file, args.type, args.name or "", dict(args.attr), broadcast=args.broadcast, link=args.link
            ),
        )
    if not args.json or not args.wait:
        if args.json:
            print(json.dumps(r, sort_keys=True))
        else:
            print(
                f"published {r['type']}/{r['name']} {r['digest']} "
                f"({r['size_bytes']} bytes, chunks of {r['chunk_size_bytes']} bytes)"
                + (", broadcast by the leader" if args.broadcast else "")
            )
    if not args.wait:
        return 0
    from ringmesh.ops import delivery
    from ringmesh.ops.progress import Progress

    name = f"{r['type']}/{r['name']}"
    with LocalClient(args.data_dir) as c, Progress(f"delivering {r['name']}", None) as bar:
        out = delivery.wait_delivered(c, name, r["digest"], broadcast=args.broadcast, timeout=args.timeout, bar=bar)
    return _delivered(args, r, out, name)


def _delivered(args, r: dict, out, name: str) -> int:
    from dataclasses import asdict

    from ringmesh.ops import delivery

    if args.json:
        print(json.dumps({**r, "delivery": asdict(out)}, sort_keys=True))
    else:
        print("\n".join(delivery.report(out, name, r["digest"])), file=sys.stdout if out.done else sys.stderr)
    return 0 if out.done else 1


def _get(args) -> int:
    """Have this host hold the newest version of an item (pulled if need be); --wait for it."""
    from ringmesh.api.client import LocalClient
    from ringmesh.ops import delivery
    from ringmesh.ops.progress import Progress

    with LocalClient(args.data_dir) as c:
        r = c.control("get", item=args.item)
        if r["held"] or not args.wait:
            if args.json:
                print(json.dumps(r, sort_keys=True))
            else:
                state = "held here" if r["held"] else "being pulled here"
                print(f"{r['item']} {r['digest'][:12]} ({r['size_bytes']} bytes) {state}: {r['path']}")
            return 0
        with Progress(f"getting {args.item}", r["size_bytes"]) as bar:
            out = delivery.wait_here(c, args.item, r["digest"], timeout=args.timeout, bar=bar)
    if out.done and not args.json:
        print(f"{r['item']} {r['digest'][:12]} ({r['size_bytes']} bytes) held here: {r['path']}")
        return 0
    return _delivered(args, r, out, args.item)


def _with_import_progress(args, put):
    """Run `put()`; on a terminal, show on stderr how far the daemon has copied and hashed the file."""
    import concurrent.futures
    from pathlib import Path

    from ringmesh.core.messages import ItemKey
    from ringmesh.node.files.store import import_progress
    from ringmesh.ops.progress import Progress

    bar = Progress(f"importing {args.name or Path(args.file).name}", None)
    if not bar.enabled:
        return put()
    try:
        bar.total = os.path.getsize(args.file)
    except OSError:
        return put()  # the daemon says why
    item = ItemKey(args.type, args.name or Path(args.file).name)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(put)
        while True:
            try:
                r = fut.result(timeout=0.1)
                break
            except concurrent.futures.TimeoutError:
                done = import_progress(args.data_dir, item)
                if done is not None:
                    bar.update(done, "copied and hashed" if done >= bar.total else "")
            except BaseException:
                bar.close()
                raise
    bar.update(bar.total, "published")
    bar.close()
    return r


def _ls(args) -> int:
    from ringmesh.api.client import LocalClient

    with LocalClient(args.data_dir) as c:
        doc = c.ls()
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{'item':40} {'size (bytes)':>14} {'digest':14} {'origin':16} holders")
    for it in doc["items"]:
        print(
            f"{it['type'] + '/' + it['name']:40} {it['size_bytes']:>14} {it['digest'][:12]:14} {it['origin']:16} "
            f"{', '.join(it['holders'])}"
        )
    return 0


def _status(args) -> int:
    from ringmesh.api.client import LocalClient
    from ringmesh.ops.statusview import render

    with LocalClient(args.data_dir) as c:
        doc = c.status()
        cluster = None if args.json else c.get("cluster")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    color = {"auto": sys.stdout.isatty() and not os.environ.get("NO_COLOR"), "always": True, "never": False}[args.color]
    sys.stdout.write(render(doc, cluster, color=color))
    return 0


def _sync(args) -> int:
    from ringmesh.api.client import LocalClient

    with LocalClient(args.data_dir) as c:
        if args.config_key:
            doc = c.control("priority", config_key=args.config_key, priority=args.priority)
        else:
            doc = c.control("sync")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    recs = doc["recommendations"]
    print(
        f"{len(recs)} transfer(s) to make"
        + (f"; {args.config_key} at {args.priority} priority" if args.config_key else "")
    )
    for r in recs:
        eta = (
            "no source yet"
            if r["estimated_seconds"] is None
            else f"~{r['estimated_seconds']} s at {r['rate_bytes_per_s'] / 1e6:.0f} MB/s"
        )
        print(
            f"  {r['priority']:10} {r['host']:16} <- {','.join(r['sources']) or '-':16} {r['item']:40} "
            f"{r['bytes']} bytes, {eta}"
        )
    for b in doc["blocked_items"]:
        print(f"  BLOCKED {b['item']}: " + "; ".join(f"{h}: {why}" for h, why in sorted(b["left_out"].items())))
    return 0


def _games_ingest(args) -> int:
    """Take the completed games of self-play databases into this host's streams, once each
    (the cursors live in the data dir; see `ringmesh.node.games.games.ingest`)."""
    from ringmesh.api.client import LocalClient
    from ringmesh.node.games.games import ingest

    min_moves = int(args.min_moves) if args.min_moves and args.min_moves.isdigit() else args.min_moves
    if min_moves not in (None, "cluster") and not isinstance(min_moves, int):
        print(f"ringmesh games ingest: --min-moves takes 'cluster' or a number, not {min_moves!r}", file=sys.stderr)
        return 2
    from ringmesh.ops.progress import Progress

    bar = Progress("ingesting", None, unit="rows")
    with LocalClient(args.data_dir) as c, bar:

        def progress(rows: int, todo: int, games: int) -> None:
            bar.total = todo
            bar.update(rows, f"{games:,} game(s) taken")

        total = ingest(
            args.paths,
            os.path.join(args.data_dir, "ingest-cursors.json"),
            c.publish_games,
            min_moves=min_moves,
            progress=progress if bar.enabled else None,
        )
    print(json.dumps({"games": total}) if args.json else f"{total} game(s) taken in")
    return 0


def _games_refused(args) -> int:
    from ringmesh.api.client import LocalClient

    with LocalClient(args.data_dir) as c:
        doc = c.get("games_held", **({"config_key": args.config_key} if args.config_key else {}))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if not doc["consumer"]:
        print(f"{doc['node']} keeps no game databases (not a training or backup host)")
        return 0
    games = doc["games"]
    print(f"{doc['node']}: {len(games)} game(s) held back" + (":" if games else ""))
    for g in games:
        seen = datetime.fromtimestamp(g["first_seen"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"  {g['kind']:8} {g['config_key']:12} {g['game_id'] or '?':38} {g['origin']} #{g['seq']}  "
            f"since {seen}Z  {g['reason']}"
        )
    return 0


def _games_retry(args) -> int:
    from ringmesh.api.client import LocalClient

    with LocalClient(args.data_dir) as c:
        got = c.control("games_retry", **({"config_key": args.config_key} if args.config_key else {}))
    print(f"{got['landed']} game(s) landed; {got['held']} still held")
    return 0 if got["held"] == 0 else 1


def _games_add(args) -> int:
    """One game record (msgpack or JSON on stdin) into this host's stream of --config-key."""
    from ringmesh.api.client import LocalClient
    from ringmesh.node.games.games import unpack_record

    raw = sys.stdin.buffer.read()
    record = unpack_record(raw)
    if record is None:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
    if not isinstance(record, dict) or not isinstance(record.get("game_id"), str):
        print(
            "ringmesh games add: stdin is not a game record (msgpack or JSON with game_id and tables)", file=sys.stderr
        )
        return 2
    with LocalClient(args.data_dir) as c:
        (seq,) = c.publish_games(args.config_key, [record])
        durable = c.wait_durable(args.config_key, seq, args.wait) if args.wait else False
    print(json.dumps({"seq": seq, "durable": durable}))
    return 0


def _rehearse(args) -> int:
    from ringmesh.ops.rehearse import run_rehearse

    return run_rehearse(args.file, None if args.all else args.hosts, args.minutes, args.json, args.keep)


def _demo(args) -> int:
    from ringmesh.ops.demo import run_demo

    return run_demo(file_size=args.file_size, as_json=args.json, keep=args.keep)


def _scrub(args) -> int:
    """Show the scrub; with --now, have it verify everything (or --item ...) now and follow it."""
    from ringmesh.api.client import LocalClient
    from ringmesh.ops.progress import Progress
    from ringmesh.ops.statusview import scrub_lines

    with LocalClient(args.data_dir) as c:
        doc = c.control("scrub", items="\n".join(args.item)) if args.now else c.get("scrub")
        if args.now:
            deadline = time.monotonic() + args.timeout if args.timeout else None
            with Progress("scrubbing", total=doc["requested"]["bytes"]) as bar:
                while doc["requested"]["left"]:
                    if deadline is not None and time.monotonic() > deadline:
                        print(f"ringmesh: scrub not finished after {args.timeout:g} s; it goes on", file=sys.stderr)
                        return 1
                    time.sleep(0.2)  # polling a report on a human's terminal, not synchronisation
                    doc = c.get("scrub")
                    cur = doc["current"]
                    bar.update(doc["requested"]["done_bytes"] + (cur["done"] if cur else 0))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print("\n".join(scrub_lines(doc)))
    return 1 if doc["unrepaired"] else 0


def _config_check(args) -> int:
    from ringmesh.ops.configcheck import run_check

    return run_check(args.file, node=args.node, as_json=args.json)


def _certs_init(args) -> int:
    from ringmesh.node.wire.tls import init_ca

    key, cert = init_ca(args.dir, days=args.days)
    print(
        f"cluster CA made: {cert} (certificate, give it to every host) and {key} (private key, mode 0600: "
        f"keep it off the hosts, it makes certificates)"
    )
    return 0


def _certs_issue(args) -> int:
    from ringmesh.node.wire.tls import issue

    key, cert = issue(args.dir, args.node, args.out, days=args.days)
    print(
        f"certificate for {args.node}: {cert} and its key {key} (mode 0600); copy both, with the CA's ca.crt, "
        f"to {args.node} where ringmesh.tls points"
    )
    return 0


def _doctor(args) -> int:
    from ringmesh.ops.doctor import run_doctor

    return run_doctor(
        args.config, args.node, args.data_dir, as_json=args.json, deadline=args.deadline, max_skew=args.max_skew
    )


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
    s.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: ringmesh.metrics_listen; off)",
    )
    s.add_argument("--log-json", action="store_true", help="one JSON object per log line (also: ringmesh.log_json)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=_serve)

    s = sub.add_parser("put", help="publish a file version through the local peer")
    s.add_argument("file")
    s.add_argument("--type", required=True, choices=FILE_TYPES)
    s.add_argument("--name", help="item name (default: the file's base name)")
    s.add_argument("--attr", action="append", default=[], type=_attr, metavar="KEY=VALUE")
    s.add_argument(
        "--broadcast",
        action="store_true",
        help="promote it: the leader has every eligible host pull it now, at critical priority",
    )
    s.add_argument("--wait", action="store_true", help="wait until every host it is placed on holds it")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    s.add_argument(
        "--link",
        action="store_true",
        help="hard-link the file into the store instead of copying it (same file system; one read); "
        "do not write the file in place until the store's own copy is made (seconds)",
    )
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_put)

    for name, fn, hlp in (("ls", _ls, "list items and their holders"), ("status", _status, "show the local peer")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
        s.add_argument("--json", action="store_true")
        if name == "status":
            s.add_argument(
                "--color",
                choices=["auto", "always", "never"],
                default="auto",
                help="colour the states (auto: on a terminal, unless NO_COLOR is set)",
            )
        s.set_defaults(fn=fn)

    s = sub.add_parser("doctor", help="check this host: config, certificates, daemon, disk, peers, clock skew")
    s.add_argument("--config", required=True, help="distributed_hosts.yaml")
    s.add_argument("--node", required=True, help="this host's name in the config")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--deadline", type=float, default=3.0, help="seconds each peer has to answer (default 3)")
    s.add_argument("--max-skew", type=float, default=1.0, help="clock skew that fails the check, s (default 1)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_doctor)

    s = sub.add_parser("get", help="have this host hold the newest version of an item (pulled now if need be)")
    s.add_argument("item", help="TYPE/NAME, as `ringmesh ls` shows it")
    s.add_argument("--wait", action="store_true", help="wait until it is held here, with a progress bar")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_get)

    s = sub.add_parser("scrub", help="verify what this host keeps at rest; --now: everything (or --item) now")
    s.add_argument("--now", action="store_true", help="verify now, with a progress bar, and print what it found")
    s.add_argument("--item", action="append", default=[], help="TYPE/NAME, 'games' or 'manifest' (repeatable)")
    s.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_scrub)

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
    s = g.add_parser(
        "refused", help="games this host holds back from its databases (refused, or waiting for their schema)"
    )
    s.add_argument("--config-key", help="e.g. hex8_2p")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_games_refused)
    s = g.add_parser("retry", help="put the held games into their databases again (after the cause is fixed)")
    s.add_argument("--config-key", help="e.g. hex8_2p")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.set_defaults(fn=_games_retry)
    s = g.add_parser("add", help="one game record on stdin")
    s.add_argument("--config-key", required=True)
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait until it is durable")
    s.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    s.set_defaults(fn=_games_add)

    s = sub.add_parser(
        "demo", help="the whole job on 6 real peers (loopback): games, a spot kill, a promotion, a failover"
    )
    s.add_argument("--file-size", type=_size, default=_size("16M"), help="size of the promoted model (e.g. 16M, 1G)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--keep", action="store_true", help="keep the demo's data dirs")
    s.set_defaults(fn=_demo)

    s = sub.add_parser("rehearse", help="run the members of a distributed_hosts.yaml as real peers on loopback")
    s.add_argument("file", help="distributed_hosts.yaml")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--hosts", type=int, default=8, help="how many members (chosen to keep every role; default 8)")
    how.add_argument("--all", action="store_true", help="every member of the file")
    s.add_argument("--minutes", type=float, default=3.0, help="the rehearsal's time bound (default 3)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--keep", action="store_true", help="keep the rehearsal's folder (config, data dirs, logs)")
    s.set_defaults(fn=_rehearse)

    s = sub.add_parser("config", help="inspect a distributed_hosts.yaml")
    csub = s.add_subparsers(dest="config_command", required=True)
    s = csub.add_parser("check", help="validate a config; print each host's effective settings and their sources")
    s.add_argument("file", help="distributed_hosts.yaml")
    s.add_argument("--node", help="show only this host")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_config_check)

    s = sub.add_parser("certs", help="the cluster CA and host certificates for mutual TLS between peers")
    csub = s.add_subparsers(dest="certs_command", required=True)
    s = csub.add_parser("init", help="make the cluster CA (ca.key, ca.crt) in --dir; never overwrites")
    s.add_argument("--dir", required=True, help="folder for the CA's files")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    s.set_defaults(fn=_certs_init)
    s = csub.add_parser("issue", help="make NODE.key and NODE.crt, signed by the CA in --dir")
    s.add_argument("node", metavar="NODE", help="the host's name in the config")
    s.add_argument("--dir", required=True, help="the CA's folder (from certs init)")
    s.add_argument("--out", help="folder for the host's files (default: --dir)")
    s.add_argument("--days", type=int, default=825, help="validity in days (default 825; never past the CA's)")
    s.set_defaults(fn=_certs_issue)
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
