"""Every output of a live session: where its published frames go (SPEC §8, §7, §10).

- `base`: the `Sink` protocol, `PublishedFrame`, and `QueuedSink`, the one drop-oldest queue;
- `socket`: the session socket's `output` (JPEG or RGB24 frames, PCM audio);
- `viewer`: the local viewer's `ViewerHub`, and `ViewerOutput`/`ViewerSink` that feed it;
- `recording`: the fragmented-MP4 `Recorder` and its `RecorderSink`;
- `local`: the local outputs' factories (recording, viewer, metrics) and `MetricsOutput`;
- `daily`: the avatar as a participant of a Daily room (the only module importing `daily`),
  and `DailySink`; `daily_room`: its room semantics; `daily_rest`: rooms and tokens over
  Daily's REST API; `daily_rooms`: Daily per session (room choice, the Daily output factory,
  room hooks).

Nothing here imports the session layer at run time (type hints only).
"""
