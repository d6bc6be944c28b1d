"""`trtbuild run RECIPE`: build every target of a recipe."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from trtbuild.cli.common import add_build_options, budget, options, out_dir
from trtbuild.cli.runjson import as_json, locked_json


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("run", help="build every target of a recipe")
    add_build_options(parser)
    add_run_options(parser)
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="M",
        help="build only this model (repeatable); the lock and provenance are left as they were",
    )
    parser.add_argument(
        "--precision",
        dest="precisions",
        action="append",
        metavar="P",
        help="build only this precision (repeatable); as --model",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout: the targets and their engines, or the error",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write build/<recipe>/report.html (trtbuild report)",
    )
    parser.add_argument(
        "--release", action="store_true", help="release build: explicit backend, provenance"
    )
    parser.add_argument(
        "--sign",
        type=Path,
        metavar="KEYFILE",
        help="sign the release provenance (Ed25519, trtbuild keygen): provenance.dsse.json",
    )
    parser.set_defaults(handler=handle)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """How the build runs: shared by run and deploy (which builds what is missing first)."""
    parser.add_argument(
        "-j",
        "--jobs",
        type=jobs_arg,
        default="auto",
        help="processes at once: a number, or auto (default) = one per core; the memory "
        "budget still bounds what runs together",
    )
    parser.add_argument(
        "--no-fork-server",
        dest="fork_server",
        action="store_false",
        help="start every job as a fresh interpreter instead of forking torch jobs from one "
        "process that imported torch once (also TRTBUILD_FORK_SERVER=0)",
    )
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="where jobs run: this machine (default) or a Ray cluster (default: the recipe's "
        "[executor] kind)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="the Ray cluster to build on (default: $TRTBUILD_RAY_ADDRESS, else the recipe's "
        "[executor] address, else a one-node cluster here)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="say why each part is (re)built"
    )
    parser.add_argument(
        "--locked", action="store_true", help="fail if inputs no longer match the lock file"
    )
    parser.add_argument(
        "--no-disk-check",
        dest="disk_check",
        action="store_false",
        help="build even when the disk estimate (scratch, cache, outputs) exceeds the free space",
    )
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="do not check the engines against the model (on by default: a target whose "
        "engines deviate beyond its tolerances FAILS and is not published)",
    )


def jobs_arg(text: str | int) -> int | None:
    """A number of jobs, or None for auto (one per core: trtbuild.orchestrate.build.auto_jobs)."""
    if text == "auto":
        return None
    if isinstance(text, int) or (text.isdigit() and int(text) >= 1):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a number >= 1 or auto, got {text!r}")


def handle(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.sign is not None and not args.release:  # before the no-op path, which signs nothing
        from trtbuild.release.signing import check_key

        check_key(args.sign, args.release)
    subset = bool(args.models or args.precisions)
    if not args.release and not subset and _up_to_date(args):
        if args.json:
            print(json.dumps(locked_json(args), indent=2))
        else:
            print(f"up to date ({(time.perf_counter() - start) * 1000:.0f} ms)", file=sys.stderr)
            _report(args)
            verdict = _verdict(False, _unchecked_in_lock(args))
            print(f"{verdict} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
        return 0
    from rich.console import Console

    from trtbuild.cli import configure_logging

    configure_logging()
    console = Console(stderr=True, quiet=args.json)
    result = build_with_progress(args, console, release=args.release, sign=args.sign)
    failed = [t.failed for t in result.targets if t.failed]
    if args.json:
        _report(args)
        print(json.dumps(as_json(result), indent=2))
        return 1 if failed else 0
    if result.up_to_date:
        console.print(f"up to date ({result.seconds * 1000:.0f} ms)")
    else:
        console.print(_table(result))
    for note in result.notes:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)
    _report(args)
    for why in failed:
        console.print(f"[red]{why}[/]", soft_wrap=True)
    verdict = _verdict(bool(failed), any(t.check is None for t in result.targets))
    print(f"{verdict} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 1 if failed else 0


def build_with_progress(
    args: argparse.Namespace, console: Any, release: bool = False, sign: Path | None = None
) -> Any:
    """trtbuild.orchestrate.build() with a progress bar per target and a line per part on `console`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trtbuild.orchestrate.build import auto_jobs, build

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}
    opts = options(
        args,
        jobs=args.jobs or auto_jobs(),
        locked=args.locked,
        release=release,
        sign=sign,
        models=getattr(args, "models", None),
        precisions=getattr(args, "precisions", None),
    )
    opts.fork_server = opts.fork_server and args.fork_server
    opts.check = getattr(args, "check", True)
    opts.disk_check = getattr(args, "disk_check", True)
    opts.executor = args.executor
    opts.ray_address = args.ray_address or opts.ray_address
    if args.verbose:
        opts.report = lambda message: console.print(f"[dim]{message}[/]")

    def on_plan(target: Any) -> None:
        name = target.name
        if name in tasks:  # re-planned after a memory overrun: start the bar again
            progress.reset(tasks[name], total=len(target.plan.parts))
        else:
            tasks[name] = progress.add_task(name, total=len(target.plan.parts))

    def on_part(target: Any, part: Any) -> None:
        what = "cached" if part.cached else f"built in {part.seconds:.1f}s"
        progress.console.print(
            f"  {target.name} part {part.index}: {what}, "
            f"peak RSS {part.peak_rss_bytes / 2**20:.0f} MiB"
        )
        if args.verbose and not part.cached:
            for process in part.record["processes"]:
                progress.console.print(f"[dim]    {_memory_line(process)}[/]")
        progress.advance(tasks[target.name])

    opts.on_plan, opts.on_part = on_plan, on_part
    with progress:
        return build(args.recipe, opts)


