"""Regenerate docs/demo.png: the last live view of `ringmesh demo` and its summary, rendered as a
terminal.

    .venv/bin/pip install pillow      # only this script needs it
    .venv/bin/python docs/render_demo.py [--out docs/demo.png] [--text docs/demo.txt]

The run is a real one (`ringmesh.ops.demo.Demo`: six `ringmesh serve` processes on loopback); its
view is captured as a terminal would show it, then drawn in DejaVu Sans Mono (fonts-dejavu-core).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from render_status import draw  # noqa: E402

from ringmesh.ops.demo import Demo, MiB  # noqa: E402
from ringmesh.ops.demoview import summary_lines  # noqa: E402


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "demo.png")
    ap.add_argument("--text", type=Path, default=None, help="also write the captured text here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ringmesh-demo-shot-"))
    demo = Demo(root, 16 * MiB, as_json=False)
    demo.screen.stream, demo.screen.tty = _Tty(), True
    last: list[str] = []
    show = demo.screen.show

    def keep(lines: list[str]) -> None:
        last[:] = [*demo.screen.story[-6:], "", *lines]
        show(lines)

    demo.screen.show = keep  # type: ignore[method-assign]
    try:
        demo.run()
    finally:
        demo.c.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    text = "\n".join(last + summary_lines(demo.s, None))
    if args.text:
        args.text.write_text(text + "\n")
    draw(text, args.out, "$ make demo", title="ringmesh demo — six real peers on loopback")
    print(f"wrote {args.out} (demo {'OK' if demo.s['ok'] else 'FAILED'})")
    return 0 if demo.s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
