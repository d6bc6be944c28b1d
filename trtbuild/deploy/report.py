"""`trtbuild report build/<recipe>`: one self-contained HTML page of what the build did.

Reads only what a build published (each target's engine.json and build.json, the recipe's
provenance.json) and writes build/<recipe>/report.html: per target the partition coloured by part
with the boundary tensors and their sizes, memory over time of every process against the budget
and the predicted peak, durations, and cache hits and misses with the reason for each rebuild.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from trtbuild.cache import atomic
from trtbuild.deploy import svg
from trtbuild.errors import TrtbuildError
from trtbuild.recipe.schema import slot
from trtbuild.recipe.sizes import format_size

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
  max-width: 1240px; padding: 18px 28px; color: #222; background: #fff; }
h1 { font-size: 24px; margin: 4px 0; } h2 { font-size: 19px; margin: 28px 0 6px;
  border-bottom: 2px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .facts { color: #555; } .scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0; } td, th { padding: 3px 10px;
  border-bottom: 1px solid #eee; text-align: right; } th { background: #f4f4f4; }
td.text, th.text { text-align: left; } .swatch { display: inline-block; width: 11px;
  height: 11px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; } .chart { border: 1px solid #e4e4e4;
  border-radius: 6px; padding: 6px 8px; } .chart p { margin: 0 0 2px; font-size: 13px; }
.over { color: #c00; font-weight: bold; } .hit { color: #2a7d2a; } .miss { color: #b05a00; }
svg text { font: 12px system-ui, sans-serif; fill: #222; } svg text.axis { font-size: 11px; }
svg text.title { font-weight: bold; } svg text.edge-label { font-size: 11px; fill: #333; }
"""


@dataclass(frozen=True)
class Process:
    label: str
    colour: str
    peak: int
    predicted: int | None
    seconds: float
    samples: list[list[float]]


def write_report(folder: Path) -> Path:
    """Write folder/report.html (atomically) and return its path."""
    folder = Path(folder)
    engines = sorted(folder.glob("*/*/engine.json"))
    if not engines:
        raise TrtbuildError(
            f"{folder}: no built target here (expected <model>/<precision>/engine.json); "
            "run `trtbuild run` first"
        )
    provenance = _read(folder / "provenance.json")
    sections = [_target(path.parent) for path in engines]
    out = folder / "report.html"
    atomic.write_text(out, page(folder.name, provenance, sections))
    return out


def page(recipe: str, provenance: dict[str, Any], sections: list[str]) -> str:
    details = provenance.get("predicate", {}).get("runDetails", {})
    times = details.get("metadata", {})
    tools = provenance.get("predicate", {}).get("buildDefinition", {})
    tools = tools.get("internalParameters", {}).get("toolchain", {})
    toolchain = ", ".join(f"{k} {v}" for k, v in sorted(tools.items()))
    when = f"{times.get('startedOn', '?')} to {times.get('finishedOn', '?')}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>trtbuild report: {escape(recipe)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Build report: {escape(recipe)}</h1>"
        f'<p class="meta">last build {escape(when)} · {len(sections)} target(s)'
        f"{' · ' + escape(toolchain) if toolchain else ''}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


def _target(folder: Path) -> str:
    description = _read(folder / "engine.json")
    record = _read(folder / "build.json")
    name = f"{description['model']}/{slot(description['precision'], description.get('kind'))}"
    parts = record.get("parts", [])
    plan = record.get("plan", {})
    budget = record.get("budget_bytes") or max(
        (p.get("memory_limit_bytes", 0) for p in parts), default=0
    )
    peaks = {i: p["peak_rss_bytes"] for i, p in enumerate(parts)}
    built = sum(not p.get("cached", False) for p in parts)
    gap = plan.get("optimality_gap")
    facts = [
        f"{description['backend']}",
        f"{len(parts)} engine(s)",
        f"budget {format_size(budget)}",
        f"boundary {format_size(plan.get('boundary_bytes', 0))}",
    ]
    if gap is not None:
        facts.append(f"lower bound {format_size(plan.get('lower_bound_bytes', 0))} (gap {gap:.1%})")
    facts.append(f"{built} built, {len(parts) - built} from the cache")
    if record.get("disk"):  # the disk estimate the run was checked with (trtbuild.orchestrate.disk)
        facts.append(f"disk estimate {format_size(record['disk']['total_bytes'])}")
    if "parts" in plan:
        outputs = [o["name"] for o in description["outputs"]]
        drawing = f'<div class="scroll">{svg.partition(plan["parts"], outputs, peaks)}</div>'
        drawing += _tensors(plan["parts"])
    else:
        drawing = "<p>This build.json predates the partition record: run the build again.</p>"
    return (
        f'<section class="target" id="{escape(name.replace("/", "-"))}">'
        f'<h2>{escape(name)}</h2><p class="facts">{escape(" · ".join(facts))}</p>'
        f'<h3>Partition</h3>{drawing}<h3>Memory</h3><div class="charts">'
        + "".join(_chart(p, budget) for p in _processes(record))
        + f"</div><h3>Parts</h3>{_parts(parts, plan.get('parts', []))}"
        + f"<h3>Check</h3>{_check(record.get('check'))}</section>"
    )


