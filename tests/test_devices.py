"""Devices and seats (SPEC §6)."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from agenthuman_local import keys
from agenthuman_local.devices import Device, DevicePool, probe_devices
from agenthuman_local.errors import NoCapacity
from tests.conftest import MakeClient


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


class FakeCuda:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def is_available(self) -> bool:
        return bool(self.names)

    def device_count(self) -> int:
        return len(self.names)

    def get_device_name(self, index: int) -> str:
        return self.names[index]


def fake_torch(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=FakeCuda(names)))


def test_probe_lists_every_gpu_and_keeps_the_cpu_listed_without_seats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_torch(monkeypatch, ["NVIDIA H100", "NVIDIA H100"])
    devices = probe_devices(use_cuda=True, cuda_sessions=16, cpu_sessions=2)
    assert [(d.name, d.kind, d.label, d.capacity) for d in devices] == [
        ("cuda:0", "cuda", "NVIDIA H100", 16),
        ("cuda:1", "cuda", "NVIDIA H100", 16),
        ("cpu", "cpu", "CPU", 0),
    ]


def test_probe_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch, [])
    assert [d.name for d in probe_devices(use_cuda=True, cuda_sessions=16, cpu_sessions=2)] == [
        "cpu"
    ]
    # GPUs configured with no seats leave the sessions to the CPU.
    fake_torch(monkeypatch, ["GPU"])
    devices = probe_devices(use_cuda=True, cuda_sessions=0, cpu_sessions=2)
    assert [(d.name, d.capacity) for d in devices] == [("cuda:0", 0), ("cpu", 2)]


def test_a_broken_cuda_install_does_not_stop_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(FakeCuda):
        def device_count(self) -> int:
            raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=Broken(["GPU"])))
    devices = probe_devices(use_cuda=True, cuda_sessions=16, cpu_sessions=2)
    assert [(d.name, d.capacity) for d in devices] == [("cpu", 2)]


async def test_the_server_starts_before_the_probe_ends(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_torch(monkeypatch, ["NVIDIA H100"])
    api = await make_client(devices__use_cuda=True)
    pool = api.app[keys.devices_key]
    for _ in range(100):
        if pool.ready:
            break
        await asyncio.sleep(0.01)
    health = await api.json("GET", "/healthz")
    assert [d["name"] for d in health["devices"]] == ["cuda:0", "cpu"]
    sid = (await api.create_session())["session_id"]
    await api.start_session(sid)
    device = pool.device_of(sid)
    assert device is not None and device.name == "cuda:0"
