"""Charts as inline SVG, drawn in Python: no chart library, no script. Every label is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

#: series colours (colour-blind safe: Okabe-Ito)
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")


def radar(axes: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, size: int = 420,
          top: float = 100.0) -> Markup:
    """A radar chart: one axis per name in ``axes`` (values 0..``top``), one polygon per ``(name, values)``
    (a missing value is drawn at 0), and a legend."""
    k = len(axes)
    cx = cy = size / 2
    r = size / 2 - 70
    out = [f'<svg class="radar" width="{size + 160}" height="{size}" '
           f'viewBox="0 0 {size + 160} {size}" role="img">']

    def point(i: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * i / k
        return cx + r * v / top * math.cos(a), cy + r * v / top * math.sin(a)

    for ring in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, ring * top) for i in range(k)))
        out.append(f'<polygon points="{pts}" fill="none" stroke="#ccc" stroke-width="1"/>')
    for i, name in enumerate(axes):
        x, y = point(i, top)
        out.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#ccc"/>')
        lx, ly = point(i, top * 1.12)
        anchor = "middle" if abs(lx - cx) < 5 else ("start" if lx > cx else "end")
        label = name if len(name) <= 24 else name[:23] + "…"
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="{anchor}" '
                   f'dominant-baseline="middle">{escape(label)}</text>')
    for j, (name, values) in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, max(0.0, min(top, v or 0.0)))
                                                     for i, v in enumerate(values)))
        out.append(f'<polygon points="{pts}" fill="{colour}" fill-opacity="0.12" stroke="{colour}" '
                   f'stroke-width="2"><title>{escape(name)}</title></polygon>')
        ly = 20 + 18 * j
        out.append(f'<rect x="{size + 10}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{size + 28}" y="{ly}" font-size="12" dominant-baseline="middle">'
                   f'{escape(name if len(name) <= 20 else name[:19] + "…")}</text>')
    out.append("</svg>")
    return Markup("".join(out))
