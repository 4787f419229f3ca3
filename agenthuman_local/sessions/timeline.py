"""A session's timeline: one JSON line per published frame and per event (SPEC §10).

Frame lines have exactly `t, frame_index, pts_ms, audio_start, audio_end, render_ms,
queue_frames, late`; event lines are `{"t": "event", "pts_ms", "type", …the event's fields}`, in
publication order. When a path is given, lines are appended to `recordings/<id>/timeline.jsonl`
through a line-buffered file, so a killed process leaves every line written so far; without one
they are kept in memory (tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any

from agenthuman_local.transports.base import PublishedFrame

log = logging.getLogger(__name__)

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


def stats_from_timeline(path: Path) -> dict[str, int | None] | None:
    """SPEC §3 `stats` as far as a timeline file shows them (None without a file): for sessions
    a killed process left, whose runner never saved its counters.

    Frames and late frames are counted; dropped frames are the gaps in `frame_index`; audio
    received is the sum of `agent.speak.confirmed` (16 kHz samples); audio played is each
    ended utterance's `played_ms`, plus, for one still playing when the process died, the
    frames published since its `agent.speak_started`. First-frame latency is not in a timeline.
    A torn last line (the kill came mid-write) is skipped.
    """
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return None
    frames = late = last_index = 0
    received_samples = played_ms = 0
    playing_since: int | None = None  # pts_ms of the unended utterance's speak_started
    playing_samples = 0
    with handle:
        for text in handle:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if line.get("t") == "frame":
                frames += 1
                late += bool(line.get("late"))
                last_index = max(last_index, int(line.get("frame_index", 0)) + 1)
                if playing_since is not None and line.get("pts_ms", 0) >= playing_since:
                    playing_samples += int(line.get("audio_end", 0)) - int(
                        line.get("audio_start", 0)
                    )
                continue
            kind = line.get("type")
            if kind == "agent.speak.confirmed":
                received_samples += int(line.get("audio_samples", 0))
            elif kind == "agent.speak_started":
                playing_since, playing_samples = int(line.get("pts_ms", 0)), 0
            elif kind == "agent.speak_ended":
                played_ms += int(line.get("played_ms", 0))
                playing_since, playing_samples = None, 0
    if playing_since is not None:
        played_ms += playing_samples // 16
    return {
        "frames_published": frames,
        "frames_late": late,
        "frames_dropped": max(0, last_index - frames),
        "audio_ms_received": received_samples // 16,
        "audio_ms_played": played_ms,
        "first_frame_latency_ms": None,
    }


async def backfill_stats(
    paths: Mapping[str, Path],
    save: Callable[[str, Mapping[str, int | None]], Awaitable[None]],
) -> int:
    """For each session id → its timeline path, read the stats on a worker thread and `save`
    them (sessions ended `server_restart`; run in the background after start-up so a long
    timeline never delays the server). → how many sessions got stats."""
    done = 0
    for session_id, path in paths.items():
        try:
            stats = await asyncio.to_thread(stats_from_timeline, path)
            if stats is not None:
                await save(session_id, stats)
                done += 1
        except Exception:  # one unreadable timeline must not stop the others
            log.exception("session %s: could not read its stats from %s", session_id, path)
    if done:
        log.info("stats of %d restarted session(s) read from their timelines", done)
    return done
