"""The build report's two drawings as inline SVG: a target's partition and a process's memory.

Plain SVG text, no script and no external resource, so a report opens anywhere, offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from trtbuild.recipe.sizes import format_size

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]
MIB = 1 << 20


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Edge:
    """The tensors one part (or the model's inputs, -1) hands to another (or to the outputs)."""

    source: int
    dest: int
    tensors: list[dict[str, Any]]

    @property
    def label(self) -> str:
        size = format_size(sum(t["bytes"] for t in self.tensors))
        if len(self.tensors) == 1:
            return f"{self.tensors[0]['name']} · {size}"
        return f"{len(self.tensors)} tensors · {size}"


def edges(parts: list[dict[str, Any]], outputs: list[str]) -> list[Edge]:
    """Group the plan's tensors by (producer, reader); -1 is the model's inputs, len(parts) its
    outputs."""
    grouped: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for part in parts:
        for t in part["inputs"]:
            source = -1 if t["from_part"] is None else t["from_part"]
            grouped.setdefault((source, part["index"]), []).append(t)
        for t in part["outputs"]:
            if t["name"] in outputs:
                grouped.setdefault((part["index"], len(parts)), []).append(t)
    return [Edge(s, d, ts) for (s, d), ts in sorted(grouped.items())]


def partition(parts: list[dict[str, Any]], outputs: list[str], peaks: dict[int, int]) -> str:
    """Parts left to right in build order, coloured; arcs carry the boundary tensors' sizes."""
    box_w, box_h, gap = 196, 74, 110
    columns = len(parts) + 2  # inputs, parts..., outputs
    links = edges(parts, outputs)
    lift = max((e.dest - e.source for e in links), default=1)
    top = 40 + 34 * max(0, lift - 1)
    width, height = columns * box_w + (columns - 1) * gap + 20, top + box_h + 30

    def x_of(column: int) -> int:
        return 10 + column * (box_w + gap)

    items = []
    for e in links:
        a, b = x_of(e.source + 1) + box_w, x_of(e.dest + 1)
        y = top + box_h // 2
        if e.dest - e.source == 1:
            path, label_x, label_y = f"M{a},{y} L{b},{y}", (a + b) // 2, y - 8
        else:  # skips a part: an arc over the boxes between
            rise = top - 26 - 34 * (e.dest - e.source - 2)
            a, b = x_of(e.source + 1) + box_w // 2, x_of(e.dest + 1) + box_w // 2
            path = f"M{a},{top} C{a},{rise} {b},{rise} {b},{top}"
            label_x, label_y = (a + b) // 2, (top + 3 * rise) // 4 - 4
        tip = ", ".join(f"{t['name']} {t['shape']} {t['dtype']}" for t in e.tensors)
        items.append(
            f'<g class="edge"><title>{escape(tip)}</title>'
            f'<path d="{path}" fill="none" stroke="#555" stroke-width="1.6" '
            f'marker-end="url(#arrow)"/>'
            f'<text x="{label_x}" y="{label_y}" text-anchor="middle" class="edge-label">'
            f"{escape(e.label)}</text></g>"
        )
    for column in range(columns):
        x, index = x_of(column), column - 1
        if column in (0, columns - 1):
            names = sorted({t["name"] for e in links for t in e.tensors if e.source == -1})
            if column:
                names = sorted({t["name"] for e in links for t in e.tensors if e.dest == index})
            fill = "#bbbbbb"
            lines = ["model inputs" if column == 0 else "model outputs", *_fit(names)]
        else:
            part = parts[index]
            fill = colour(index)
            lines = [
                f"part {index}",
                f"{part['ops']} ops · {format_size(part['weight_bytes'])}",
                f"peak {_mib(peaks.get(index))} / pred. {_mib(part['predicted_peak_bytes'])}",
            ]
        text = "".join(
            f'<text x="{x + box_w // 2}" y="{top + 22 + 18 * i}" text-anchor="middle" '
            f'class="{"title" if i == 0 else "fact"}">{escape(line)}</text>'
            for i, line in enumerate(lines)
        )
        items.append(
            f'<g class="node"><rect x="{x}" y="{top}" width="{box_w}" height="{box_h}" rx="8" '
            f'fill="{fill}" fill-opacity="0.35" stroke="{fill}" stroke-width="2"/>{text}</g>'
        )
    return (
        f'<svg class="partition" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
        "</marker></defs>" + "".join(items) + "</svg>"
    )


def memory(
    samples: list[list[float]], budget: int, predicted: int | None, peak: int, tint: str
) -> str:
    """RSS over the process's life against the budget line and the predicted peak."""
    width, height, left, bottom, top = 380, 196, 52, 28, 22
    plot_w, plot_h = width - left - 12, height - bottom - top
    end = max((t for t, _ in samples), default=0.0) or 1.0
    ceiling = max(budget, predicted or 0, peak, 1) * 1.08

    def x(t: float) -> float:
        return left + plot_w * t / end

    def y(value: float) -> float:
        return top + plot_h * (1 - value / ceiling)

    out = [
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>'
    ]
    for step in range(5):  # y grid in MiB
        value = ceiling * step / 4
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#eee"/><text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'class="axis">{value / MIB:.0f}</text>'
        )
    out.append(
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end" class="axis">'
        f"{end:.1f} s</text>"
        f'<text x="{left}" y="{height - 6}" class="axis">0</text>'
        f'<text x="{left - 4}" y="11" text-anchor="end" class="axis">MiB</text>'
    )
    if samples:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in samples)
        first, last = x(samples[0][0]), x(samples[-1][0])
        base = y(0)
        out.append(
            f'<polygon class="rss-area" points="{first:.1f},{base:.1f} {points} '
            f'{last:.1f},{base:.1f}" fill="{tint}" fill-opacity="0.18"/>'
            f'<polyline class="rss" points="{points}" fill="none" stroke="{tint}" '
            'stroke-width="2"/>'
        )
        t_peak, v_peak = max(samples, key=lambda point: point[1])
        out.append(
            f'<circle class="peak" cx="{x(t_peak):.1f}" cy="{y(v_peak):.1f}" r="3.5" '
            f'fill="{tint}"><title>sampled peak {v_peak / MIB:.0f} MiB at {t_peak:.1f} s'
            "</title></circle>"
        )
    out.append(_level("budget", budget, "#d62728", "6 3", left, plot_w, y(budget)))
    if predicted:
        out.append(_level("predicted", predicted, "#ff7f0e", "2 3", left, plot_w, y(predicted)))
    return (
        f'<svg class="memory" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">' + "".join(out) + "</svg>"
    )


def _level(name: str, value: int, stroke: str, dash: str, left: int, w: int, at: float) -> str:
    return (
        f'<g class="{name}-line"><line x1="{left}" x2="{left + w}" y1="{at:.1f}" y2="{at:.1f}" '
        f'stroke="{stroke}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
        f'<text x="{left + w - 4}" y="{at - 4:.1f}" text-anchor="end" fill="{stroke}" '
        f'class="axis">{name} {value / MIB:.0f} MiB</text></g>'
    )


def _fit(names: list[str], room: int = 24) -> list[str]:
    """Names on at most two lines of a box."""
    text = ", ".join(names)
    if len(text) <= room:
        return [text]
    return [text[:room], text[room : 2 * room - 1] + ("…" if len(text) > 2 * room - 1 else "")]


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MIB:.0f} MiB"
