"""``python -m benchmarks <name> [--quick] [--json PATH]`` (contract in docs/performance.md).

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


def run_one(name: str, quick: bool) -> BenchResult:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        result: BenchResult = module.run(quick=quick)
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
    args = parser.parse_args(argv)
    names = BENCHMARKS if args.name == "all" else (args.name,)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; use one of {', '.join(BENCHMARKS)}, all")
    ok = True
    for name in names:
        if importlib.util.find_spec(f"benchmarks.{name}") is None:
            print(f"benchmark {name!r} is not built yet; skipping", file=sys.stderr)
            continue
        result = run_one(name, args.quick)
        print_summary(result)
        if args.json:
            target = args.json / f"{name}.json" if args.name == "all" else args.json
            write_json(result, target)
        ok = ok and result.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
