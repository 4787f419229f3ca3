"""The devices sessions render on (SPEC §6): what the machine has, and who holds a seat where.

At start-up the pool lists every CUDA GPU torch sees (unless `devices.use_cuda` is false) and the
CPU. Probing CUDA imports torch, which takes seconds, so `app.py` runs `probe_devices` on a thread
after the server is already listening; until then `ready` is False and starts answer `try_again`.
A start leases a seat on the least-loaded GPU; the CPU serves only when there is no GPU, so with
a GPU present the CPU is listed with capacity 0. The only module besides the engine that imports
torch, and only inside `probe_devices`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agenthuman_local.errors import NoCapacity

log = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying a start when every seat is taken.
NO_CAPACITY_RETRY_AFTER_S = 5


@dataclass
class Device:
    name: str  # torch device string: "cuda:0", "cpu"
    kind: str  # "cuda" or "cpu"
    label: str  # what the hardware calls itself, e.g. "NVIDIA H100 80GB HBM3"
    capacity: int  # concurrent sessions
    sessions: set[str] = field(default_factory=set)

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label,
            "sessions": len(self.sessions),
            "capacity": self.capacity,
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
        """`usage.concurrency` (SPEC §3): sessions holding a seat, total seats, free seats."""
        current = sum(len(d.sessions) for d in self._devices)
        maximum = sum(d.capacity for d in self._devices)
        return {"current": current, "max": maximum, "available": max(0, maximum - current)}

    def device_of(self, session_id: str) -> Device | None:
        return next((d for d in self._devices if session_id in d.sessions), None)

    def lease(self, session_id: str) -> Device:
        """A seat for `session_id` (the same one if it already holds one); NoCapacity if full."""
        held = self.device_of(session_id)
        if held is not None:
            return held
        free = [d for d in self._devices if len(d.sessions) < d.capacity]
        if not free:
            raise NoCapacity(
                details={"capacity": self.concurrency()},
                headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)},
            )
        # Least loaded first (by share of capacity), then the lowest index.
        device = min(free, key=lambda d: len(d.sessions) / d.capacity)
        device.sessions.add(session_id)
        return device

    def release(self, session_id: str) -> None:
        """Give the seat back; a no-op if the session holds none."""
        for device in self._devices:
            device.sessions.discard(session_id)
