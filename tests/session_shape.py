"""The session object's shape, shared by the session API tests (no tests here): the fields every
session answer carries and the timestamp format."""

from __future__ import annotations

import re

SESSION_FIELDS = {
    "session_id",
    "avatar",
    "session_type",
    "status",
    "created_at",
    "started_at",
    "ended_at",
    "expiration",
    "duration",
    "aspect_ratio",
    "video",
    "daily_room",
    "metadata",
    "end_reason",
    "viewer_url",
    "stats",
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
