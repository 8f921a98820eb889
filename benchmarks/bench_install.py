"""Install size: the wheel, a full install (the `all` extra) and a serving-only install (the base dependencies).

Each install is a fresh virtualenv in a temporary directory with the locked versions (`uv export --frozen
--no-dev --no-hashes --no-emit-project [--extra all]`) and the wheel; sizes are `du` of the whole venv.

    .venv/bin/python benchmarks/bench_install.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_result

REPO = Path(__file__).resolve().parents[1]
PIPELINE = ("airflow", "mlflow", "great_expectations", "evidently", "xgboost", "matplotlib")


def _uv(*args: str, cwd: Path = REPO) -> str:
    uv = shutil.which("uv") or sys.exit("uv not found (make setup installs it)")
    return subprocess.run([uv, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _du(path: Path) -> tuple[int, str]:
    kib = int(subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])
    human = subprocess.run(["du", "-sh", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]
    return kib, human


def _largest(venv: Path, n: int = 8) -> list[tuple[str, int]]:
    (site,) = venv.glob("lib/python*/site-packages")
    sizes = []
    for entry in site.iterdir():
        if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
            sizes.append((entry.name, _du(entry)[0]))
    return sorted(sizes, key=lambda s: -s[1])[:n]


def _install(root: Path, wheel: Path, extras: tuple[str, ...]) -> dict:
    venv = root / "venv"
    extra_args = [a for e in extras for a in ("--extra", e)]
    requirements = root / "requirements.txt"
    requirements.write_text(_uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", *extra_args))
    _uv("venv", "--quiet", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", str(venv), cwd=root)
    started = time.perf_counter()
    spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    _uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements), spec, cwd=root)
    seconds = time.perf_counter() - started
    dists = json.loads(_uv("pip", "list", "--format", "json", "--python", str(venv / "bin" / "python"), cwd=root))
    probe = f"import importlib.util as u; print([m for m in {PIPELINE!r} if u.find_spec(m)])"
    present = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
    kib, human = _du(venv)
    return {
        "extras": list(extras),
        "distributions": len(dists),
        "venv_kib": kib,
        "venv_du_sh": human,
        "install_seconds_warm_cache": round(seconds, 1),
        "pipeline_modules_present": present,
        "largest_packages_kib": _largest(venv),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="freqcap-install-") as tmp:
        tmp_path = Path(tmp)
        dist = tmp_path / "dist"
        _uv("build", "--wheel", "--out-dir", str(dist), str(REPO), cwd=tmp_path)
        (wheel,) = dist.glob("freqcap-*.whl")
        result = {"wheel": wheel.name, "wheel_bytes": wheel.stat().st_size}
        for name, extras in (("full", ("all",)), ("serving", ())):
            root = tmp_path / name
            root.mkdir()
            result[name] = _install(root, wheel, extras)

    full, serving = result["full"], result["serving"]
    rows = [
        [
            label,
            "`pip install freqcap" + ("[all]`" if r["extras"] else "`"),
            r["distributions"],
            r["venv_du_sh"],
            f"{r['venv_kib'] / 1024:,.0f}",
            r["install_seconds_warm_cache"],
            r["pipeline_modules_present"],
        ]
        for label, r in (("full", full), ("serving only", serving))
    ]
    body = (
        f"Wheel `{result['wheel']}`: {result['wheel_bytes'] / 1024:,.0f} KiB (`uv build --wheel`).\n\n"
        "Each install: a fresh virtualenv (`uv venv`), then `uv pip install -r requirements.txt <wheel>[all]` (full) "
        "or `<wheel>` (serving only), where requirements.txt is `uv export --frozen --no-dev --no-hashes "
        "--no-emit-project` (`--extra all` for the full install): the locked versions. Sized with `du -sh` / "
        "`du -sk` of the venv. "
        "Install time is with uv's cache warm (packages hard-linked from it).\n\n"
        + table(
            ["install", "command", "distributions", "du -sh", "MiB", "install s", "pipeline modules importable"],
            rows,
        )
        + f"\n\nThe serving-only install is {serving['venv_kib'] / full['venv_kib']:.0%} of the full one "
        f"({full['distributions'] - serving['distributions']} distributions fewer).\n\n"
        "Largest packages (KiB, `du -sk` of the site-packages directory):\n\n"
        + table(
            ["full", "KiB", "serving only", "KiB"],
            [
                [a[0], f"{a[1]:,}", b[0], f"{b[1]:,}"]
                for a, b in zip(full["largest_packages_kib"], serving["largest_packages_kib"], strict=True)
            ],
        )
    )
    write_result("install", "Install size: wheel, full and serving-only environments", body)
    (RESULTS / "install.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