def _report(args: argparse.Namespace) -> None:
    if args.report:
        from trtbuild.cli.report import report_after_run

        print(f"report: {report_after_run(args.recipe, out_dir(args))}", file=sys.stderr)


def _verdict(failed: bool, unchecked: bool) -> str:
    """The run's last word: PASSED only when every engine was checked against its model."""
    return "FAILED" if failed else "BUILT (not checked)" if unchecked else "PASSED"


def _unchecked_in_lock(args: argparse.Namespace) -> bool:
    """Some target of the (current) lock was built without the accuracy check."""
    from pathlib import Path

    from trtbuild.release.lockfile import lock_path, read_lock

    lock = read_lock(lock_path(Path(args.recipe)))
    return lock is None or any(t.check is None for t in lock.targets)


def _up_to_date(args: argparse.Namespace) -> bool:
    """The no-op fast path: lock file and file stats only, no heavy import."""
    from pathlib import Path

    from trtbuild.cache.layout import default_cache_dir
    from trtbuild.release.fastpath import invocation, stale

    cache = (args.cache or default_cache_dir()).resolve()
    called = invocation(args.backend, budget(args), out_dir(args), args.release, args.check)
    return stale(Path(args.recipe), called, cache) is None


def _memory_line(process: dict[str, Any]) -> str:
    """One build process: its measured peak against the memory model's prediction."""
    measured, predicted = process["peak_rss_bytes"], process.get("predicted_peak_bytes")
    if not predicted:
        return f"{process['kind']}: peak {measured / 2**20:.0f} MiB"
    return (
        f"{process['kind']}: peak {measured / 2**20:.0f} MiB, predicted {predicted / 2**20:.0f} "
        f"MiB (peak {measured / predicted - 1:+.0%})"
    )


def _table(result: Any) -> Any:
    """One row per target, narrow enough for an 80-column terminal."""
    from rich.table import Table

    table = Table(title="trtbuild run")
    table.add_column("target")
    table.add_column("backend")
    for col in ("parts", "built", "peak\nMiB", "budget\nMiB", "s", "check"):
        table.add_column(col, justify="right")
    for t in result.targets:
        # The largest process of the target this run, its graph job included: what a budget must
        # hold. Cached parts ran in an earlier run, maybe under another budget: "-".
        peaks = [p.peak_rss_bytes for p in t.parts if not p.cached]
        peak = max([t.graph_job.peak_rss_bytes, *peaks]) if peaks else None
        table.add_row(
            t.name,
            t.backend,
            str(len(t.parts)),
            str(len(peaks)),
            f"{peak / 2**20:.0f}" if peak is not None else "-",
            f"{t.budget_bytes / 2**20:.0f}",
            f"{sum(p.seconds for p in t.parts if not p.cached):.1f}",
            _check_cell(t.check),
        )
    return table


def _check_cell(check: dict[str, Any] | None) -> str:
    """ok / FAIL (the accuracy check); "-" when not checked."""
    if check is None:
        return "-"
    return "ok" if check["passed"] else "[red]FAIL[/]"
