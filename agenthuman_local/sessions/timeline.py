"""A session's timeline: one JSON line per published frame and per event (SPEC §10).

Frame lines have exactly `t, frame_index, pts_ms, audio_start, audio_end, render_ms,
queue_frames, late`; event lines are `{"t": "event", "pts_ms", "type", …the event's fields}`, in
publication order. When a path is given, lines are appended to `recordings/<id>/timeline.jsonl`
through a line-buffered file, so a killed process leaves every line written so far; without one
they are kept in memory (tests).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import IO, Any

from agenthuman_local.transports.base import PublishedFrame

FRAME_KEYS = (
    "t",
    "frame_index",
    "pts_ms",
    "audio_start",
    "audio_end",
    "render_ms",
    "queue_frames",
    "late",
)


class Timeline:
    """Also a Sink, so the runner publishes frames to it like to any other output."""

    def __init__(self, path: Path | None = None, *, max_lines: int = 500_000) -> None:
        self.path = path
        # With a file the file is the record (an hour of frames is ~90k lines; memory would
        # pass the per-session budget); without one, the newest `max_lines` stay in memory.
        self.lines: deque[dict[str, Any]] = deque(maxlen=0 if path is not None else max_lines)
        self.frames = 0
        self.late = 0
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def _write(self, line: dict[str, Any]) -> None:
        self.lines.append(line)
        if self._file is not None:
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    async def publish(self, frame: PublishedFrame) -> None:
        self.frames += 1
        self.late += frame.late
        self._write(
            {
                "t": "frame",
                "frame_index": frame.frame_index,
                "pts_ms": frame.pts_ms,
                "audio_start": frame.audio_start,
                "audio_end": frame.audio_end,
                "render_ms": round(frame.render_ms, 3),
                "queue_frames": frame.queue_frames,
                "late": frame.late,
            }
        )

    def event(self, pts_ms: int, event: dict[str, Any]) -> None:
        line = {"t": "event", "pts_ms": pts_ms}
        line.update(event)
        self._write(line)

    def jsonl(self) -> str:
        """The in-memory lines (a timeline without a file)."""
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in self.lines)

    async def aclose(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
