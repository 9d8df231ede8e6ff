-- Shared terminals: which process each terminal shows and who owns it, so the server finds
-- them again after a restart (their output history lives in the engine's shims).
CREATE TABLE terminals (
    id              TEXT    PRIMARY KEY,
    container_id    TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('attach', 'exec')),
    exec_id         TEXT,
    owner_token_id  INTEGER NOT NULL,
    owner_name      TEXT    NOT NULL,
    created_at      TEXT    NOT NULL
);

-- Share links: access to one terminal, as viewer or writer, until they expire or are revoked.
-- Only a SHA-256 of each link's secret is stored.
CREATE TABLE share_links (
    id           TEXT    PRIMARY KEY,
    terminal_id  TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'writer')),
    created_by   INTEGER NOT NULL,
    created_at   TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    revoked_at   TEXT
);
CREATE INDEX share_links_by_terminal ON share_links (terminal_id);
