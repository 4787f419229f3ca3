"""The database schema: numbered migrations, applied in order by `store.Store.open`.

Migration n (1-based) brings `PRAGMA user_version` from n-1 to n. Append; never edit one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE accounts (
            account_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL)""",
        """CREATE TABLE api_keys (
            key_hash TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            created_at REAL NOT NULL,
            revoked_at REAL)""",
        "CREATE INDEX api_keys_by_prefix ON api_keys(prefix)",
        """CREATE TABLE avatars (
            avatar_id TEXT PRIMARY KEY,
            account_id TEXT REFERENCES accounts(account_id),
            kind TEXT NOT NULL CHECK (kind IN ('procedural', 'photo')),
            name TEXT NOT NULL,
            tags TEXT NOT NULL,
            is_public INTEGER NOT NULL,
            created_at REAL NOT NULL,
            image_path TEXT,
            preview_path TEXT,
            rig TEXT)""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            avatar_id TEXT NOT NULL,
            avatar_name TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            viewer_token TEXT NOT NULL,
            aspect_ratio TEXT NOT NULL,
            video_width INTEGER NOT NULL,
            video_height INTEGER NOT NULL,
            fps INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            daily_room TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            expiration REAL,
            end_reason TEXT,
            device TEXT,
            stats TEXT NOT NULL)""",
        "CREATE INDEX sessions_by_account ON sessions(account_id, session_id)",
    ),
    # 2: avatars.kind may be 'plugin' (SPEC §9). SQLite cannot alter a CHECK, so the table is
    # rebuilt and its rows copied (no index is on it and no table references it); plug-in rows
    # written as 'procedural' before (ids avat_plugin_…, `rig` naming the plug-in) become 'plugin'.
    (
        """CREATE TABLE avatars_v2 (
            avatar_id TEXT PRIMARY KEY,
            account_id TEXT REFERENCES accounts(account_id),
            kind TEXT NOT NULL CHECK (kind IN ('procedural', 'photo', 'plugin')),
            name TEXT NOT NULL,
            tags TEXT NOT NULL,
            is_public INTEGER NOT NULL,
            created_at REAL NOT NULL,
            image_path TEXT,
            preview_path TEXT,
            rig TEXT)""",
        """INSERT INTO avatars_v2 (avatar_id, account_id, kind, name, tags, is_public,
                created_at, image_path, preview_path, rig)
            SELECT avatar_id, account_id,
                CASE WHEN avatar_id LIKE 'avat\\_plugin\\_%' ESCAPE '\\'
                        AND json_extract(rig, '$.plugin') IS NOT NULL
                    THEN 'plugin' ELSE kind END,
                name, tags, is_public, created_at, image_path, preview_path, rig
            FROM avatars""",
        "DROP TABLE avatars",
        "ALTER TABLE avatars_v2 RENAME TO avatars",
    ),
    # 3: photo rigs move to version 2 (the face mesh, SPEC §9). The rig stays in avatars.rig
    # (its version in the JSON); a new table records each re-rig attempt from the stored image,
    # so an avatar the new detector refuses keeps its old rig and is not retried at every start.
    (
        """CREATE TABLE rig_updates (
            avatar_id TEXT PRIMARY KEY,
            tried_version INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            at REAL NOT NULL)""",
    ),
    # 4: viewer tokens are no longer stored (issue 12): each is derived from the session id
    # under the data folder's viewer secret (`ids.viewer_token`), so a copy of the database
    # lets no one watch a session. Existing sessions get derived URLs like new ones.
    ("ALTER TABLE sessions DROP COLUMN viewer_token",),
)
