"""Charts as inline SVG, drawn in Python: no chart library, no script. Every label is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

#: series colours (colour-blind safe: Okabe-Ito)
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")


def radar(axes: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, size: int = 420,
          top: float | None = None) -> Markup:
    """A radar chart: one axis per name in ``axes`` (values 0..``top``; by default the largest value rounded up
    to a multiple of 10, at most 100), one polygon per ``(name, values)`` (a missing value is drawn at 0), rings
    labelled with their values, and a legend."""
    k = len(axes)
    if top is None:
        biggest = max((v for _, vals in series for v in vals if v is not None), default=100.0)
        top = min(100.0, max(10.0, math.ceil(biggest / 10.0) * 10.0)) if biggest <= 100 else biggest
    margin = 130  # room for the axis labels
    cx, cy = size / 2 + margin, size / 2
    r = size / 2 - 40
    width = size + 2 * margin + 150
    out = [f'<svg class="radar" width="{width}" height="{size}" viewBox="0 0 {width} {size}" role="img">']

    def point(i: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * i / k
        return cx + r * v / top * math.cos(a), cy + r * v / top * math.sin(a)

    for ring in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, ring * top) for i in range(k)))
        out.append(f'<polygon points="{pts}" fill="none" stroke="#ccc" stroke-width="1"/>')
        out.append(f'<text x="{cx + 3:.1f}" y="{cy - r * ring - 3:.1f}" font-size="9" fill="#999">'
                   f'{ring * top:g}</text>')
    for i, name in enumerate(axes):
        x, y = point(i, top)
        out.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#ccc"/>')
        lx, ly = point(i, top * 1.12)
        anchor = "middle" if abs(lx - cx) < 5 else ("start" if lx > cx else "end")
        label = name if len(name) <= 22 else name[:21] + "…"
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="{anchor}" '
                   f'dominant-baseline="middle">{escape(label)}</text>')
    for j, (name, values) in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, max(0.0, min(top, v or 0.0)))
                                                     for i, v in enumerate(values)))
        out.append(f'<polygon points="{pts}" fill="{colour}" fill-opacity="0.12" stroke="{colour}" '
                   f'stroke-width="2"><title>{escape(name)}</title></polygon>')
        ly = 20 + 18 * j
        lx = size + 2 * margin
        out.append(f'<rect x="{lx}" y="{ly - 6}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly}" font-size="12" dominant-baseline="middle">'
                   f'{escape(name if len(name) <= 20 else name[:19] + "…")}</text>')
    out.append("</svg>")
    return Markup("".join(out))
