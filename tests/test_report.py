"""`trtbuild report` / `run --report`: one self-contained HTML page, opened in a real headless
Chromium (Debian's, driven by Playwright): no console errors, no network, the expected sections
and numbers, memory curves under the budget line, and a screenshot that is not blank."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trtbuild.deploy.report import write_report
from trtbuild.execution.watch import MAX_SAMPLES, Samples
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.sizes import format_size

from .conftest import REPO, SPLITTING, require, small_seed_net

CHROMIUM = os.environ.get("TRTBUILD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TRTBUILD_TEST_ARTIFACTS", REPO / "test-artifacts"))
FLAGS = [  # as root, on a machine whose network is closed (see the README's test section)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_or_skip() -> Any:
    """Playwright's API over Debian's Chromium; skip (with the reason) where either is missing,
    unless .ci/run, which installs both, requires them (conftest.require)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TRTBUILD_CHROMIUM)"
    require(reason)
    return sync_playwright


def open_report(path: Path, screenshot: Path) -> dict[str, Any]:
    """Load the page, collect what went wrong, measure the drawings, take a screenshot."""
    sync_playwright = browser_or_skip()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "request",
                lambda r: None if r.url.startswith("file:") else problems.append(f"net {r.url}"),
            )
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            facts = page.evaluate(MEASURE)
            png = page.screenshot(full_page=True)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(png)
            data = "data:image/png;base64," + base64.b64encode(png).decode()
            facts["colours"] = page.evaluate(COLOURS, data)
        finally:
            browser.close()
    facts["problems"] = problems
    return facts


# For every memory chart: the curve's highest point and the budget line's y (SVG y grows down).
MEASURE = """() => ({
  title: document.querySelector('h1').textContent,
  text: document.body.innerText,
  headings: [...document.querySelectorAll('h3')].map(h => h.textContent),
  nodes: document.querySelectorAll('svg.partition g.node').length,
  edges: [...document.querySelectorAll('svg.partition g.edge text')].map(t => t.textContent),
  charts: [...document.querySelectorAll('svg.memory')].map(svg => ({
    top: Math.min(...svg.querySelector('polyline.rss').getAttribute('points').trim()
      .split(/\\s+/).map(p => parseFloat(p.split(',')[1]))),
    budget: parseFloat(svg.querySelector('g.budget-line line').getAttribute('y1')),
    points: svg.querySelector('polyline.rss').getAttribute('points').trim().split(/\\s+/).length,
  })),
  width: document.documentElement.scrollWidth,
})"""

# Distinct colours in the screenshot, counted by the browser itself from the PNG bytes.
COLOURS = """async (data) => {
  const img = new Image(); img.src = data; await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, img.width, img.height).data;
  const seen = new Set();
  for (let i = 0; i < px.length; i += 4 * 7) seen.add((px[i] << 16) | (px[i+1] << 8) | px[i+2]);
  return seen.size;
}"""


def test_seed_net_1g_report_renders_in_headless_chromium(recipes: Path) -> None:
    """Issue 14's acceptance 3: run --report, then the page in a real browser."""
    browser_or_skip()
    run = subprocess.run(
        [sys.executable, "-m", "trtbuild", "run", str(recipes / "seed_net_1g.toml"), "--report"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    report = Path("build/seed_net_1g/report.html")
    assert f"report: {report.resolve()}" in run.stderr
    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to fetch

    facts = open_report(report, ARTIFACTS / "report-seed_net_1g.png")
    assert facts["problems"] == []
    assert "seed_net_1g" in facts["title"]
    assert facts["headings"] == ["Partition", "Memory", "Parts", "Check"]
    assert facts["nodes"] == 4  # model inputs, two parts, model outputs
    record = json.loads(Path("build/seed_net_1g/seed_net/fp32/build.json").read_text())
    boundary = record["plan"]["parts"][1]["inputs"][0]
    assert f"{boundary['name']} · {format_size(boundary['bytes'])}" in facts["edges"]
    for part in record["parts"]:
        assert f"peak {format_size(part['processes'][-1]['peak_rss_bytes'])}" in facts["text"]
    # one chart per process: the graph job, one export shared by both parts, two engine builds
    assert len(facts["charts"]) == 4
    for chart in facts["charts"]:
        assert chart["points"] >= 5
        assert chart["top"] > chart["budget"]  # the whole curve lies under the budget line
    assert facts["colours"] > 20  # drawn, not blank
    assert facts["width"] <= 1280  # no horizontal scrolling at a laptop's width

    again = subprocess.run(  # up to date: the report is written all the same
        [sys.executable, "-m", "trtbuild", "run", str(recipes / "seed_net_1g.toml"), "--report"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "up to date" in again.stderr
    assert "report: " in again.stderr


def test_report_says_why_each_part_was_rebuilt(recipes: Path) -> None:
    """Reasons come from the build itself: new weights name the field that changed."""
    recipe = small_seed_net(recipes)
    build(recipe, Options(memory_override=SPLITTING))
    first = write_report(Path("build/seed_small")).read_text()
    assert first.count("not in the lock file") >= 2

    recipe.write_text(recipe.read_text().replace("seed = 0", "seed = 4"))
    (target,) = build(recipe, Options(memory_override=SPLITTING)).targets
    assert len(target.parts) >= 2 and not any(p.cached for p in target.parts)
    html = write_report(Path("build/seed_small")).read_text()
    assert html.count("weights changed (") == len(target.parts)
    assert "not in the lock file" not in html
    assert html.count('class="chart"') == 1 + 1 + len(target.parts)  # graph, export, builds
    shutil.rmtree("build/seed_small/seed_net")
    with pytest.raises(Exception, match="no built target here"):
        write_report(Path("build/seed_small"))


def test_memory_samples_stay_few_and_keep_every_peak() -> None:
    """An hour of 10 ms samples fits in MAX_SAMPLES points; the spike survives every merge."""
    ticks = iter(range(10**6))
    samples = Samples(step=0.05, clock=lambda: next(ticks) * 0.01)
    for i in range(360_000):
        samples.add(5_000_000_000 if i == 123_457 else 1_000 + i)
    times = [t for t, _ in samples.points]
    assert MAX_SAMPLES // 2 <= len(samples.points) <= MAX_SAMPLES
    assert times == sorted(times) and times[-1] > 3500  # covers the whole hour
    assert max(v for _, v in samples.points) == 5_000_000_000
    assert samples.points[-1][1] >= 1_000 + 359_000  # the end of the curve is kept too
