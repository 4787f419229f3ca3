"""The devices sessions render on (SPEC §6): what the machine has, and who holds a seat where.

At start-up the pool lists every CUDA GPU torch sees (unless `devices.use_cuda` is false) and the
CPU. Probing CUDA imports torch, which takes seconds, so `app.py` runs `probe_devices` on a thread
after the server is already listening; until then `ready` is False and starts answer `try_again`.
A start leases a seat on the least-loaded GPU; the CPU serves only when there is no GPU, so with
a GPU present the CPU is listed with capacity 0. The only module besides the engine that imports
torch, and only inside `probe_devices`.

Capacity is counted in cost units (issue 12): 1 unit = one 1280×720 session at 25 fps, and a
session costs its pixels × fps in units (`cost_units`: 960×720@25 is 0.75, 1920×1080@30 is 2.7).
A start leases the session's default size; its first `session.init` re-leases its real size on
the same device (`relet`), which is refused when it no longer fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agenthuman_local.errors import NoCapacity

log = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying a start when every seat is taken.
NO_CAPACITY_RETRY_AFTER_S = 5
# One cost unit: a 1280×720 session at 25 fps.
UNIT_PIXELS_PER_S = 1280 * 720 * 25
_EPSILON = 1e-9


def cost_units(width: int, height: int, fps: int) -> float:
    """What a session of this size and frame rate costs, in units of 1280×720@25."""
    return width * height * fps / UNIT_PIXELS_PER_S


@dataclass
class Device:
    name: str  # torch device string: "cuda:0", "cpu"
    kind: str  # "cuda" or "cpu"
    label: str  # what the hardware calls itself, e.g. "NVIDIA H100 80GB HBM3"
    capacity: int  # cost units (1 = a 1280×720@25 session)
    sessions: dict[str, float] = field(default_factory=dict)  # session id → its cost in units

    @property
    def load(self) -> float:
        """Units leased."""
        return sum(self.sessions.values())

    def fits(self, cost: float, *, without: str | None = None) -> bool:
        held = self.sessions.get(without, 0.0) if without is not None else 0.0
        return self.load - held + cost <= self.capacity + _EPSILON

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "sessions": len(self.sessions),
            "capacity": self.capacity,
            "load": round(self.load, 3),
        }


def probe_devices(*, use_cuda: bool, cuda_sessions: int, cpu_sessions: int) -> list[Device]:
    """The machine's devices with their capacities. Blocking (imports torch when use_cuda)."""
    gpus: list[Device] = []
    if use_cuda:
        try:
            import torch

            if torch.cuda.is_available():
                for index in range(torch.cuda.device_count()):
                    gpus.append(
                        Device(
                            f"cuda:{index}",
                            "cuda",
                            torch.cuda.get_device_name(index),
                            cuda_sessions,
                        )
                    )
        except Exception:  # a broken CUDA install must not stop the server: fall back to CPU
            log.exception("CUDA probe failed; using the CPU only")
            gpus = []
    usable_gpu = any(g.capacity > 0 for g in gpus)
    cpu = Device("cpu", "cpu", "CPU", 0 if usable_gpu else cpu_sessions)
    return [*gpus, cpu]


class DevicePool:
    """Seats on devices, leased per session. Single-threaded: call from the event loop only."""

    def __init__(self, devices: list[Device] | None = None) -> None:
        self._devices: list[Device] = list(devices or [])
        self.ready = devices is not None

    def set_devices(self, devices: list[Device]) -> None:
        self._devices = list(devices)
        self.ready = True

    @property
    def devices(self) -> list[Device]:
        return list(self._devices)

    def concurrency(self) -> dict[str, int]:
        """`usage.concurrency` (SPEC §3): sessions holding a seat; capacity and what is free, in
        units (so `available` = how many more 1280×720@25 sessions fit)."""
        current = sum(len(d.sessions) for d in self._devices)
        maximum = sum(d.capacity for d in self._devices)
        free = sum(max(0.0, d.capacity - d.load) for d in self._devices)
        return {"current": current, "max": maximum, "available": int(free + _EPSILON)}

    def device_of(self, session_id: str) -> Device | None:
        return next((d for d in self._devices if session_id in d.sessions), None)

    def _full(self) -> NoCapacity:
        return NoCapacity(
            details={"capacity": self.concurrency()},
            headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)},
        )

    def lease(self, session_id: str, cost: float = 1.0) -> Device:
        """`cost` units for `session_id` (the same device if it already holds one); NoCapacity
        if no device has them free."""
        held = self.device_of(session_id)
        if held is not None:
            return held
        free = [d for d in self._devices if d.capacity > 0 and d.fits(cost)]
        if not free:
            raise self._full()
        # Least loaded first (by share of capacity), then the lowest index.
        device = min(free, key=lambda d: d.load / d.capacity)
        device.sessions[session_id] = cost
        return device

    def relet(self, session_id: str, cost: float) -> Device:
        """The session's lease becomes `cost` units on the device it holds (its size is now
        known); NoCapacity, and the old lease kept, when that no longer fits."""
        device = self.device_of(session_id)
        if device is None:
            return self.lease(session_id, cost)
        if not device.fits(cost, without=session_id):
            raise self._full()
        device.sessions[session_id] = cost
        return device

    def release(self, session_id: str) -> None:
        """Give the seat back; a no-op if the session holds none."""
        for device in self._devices:
            device.sessions.pop(session_id, None)
