"""Devices and seats (SPEC §6)."""

from __future__ import annotations

import pytest

from agenthuman_local.devices import Device, DevicePool, probe_devices
from agenthuman_local.errors import NoCapacity


def test_probe_without_cuda_lists_only_the_cpu() -> None:
    devices = probe_devices(use_cuda=False, cuda_sessions=16, cpu_sessions=3)
    assert [(d.name, d.kind, d.capacity) for d in devices] == [("cpu", "cpu", 3)]


def gpus(*capacities: int) -> list[Device]:
    return [Device(f"cuda:{i}", "cuda", "GPU", c) for i, c in enumerate(capacities)]


def test_least_loaded_gpu_first_and_never_the_cpu_beside_gpus() -> None:
    pool = DevicePool([*gpus(2, 2), Device("cpu", "cpu", "CPU", 0)])
    assert [pool.lease(f"s{i}").name for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(NoCapacity) as caught:
        pool.lease("s5")
    assert caught.value.details == {"capacity": {"current": 4, "max": 4, "available": 0}}
    assert caught.value.headers["Retry-After"]
    pool.release("s1")
    assert pool.lease("s6").name == "cuda:1"


def test_lease_is_per_session_and_release_is_idempotent() -> None:
    pool = DevicePool([Device("cpu", "cpu", "CPU", 2)])
    first = pool.lease("a")
    assert pool.lease("a") is first
    assert pool.concurrency() == {"current": 1, "max": 2, "available": 1}
    pool.release("a")
    pool.release("a")
    pool.release("never")
    assert pool.concurrency()["current"] == 0
    assert pool.device_of("a") is None


def test_a_pool_waiting_for_its_probe_is_not_ready() -> None:
    pool = DevicePool()
    assert not pool.ready
    with pytest.raises(NoCapacity):
        pool.lease("a")
    pool.set_devices([Device("cpu", "cpu", "CPU", 1)])
    assert pool.ready and pool.lease("a").name == "cpu"
