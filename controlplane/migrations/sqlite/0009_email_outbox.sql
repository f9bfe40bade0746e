-- The transcript + outcome email of every outbound AI call: a durable
-- outbox. The row is written in the same transaction that records the
-- call's terminal state (and its transcript), so a call that ended has its
-- email queued and a rolled-back end queues nothing. A sender task (only
-- when CODEB_SMTP_URL is set) claims due rows under a lease, like the
-- webhook workers; without it the rows stay queued.
-- Keep in step with ../postgres/0009_email_outbox.sql.

-- id: fixed at insert, the Message-ID's local part, so a retry sends the
-- same message. state: queued (due at next_attempt_at, or leased until
-- lease_until), sent or failed (last_error says why). One email per call.
CREATE TABLE email_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    lease_token     BIGINT,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE UNIQUE INDEX email_outbox_id ON email_outbox (id);
CREATE UNIQUE INDEX email_outbox_call ON email_outbox (call_id);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at, seq) WHERE state = 'queued';
CREATE INDEX email_outbox_tenant ON email_outbox (tenant, seq);
