"""The service table: class references load, missing modules are reported as unavailable, not crashes."""

from __future__ import annotations

import pytest

from runtime.cluster.probe import ProbeService
from runtime.services.registry_table import (
    SERVICE_TABLE,
    BadServiceClass,
    ServiceRef,
    ServiceUnavailable,
    load_service_class,
    start_rank,
)


def test_load_a_service_class() -> None:
    assert load_service_class("runtime.cluster.probe:ProbeService") is ProbeService


def test_missing_module_is_unavailable() -> None:
    with pytest.raises(ServiceUnavailable, match=r"runtime\.services\.no_such_service"):
        load_service_class("runtime.services.no_such_service:Thing")
    with pytest.raises(ServiceUnavailable, match="no attribute"):
        load_service_class("runtime.cluster.probe:NoSuchClass")


@pytest.mark.parametrize(
    "ref", ["nocolon", "a.b:", ":C", "a-b:C", "a:C.D", "runtime.cluster.probe:ProbeStartFailed"]
)
def test_bad_references(ref: str) -> None:
    with pytest.raises(BadServiceClass):
        load_service_class(ref)


def test_every_table_entry_is_well_formed() -> None:
    for ref in SERVICE_TABLE.values():
        ServiceRef.parse(ref)
    assert start_rank("biz") < start_rank("msg") < start_rank("nosuch")
