"""The stream worker's compiled helpers: every one is built here (under CI it must be), the build hook compiles the
modules the loader knows, and the pending-log packer in C writes what the Python one writes."""

from __future__ import annotations

import marshal
import os
import random
import re
from pathlib import Path

import pytest

from freqcap.adapters.native import MODULES, load, status
from freqcap.adapters.stream.state import _unpack_keys, pack_pending, unpack_pending
from freqcap.domain.stream.buckets import PairCounts

REPO = Path(__file__).resolve().parents[3]


def test_the_build_hook_compiles_the_modules_the_loader_knows():
    text = (REPO / "hatch_build.py").read_text()
    sources = re.findall(r'"src/(freqcap/[\w/]+)\.c"', text)
    assert [s.replace("/", ".") for s in sources] == list(MODULES)
    for source in sources:
        assert (REPO / "src" / f"{source}.c").is_file()


def test_every_compiled_helper_is_built_in_this_install():
    if status() != "native" and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"compiled helpers: {status()} (no C compiler when the package was installed)")
    assert status() == "native", [name for name in MODULES if load(name) is None]


def test_freqcap_native_off_turns_them_off(monkeypatch):
    monkeypatch.setenv("FREQCAP_NATIVE", "off")
    assert status() == "python" and all(load(name) is None for name in MODULES)


@pytest.fixture(scope="module")
def packer(compiled):
    return compiled("freqcap.adapters.stream._pending")


def _states(rng: random.Random, n: int) -> dict[tuple[str, str, str], PairCounts]:
    out = {}
    for i in range(n):
        pair = PairCounts()
        for kind in "icv":
            for _ in range(rng.choice([0, 0, 1, 2, 7])):
                pair.buckets[kind][1_790_000_000 + 60 * rng.randrange(1000)] = rng.choice([1, 2, 0, 1 << 40])
        pair.last_imp_us = rng.choice([None, 1_790_000_000_000_000 + rng.randrange(10**9)])
        if i % 50 == 7:  # ints on the edges of marshal's int forms, and what only CPython's writer takes
            pair.buckets["i"][-(1 << 31)] = rng.choice([(1 << 31) - 1, 1 << 31, -(1 << 31) - 1, -5, 1 << 70, True])
            pair.last_imp_us = rng.choice([-(1 << 63), (1 << 63) - 1, -1_500_001, 1 << 64, (1 << 15) - 1, 1 << 30])
        level = rng.choice(["advertiser", "campaign", "ad"])
        out[(level, f"u{i % 50}-é", f"e:{i}")] = pair  # users of several pairs; non-ASCII and ':' in ids
    return out


def test_the_c_packer_writes_the_python_packers_records(packer):
    rng = random.Random(3)
    base = "p:{p3}"
    states = _states(rng, 800)
    keys = list(states)[::-1]
    c_names: dict = {}
    blob = packer.pack_pending(f"{base}:s:", keys, states, c_names)
    reference = pack_pending(base, ((k, states[k]) for k in keys), {})
    # The same names, in the same order (the forget script reads them), and the states as CPython's marshal writes
    # them, byte for byte; they load to the same values.
    c_items, py_items = _unpack_keys(blob), _unpack_keys(reference)
    assert c_items[::2] == py_items[::2]
    assert blob == reference
    assert [marshal.loads(s) for s in c_items[1::2]] == [marshal.loads(s) for s in py_items[1::2]]
    for key, state in zip(keys, c_items[1::2], strict=True):
        assert state == marshal.dumps((states[key].buckets, states[key].last_imp_us), 2)
    assert unpack_pending(blob, base) == {k: (p.buckets, p.last_imp_us) for k, p in states.items()}
    # Its name memo is the Python one's: either can continue from it.
    again = pack_pending(base, ((k, states[k]) for k in keys), dict(c_names))
    assert unpack_pending(again, base) == unpack_pending(blob, base)
    assert packer.pack_pending(f"{base}:s:", [], states, {}) == b""


def test_the_c_packer_rejects_what_it_cannot_pack(packer):
    states = {("ad", "u", "e"): PairCounts()}
    with pytest.raises(KeyError):
        packer.pack_pending("b:s:", [("ad", "u", "missing")], states, {})
    with pytest.raises(TypeError):
        packer.pack_pending("b:s:", [("ad", "u")], {("ad", "u"): PairCounts()}, {})
    with pytest.raises(TypeError):
        packer.pack_pending("b:s:", [("ad", b"u", "e")], {("ad", b"u", "e"): PairCounts()}, {})
    with pytest.raises(TypeError):
        packer.pack_pending("b:s:", ("not", "a list"), states, {})
