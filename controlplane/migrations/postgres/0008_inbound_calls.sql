-- Inbound calls to virtual numbers, answered by the number's AI persona.
-- They are not rows of `calls`: that table is the outbound AI call state
-- model (scheduler, retries, whitelist, `GET /v1/calls`, which the v1
-- spec defines as outbound only). The switch node assigns the call id
-- (`vnum` + 12 hex) and reports the call with an InboundCall event; the
-- row is written in the same transaction as that node's event cursor.
-- Keep in step with ../sqlite/0008_inbound_calls.sql.

CREATE TABLE inbound_calls (
    call_id          TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    -- The node that assigned the id and carries the call: only its events
    -- apply to the call.
    node_url         TEXT NOT NULL,
    -- The virtual number the call reached, the DID it was dialled on, the
    -- caller, and the trunk it came through (NULL: not reported).
    number           TEXT NOT NULL,
    did              TEXT NOT NULL,
    from_number      TEXT NOT NULL,
    trunk_id         TEXT,
    -- The number's settings when the call began (number_known = 0: the
    -- tenant had no such number then; name '' and no transcript saved).
    number_known     BIGINT NOT NULL,
    number_name      TEXT NOT NULL,
    save_transcripts BIGINT NOT NULL,
    -- Times: the InboundCall event, the 200 OK, the AI session up, the end.
    created_at       BIGINT NOT NULL,
    answered_at      BIGINT,
    answer_ms        BIGINT,
    started_at       BIGINT,
    ended_at         BIGINT,
    outcome          TEXT NOT NULL DEFAULT '',
    error_detail     TEXT NOT NULL DEFAULT '',
    answered         BIGINT NOT NULL DEFAULT 0,
    talk_sec         BIGINT NOT NULL DEFAULT 0,
    duration_sec     BIGINT NOT NULL DEFAULT 0,
    sip_status       BIGINT NOT NULL DEFAULT 0,
    input_turns      BIGINT NOT NULL DEFAULT 0,
    output_turns     BIGINT NOT NULL DEFAULT 0,
    tokens_in        BIGINT NOT NULL DEFAULT 0,
    tokens_out       BIGINT NOT NULL DEFAULT 0,
    transfers        BIGINT NOT NULL DEFAULT 0,
    transcript_path  TEXT NOT NULL DEFAULT '',
    updated_at       BIGINT NOT NULL
);
CREATE INDEX inbound_calls_tenant_created ON inbound_calls (tenant, created_at DESC, call_id DESC);
-- The calls still up on a node (ended_at IS NULL), for ending them when the
-- node is lost.
CREATE INDEX inbound_calls_node_live ON inbound_calls (node_url, ended_at);
