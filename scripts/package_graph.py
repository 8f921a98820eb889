"""Print freqcap's package dependency graph: which package imports which, cycles, and imports that run upward.

    python scripts/package_graph.py [--src DIR] [--depth N] [--mermaid]

Built from the code's own imports (grimp, the graph library import-linter uses; imports inside functions count
too). Packages are module paths cut to `--depth` parts (default 3: `freqcap.adapters.feast`). With `--mermaid`
the graph is printed as a Mermaid flowchart for the docs. Runs on any checkout (`--src` is the folder holding
the `freqcap` package), so an older tree can be drawn for comparison; "upward" uses today's layer order and only
means something for trees laid out in layers.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import grimp

# Top of the stack first, as in pyproject.toml's layers contract.
LAYERS = ("cli", "api", "dags", "jobs", "adapters", "domain", "config", "layout", "resources", "errors")
KERNEL = {"config", "layout", "resources", "errors"}


def _rank(package: str) -> int | None:
    parts = package.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    name = parts[1]
    order = ["cli", "api|dags", "jobs", "adapters", "domain", "kernel"]
    key = "kernel" if name in KERNEL else ("api|dags" if name in ("api", "dags") else name)
    return order.index(key)


def package_edges(src: Path, depth: int) -> dict[tuple[str, str], int]:
    """(importer package, imported package) -> number of module-level imports between them."""
    sys.path.insert(0, str(src.resolve()))
    graph = grimp.build_graph("freqcap", cache_dir=None)
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = ".".join(module.split(".")[:depth]), ".".join(imported.split(".")[:depth])
            if a != b:
                edges[(a, b)] += 1
    return dict(edges)


def cycles(edges: dict[tuple[str, str], int]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted({x for e in edges for x in e}):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="src", help="folder holding the freqcap package (default: src)")
    parser.add_argument("--depth", type=int, default=3, help="package depth (default 3: freqcap.adapters.feast)")
    parser.add_argument("--mermaid", action="store_true", help="print a Mermaid flowchart")
    args = parser.parse_args(argv)
    edges = package_edges(Path(args.src), args.depth)
    if args.mermaid:
        print("flowchart TD")
        for (a, b), n in sorted(edges.items()):
            print(
                f"  {a.replace('.', '_')}[{a.removeprefix('freqcap.')}] -->|{n}| {b.replace('.', '_')}[{b.removeprefix('freqcap.')}]"
            )
        return 0
    upward = [(a, b, n) for (a, b), n in edges.items() if None not in (_rank(a), _rank(b)) and _rank(a) > _rank(b)]
    packages = sorted({x for e in edges for x in e})
    print(f"{len(packages)} packages, {len(edges)} package-to-package dependencies\n")
    for a in packages:
        targets = sorted((b, n) for (x, b), n in edges.items() if x == a)
        if targets:
            print(f"{a}\n    -> " + ", ".join(f"{b.removeprefix('freqcap.')} ({n})" for b, n in targets))
    found = cycles(edges)
    print(f"\ncycles between packages: {len(found)}")
    for comp in found:
        print("    " + " <-> ".join(comp))
    print(f"imports that run upward through the layers: {len(upward)}")
    for a, b, n in sorted(upward):
        print(f"    {a} -> {b} ({n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
