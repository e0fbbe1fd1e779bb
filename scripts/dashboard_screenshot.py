"""Render the dashboard of a run to SVG and PNG (the README screenshot, and a way to look at snapshots).

    python scripts/dashboard_screenshot.py RUN_DIR docs/img/dashboard.png [--size 160x48]
    python scripts/dashboard_screenshot.py --svg tests/__snapshots__/.../x.svg out.png

The SVG is Textual's own screenshot. Converting it with cairosvg needs two fixes: Rich's SVG asks
for "Fira Code" (usually absent; fontconfig then picks a proportional font), and cairosvg ignores
``textLength``, so any font whose advance differs from Rich's 0.61 em drifts columns apart. Every
character is therefore placed in its own cell, which keeps box borders straight in any font.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import sys
import time
from pathlib import Path

_TEXT_RE = re.compile(r'<text class="([^"]*)" x="([0-9.]+)" y="([0-9.]+)" textLength="([0-9.]+)"([^>]*)>(.*?)</text>', re.S)
_FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"


def fix_svg(svg: str) -> str:
    """One ``<text>`` per character at its exact cell, and a monospace font that exists."""

    def per_char(m: re.Match[str]) -> str:
        cls, x, y, length, rest, body = m.groups()
        chars = html.unescape(body)
        if len(chars) <= 1:
            return m.group(0)
        advance = float(length) / len(chars)
        out = []
        for i, ch in enumerate(chars):
            if ch in (" ", "\xa0"):
                continue
            out.append(
                f'<text class="{cls}" x="{float(x) + i * advance:.2f}" y="{y}"{rest}>{html.escape(ch)}</text>'
            )
        return "".join(out)

    svg = _TEXT_RE.sub(per_char, svg)
    return svg.replace("font-family: Fira Code, monospace;", f"font-family: {_FONT};")


def svg_to_png(svg: str, out: Path, scale: float = 1.0) -> None:
    import cairosvg

    cairosvg.svg2png(bytestring=fix_svg(svg).encode("utf-8"), write_to=str(out), scale=scale)


async def _screenshot(run_dir: Path, size: tuple[int, int], wait: float) -> str:
    from memtop.tui.app import DashboardApp
    from memtop.tui.reader import FileRunReader

    app = DashboardApp(FileRunReader(run_dir), plot_interval=0.0, refresh=0.1)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            shown = app._shown
            if shown is not None and shown.suggestions.state != "pending" and not shown.behind:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        return app.export_screenshot(title="memtop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run directory (or an SVG with --svg)")
    parser.add_argument("out", type=Path, help="the PNG to write (an .svg is written next to it)")
    parser.add_argument("--svg", action="store_true", help="SOURCE is an SVG screenshot, just convert it")
    parser.add_argument("--size", default="160x48", help="terminal size COLSxROWS (default 160x48)")
    parser.add_argument("--scale", type=float, default=1.0, help="PNG scale factor")
    args = parser.parse_args(argv)
    if args.svg:
        svg = args.source.read_text(encoding="utf-8")
    else:
        cols, rows = (int(v) for v in args.size.lower().split("x"))
        svg = asyncio.run(_screenshot(args.source, (cols, rows), wait=15.0))
        args.out.with_suffix(".svg").write_text(svg, encoding="utf-8")
    svg_to_png(svg, args.out, scale=args.scale)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