def _check(check: dict[str, Any] | None) -> str:
    """The accuracy check: per model output and input shape, its figures against the tolerance."""
    if not check:
        return "<p>Not checked against the model (--no-check or check.enabled = false).</p>"
    rows = []
    for o in check.get("outputs", []):
        shape = ", ".join(f"{n}={s}" for n, s in o["shape"].items())
        verdict = (
            '<span class="hit">pass</span>' if o["passed"] else '<span class="over">FAIL</span>'
        )
        tol = check.get("tolerances", {}).get(o["output"], {}).get("rel_l2", "")
        rows.append(
            f'<tr><td class="text">{escape(o["output"])}</td><td class="text">{escape(shape)}</td>'
            f"<td>{o.get('max_abs', float('nan')):.3g}</td><td>{o.get('rel_l2', float('nan')):.3g}</td>"
            f'<td>{tol}</td><td class="text">{verdict}</td></tr>'
        )
    head = "".join(
        f'<th class="{"text" if h in ("output", "shape", "") else ""}">{h}</th>'
        for h in ("output", "shape", "max_abs", "rel_l2", "rel_l2 tolerance", "")
    )
    cached = " (from the cache)" if check.get("cached") else ""
    return (
        f'<p class="facts">{escape(check.get("message", ""))}{cached}</p>'
        f'<table class="check"><tr>{head}</tr>{"".join(rows)}</table>'
    )


def _processes(record: dict[str, Any]) -> list[Process]:
    """The graph process, then every export and build process once (an export process that
    made several parts is listed in each of them)."""
    graph = record.get("graph_process", {})
    out = []
    if graph:
        out.append(
            Process(
                "graph (meta device, no weights)",
                "#7f7f7f",
                graph["peak_rss_bytes"],
                None,
                graph["seconds"],
                graph.get("rss_samples", []),
            )
        )
    seen = set()
    for index, part in enumerate(record.get("parts", [])):
        for p in part.get("processes", []):
            if (p["kind"], p.get("started")) in seen:
                continue
            seen.add((p["kind"], p.get("started")))
            shared = p.get("shared_by", [index])
            label = f"part{'s' * (len(shared) > 1)} {', '.join(map(str, shared))}: {p['kind']}"
            out.append(
                Process(
                    label,
                    svg.colour(index),
                    p["peak_rss_bytes"],
                    p.get("predicted_peak_bytes"),
                    p.get("seconds", 0.0),
                    p.get("rss_samples", []),
                )
            )
    return out


def _chart(p: Process, budget: int) -> str:
    over = ' class="over"' if budget and p.peak > budget else ""
    predicted = f" · predicted {format_size(p.predicted)}" if p.predicted else ""
    drawing = (
        svg.memory(p.samples, budget, p.predicted, p.peak, p.colour)
        if p.samples
        else "<p>no samples recorded (built before trtbuild kept them)</p>"
    )
    return (
        f'<div class="chart"><p><b>{escape(p.label)}</b> · {p.seconds:.1f} s</p>'
        f"<p><span{over}>peak {format_size(p.peak)}</span>{predicted} · budget "
        f"{format_size(budget)}</p>{drawing}</div>"
    )


def _parts(parts: list[dict[str, Any]], planned: list[dict[str, Any]]) -> str:
    rows = []
    for index, part in enumerate(parts):
        plan = planned[index] if index < len(planned) else {}
        cached = part.get("cached", False)
        status = (
            '<span class="hit">cache hit</span>' if cached else '<span class="miss">built</span>'
        )
        reason = "" if cached else escape(part.get("reason", ""))
        rows.append(
            f'<tr><td class="text"><span class="swatch" style="background:{svg.colour(index)}">'
            f"</span>part {index}</td><td>{plan.get('ops', '')}</td>"
            f"<td>{format_size(part.get('weight_bytes', 0))}</td>"
            f"<td>{format_size(part.get('predicted_peak_bytes', 0))}</td>"
            f"<td>{format_size(part['peak_rss_bytes'])}</td><td>{part['seconds']:.1f}</td>"
            f'<td class="text">{status}</td><td class="text">{reason}</td></tr>'
        )
    head = "".join(
        f'<th class="{"text" if h in ("part", "cache", "why rebuilt") else ""}">{h}</th>'
        for h in ("part", "ops", "weights", "predicted peak", "peak", "s", "cache", "why rebuilt")
    )
    return f'<table class="parts"><tr>{head}</tr>{"".join(rows)}</table>'


def _tensors(parts: list[dict[str, Any]]) -> str:
    rows = []
    for part in parts:
        for t in part["inputs"]:
            source = "model input" if t["from_part"] is None else f"part {t['from_part']}"
            cells = [t["name"], f"{source} → part {part['index']}", str(t["shape"]), t["dtype"]]
            text = "".join(f'<td class="text">{escape(c)}</td>' for c in cells)
            rows.append(f"<tr>{text}<td>{format_size(t['bytes'])}</td></tr>")
    head = "".join(f'<th class="text">{h}</th>' for h in ("tensor", "from → to", "shape", "dtype"))
    return f'<table class="tensors"><tr>{head}<th>size</th></tr>{"".join(rows)}</table>'


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TrtbuildError(f"{path}: unreadable build record: {exc}") from None
    return data
