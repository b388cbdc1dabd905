"""The baseline of bench/grpc_relay.py (a grpc.aio relay with SQLite) delivers what its open-loop load
sends, acked after the commit and stored encrypted: a small run on loopback."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cluster_layout() -> str:
    """No ttgen cluster here: one layout is enough."""
    return "split"


def _relay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ttgen_bench_grpc_relay", ROOT / "bench" / "grpc_relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_relay_acks_and_delivers_every_message_once(tmp_path: Path) -> None:
    relay = _relay()
    opts = argparse.Namespace(rate=10.0, duration=1.5, drain=10.0, client_procs=2, no_encrypt=False)
    row = relay.one_run(opts, 6, tmp_path)
    assert row["sent"] == 6 * 15
    assert row["acked"] == row["delivered"] == row["sent"] and row["duplicates"] == 0
    assert row["e2e_p50_ms"] is not None and row["e2e_p99_ms"] >= row["e2e_p50_ms"] > 0
    assert row["server_cpu_us_per_msg"] > 0 and row["client_cpu_us_per_msg"] > 0


def test_the_store_commits_in_order_and_seals_bodies(tmp_path: Path) -> None:
    relay = _relay()
    store = relay.Store(tmp_path / "r.db", encrypt=True)
    ids = store.commit([(1, 2, b"hello"), (2, 1, b"world")])
    assert ids == [1, 2] and store.commit([(1, 2, b"again")]) == [3]
    rows = store.db.execute("SELECT id, from_id, to_id, body FROM message ORDER BY id").fetchall()
    assert [(i, f, t) for i, f, t, _b in rows] == [(1, 1, 2), (2, 2, 1), (3, 1, 2)]
    assert all(b"hello" not in body and len(body) > 12 + 16 for *_r, body in rows)  # nonce, sealed, tag
