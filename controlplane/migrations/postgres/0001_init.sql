-- Initial schema (PostgreSQL). Times are milliseconds since the Unix epoch (UTC),
-- flags are 0/1 integers, so the same queries run on SQLite and PostgreSQL.
-- Keep in step with ../sqlite/0001_init.sql.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    username           TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    role               TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    tokens_valid_after BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX users_username ON users (username);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE calls (
    call_id             TEXT PRIMARY KEY,
    tenant              TEXT NOT NULL,
    requested_by        TEXT NOT NULL,
    phone               TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    email               TEXT NOT NULL,
    system_prompt       TEXT NOT NULL,
    ai_api_key          TEXT NOT NULL,
    model               TEXT NOT NULL,
    voice               TEXT NOT NULL,
    language            TEXT NOT NULL,
    max_seconds         BIGINT NOT NULL,
    retries             BIGINT NOT NULL,
    retry_delay_minutes BIGINT NOT NULL,
    trunk_id            TEXT,
    status              TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    scheduled_for       BIGINT,
    next_attempt_at     BIGINT,
    dispatched_at       BIGINT,
    answered_at         BIGINT,
    ended_at            BIGINT,
    ended_reason        TEXT NOT NULL DEFAULT '',
    duration_sec        BIGINT NOT NULL DEFAULT 0,
    transcript_path     TEXT NOT NULL DEFAULT '',
    error_detail        TEXT NOT NULL DEFAULT '',
    attempt             BIGINT NOT NULL DEFAULT 0,
    retries_left        BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX calls_tenant_created ON calls (tenant, created_at DESC, call_id DESC);
CREATE INDEX calls_tenant_status ON calls (tenant, status, created_at DESC, call_id DESC);
CREATE INDEX calls_due ON calls (status, next_attempt_at);

CREATE TABLE whitelist (
    tenant   TEXT NOT NULL,
    phone    TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (tenant, phone)
);

CREATE TABLE numbers (
    tenant           TEXT NOT NULL,
    number           TEXT NOT NULL,
    name             TEXT NOT NULL,
    mode             TEXT NOT NULL,
    voice            TEXT NOT NULL,
    language         TEXT NOT NULL,
    model            TEXT NOT NULL,
    save_transcripts BIGINT NOT NULL,
    max_duration_sec BIGINT NOT NULL,
    visibility       TEXT NOT NULL,
    system_prompt    TEXT NOT NULL,
    ai_api_key       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant, number)
);

CREATE TABLE trunks (
    id                   TEXT PRIMARY KEY,
    tenant               TEXT NOT NULL,
    name                 TEXT NOT NULL,
    host                 TEXT NOT NULL,
    port                 BIGINT NOT NULL,
    transport            TEXT NOT NULL,
    username             TEXT NOT NULL,
    password             TEXT NOT NULL,
    from_user            TEXT NOT NULL,
    from_domain          TEXT NOT NULL,
    max_concurrent_calls BIGINT NOT NULL,
    calls_per_second     BIGINT NOT NULL,
    is_default           BIGINT NOT NULL,
    register             BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX trunks_tenant ON trunks (tenant, created_at);

CREATE TABLE inbound_routes (
    id          BIGSERIAL PRIMARY KEY,
    tenant      TEXT NOT NULL,
    position    BIGINT NOT NULL,
    did         TEXT NOT NULL,
    from_number TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX inbound_routes_key ON inbound_routes (tenant, did, from_number);
CREATE INDEX inbound_routes_order ON inbound_routes (tenant, position);

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    secret        TEXT NOT NULL,
    active        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    last_fired_at BIGINT,
    failures      BIGINT NOT NULL DEFAULT 0,
    paused_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX webhooks_tenant ON webhooks (tenant, created_at);

CREATE TABLE transcripts (
    call_id       TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    caller_source TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    answered_at   BIGINT,
    ended_at      BIGINT,
    mtime         BIGINT NOT NULL,
    duration_sec  BIGINT NOT NULL,
    rule          TEXT NOT NULL,
    caller        TEXT,
    phone         TEXT,
    number        TEXT,
    display_name  TEXT,
    requested_by  TEXT,
    email         TEXT,
    outcome       TEXT NOT NULL,
    voice         TEXT,
    language      TEXT,
    model         TEXT,
    trunk_id      TEXT,
    answered      BIGINT,
    error_detail  TEXT,
    tokens_total  BIGINT NOT NULL,
    tokens_prompt BIGINT,
    input_turns   BIGINT NOT NULL,
    output_turns  BIGINT NOT NULL,
    turn_count    BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    source        TEXT,
    file          TEXT NOT NULL,
    turns         TEXT NOT NULL,
    search_text   TEXT NOT NULL
);
CREATE INDEX transcripts_tenant_started ON transcripts (tenant, started_at DESC, call_id DESC);
