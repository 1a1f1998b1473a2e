"""Regenerate docs/status.png: `ringmesh status` of a 5-host demo cluster, rendered as a terminal.

    .venv/bin/pip install pillow      # only this script needs it
    .venv/bin/python docs/render_status.py [--out docs/status.png] [--text docs/status.txt]

The cluster is real (`LocalCluster`: five `ringmesh serve` processes on loopback): two training
hosts, a backup host and two self-play hosts, one of them a spot host. Self-play games for two
configs are published and made durable, a model is promoted (broadcast by the leader) and held
everywhere, then the spot host is killed and an NPZ archive is published on node2 while node1's
ingress is held to 8 MB/s, so that node1's view shows a pull in progress. The view is node1's,
with colours, drawn in DejaVu Sans Mono (Debian: fonts-dejavu-core).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ringmesh.node.games import gamedb  # noqa: E402
from ringmesh.ops import selfplay  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster, wait_for  # noqa: E402
from ringmesh.ops.statusview import render  # noqa: E402

MiB = 1 << 20
FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts"]
BG, FG = (24, 26, 33), (213, 216, 222)
COLOURS = {
    "31": (240, 98, 98),
    "32": (120, 205, 120),
    "33": (230, 190, 90),
    "36": (100, 200, 215),
    "2": (125, 130, 142),
}


def snapshot(root: Path) -> tuple[dict, dict]:
    roles = {"node1": "training", "node2": "training", "node3": "backup", "node4": "selfplay", "node5": "selfplay"}
    c = LocalCluster(root, 5, gossip_interval=0.25, roles=roles, routing={"ephemeral_hosts": ["node5"]})
    try:
        for name in c.nodes:  # node1 takes in at most 8 MB/s: its pull of the NPZ shows progress
            c.start(name, env={"RINGMESH_INGRESS_BYTES_PER_S": "8000000"} if name == "node1" else None)
        for name in c.nodes:
            c.wait_ready(name)
        wait_for(c.converged, 30, what="a settled cluster")
        for host, key, n, seed in (
            ("node4", "hex8_2p", 40, 1),
            ("node5", "square8_2p", 24, 2),
            ("node4", "square8_2p", 12, 3),
        ):
            db = root / f"selfplay_{host}_{key}.db"
            selfplay.generate_games(db, n, config_key=key, seed=seed, moves=(20, 40))
            records, _ = gamedb.read_completed_games(db)
            with c.nodes[host].client() as cl:
                seqs = [q for i in range(0, len(records), 8) for q in cl.publish_games(key, records[i : i + 8])]
                assert cl.wait_durable(key, seqs[-1], timeout=60)
        model = root / "canonical_hex8_2p.pth"
        model.write_bytes(os.urandom(24 * MiB))
        wait_for(lambda: all(d and d["leader"] for d in c.query_all("status").values()), 30, what="a leader")
        with c.nodes["node2"].client() as cl:
            put = cl.put(model, "model", broadcast=True)

        def delivered():
            st = c.nodes["node1"].query("status") or {}
            return any(b["digest"] == put["digest"] and b["state"] == "delivered" for b in st.get("broadcasts", []))

        wait_for(delivered, 60, what="the model on every host it belongs on")
        c.signal("node5", signal.SIGKILL)  # a spot host vanishes
        npz = root / "hex8_2p.npz"
        npz.write_bytes(os.urandom(64 * MiB))
        with c.nodes["node2"].client() as cl:
            cl.put(npz, "npz")

        def mid_pull():
            st = c.nodes["node1"].query("status")
            t = next((t for t in (st or {}).get("transfers", []) if t["item"].endswith(npz.name)), None)
            view = [m["state"] for m in (st or {}).get("members", []) if m["name"] == "node5"]
            if t and t.get("chunks") and 0.4 <= t["chunks_verified"] / t["chunks"] <= 0.75 and view != ["alive"]:
                with c.nodes["node1"].client() as cl:
                    return cl.status(), cl.get("cluster")
            return None

        status, cluster = wait_for(mid_pull, 60, interval=0.05, what="node1 half-way through the NPZ, node5 suspected")
        return status, cluster
    finally:
        c.stop_all()


def font(bold: bool, size: int):
    from PIL import ImageFont

    name = "DejaVuSansMono-Bold.ttf" if bold else "DejaVuSansMono.ttf"
    for d in FONT_DIRS:
        if (Path(d) / name).exists():
            return ImageFont.truetype(str(Path(d) / name), size)
    raise SystemExit(f"{name} not found in {', '.join(FONT_DIRS)}; install fonts-dejavu-core")


def draw(
    text: str, out: Path, prompt: str, size: int = 15, title: str = "ringmesh status — node1 of a 5-host demo cluster"
) -> None:
    from PIL import Image, ImageDraw

    regular, bold = font(False, size), font(True, size)
    cw = regular.getlength("M")
    lh = int(size * 1.45)
    lines = [prompt] + text.rstrip("\n").split("\n")
    cols = max(len(re.sub(r"\x1b\[[0-9;]*m", "", ln)) for ln in lines)
    pad, bar = 22, 34
    img = Image.new("RGB", (int(cols * cw + 2 * pad), bar + pad + lh * len(lines) + pad // 2), BG)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, img.width, bar - 6], fill=(38, 41, 50))
    for i, col in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        d.ellipse([14 + i * 22, 9, 28 + i * 22, 23], fill=col)
    d.text(
        (img.width / 2, 16),
        title,
        font=regular,
        fill=(170, 174, 184),
        anchor="mm",
    )
    for row, ln in enumerate(lines):
        x, y = pad, bar + pad // 2 + row * lh
        colour, is_bold = FG, row == 0
        for part in re.split(r"(\x1b\[[0-9;]*m)", ln):
            m = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
            if m:
                codes = m.group(1).split(";")
                if codes == ["0"]:
                    colour, is_bold = FG, False
                else:
                    is_bold = "1" in codes
                    colour = next((COLOURS[k] for k in codes if k in COLOURS), FG)
                continue
            if part:
                d.text((x, y), part, font=bold if is_bold else regular, fill=(150, 200, 255) if row == 0 else colour)
                x += cw * len(part)
    img.save(out, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "status.png"))
    ap.add_argument("--text", help="also write the plain text of the view here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringmesh-status-") as tmp:
        status, cluster = snapshot(Path(tmp))
    text = render(status, cluster, color=True, now=time.time())
    draw(text, Path(args.out), "$ ringmesh status")
    if args.text:
        Path(args.text).write_text(render(status, cluster, color=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
