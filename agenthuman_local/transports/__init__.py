"""Per-session media outputs that take raw frames (RGB uint8 HxWx3 + PCM s16le + pts).

- `daily`: the avatar as a participant of a Daily room (the only module importing `daily`).
- `daily_rest`: rooms and meeting tokens through Daily's REST API.
- `viewer`: the local browser viewer's fan-out hub.

The recorder lives in `agenthuman_local.recording`. Nothing here is imported at package import
time, so the package works without daily-python or PyAV loaded.
"""
