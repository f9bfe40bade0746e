-- Transcript share links: a public, revocable URL per token. Only the
-- token's SHA-256 is stored (the token itself is shown once); token_tail
-- (its last 8 characters) is what events and lists show.
-- Keep in step with ../sqlite/0005_transcript_shares.sql.

CREATE TABLE transcript_shares (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    call_id        TEXT NOT NULL,
    token_hash     TEXT NOT NULL,
    token_tail     TEXT NOT NULL,
    ttl_hours      BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    views          BIGINT NOT NULL DEFAULT 0,
    last_viewed_at BIGINT
);
CREATE UNIQUE INDEX transcript_shares_token ON transcript_shares (token_hash);
CREATE INDEX transcript_shares_call ON transcript_shares (tenant, call_id, created_at);
