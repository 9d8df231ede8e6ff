-- Access tokens: what every API call, page and WebSocket authenticates with until accounts exist.
-- Only a SHA-256 of each token is stored; the token itself is shown once, when it is created.
CREATE TABLE access_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin')),
    created_at  TEXT    NOT NULL,
    last_used_at TEXT,
    revoked_at  TEXT
);
