"""``python -m benchmarks <name> [--quick] [--json PATH]`` (contract in docs/performance.md).

``gateway`` also takes ``--streams N`` (one level, no search) and ``--profile DIR``.

Each benchmark module exposes ``run(quick: bool) -> BenchResult``. ``all`` runs every one.
Exit code 0 when the run completed (``ok``), 1 when it failed, 2 for an unknown name.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchResult, machine_info, print_summary, write_json

BENCHMARKS = (
    "gateway",
    "vad",
    "sidecar",
    "sidecar_dask",
    "inference",
    "serving",
    "query",
    "growth",
    "pipeline",
)


def run_one(name: str, quick: bool, **options: Any) -> BenchResult:
    """Run one benchmark; ``options`` are the extra flags given (only some benchmarks take them)."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        result: BenchResult = module.run(quick=quick, **options)
    except Exception as exc:  # a failed run still reports, with ok=false
        traceback.print_exc()
        result = BenchResult(benchmark=name, ok=False, error=f"{type(exc).__name__}: {exc}")
    result.params.setdefault("quick", quick)
    result.machine = machine_info()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("name", help=f"one of {', '.join(BENCHMARKS)}, or 'all'")
    parser.add_argument("--quick", action="store_true", help="small sizes (each under ~60 s)")
    parser.add_argument("--json", type=Path, help="write the result JSON here (a folder for 'all')")
    parser.add_argument(
        "--streams", type=int, help="gateway: measure this many streams only (no search)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="gateway: run the level again under cProfile, split CPU by area, .prof files here",
    )
    args = parser.parse_args(argv)
    names = BENCHMARKS if args.name == "all" else (args.name,)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; use one of {', '.join(BENCHMARKS)}, all")
    options = {k: v for k, v in (("streams", args.streams), ("profile", args.profile)) if v}
    if options and names != ("gateway",):
        parser.error(f"--{next(iter(options))} applies to the gateway benchmark only")
    if args.streams is not None and args.streams < 1:
        parser.error("--streams must be at least 1")
    ok = True
    for name in names:
        if importlib.util.find_spec(f"benchmarks.{name}") is None:
            print(f"benchmark {name!r} is not built yet; skipping", file=sys.stderr)
            continue
        result = run_one(name, args.quick, **options)
        print_summary(result)
        if args.json:
            target = args.json / f"{name}.json" if args.name == "all" else args.json
            write_json(result, target)
        ok = ok and result.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
