-- The switch link: dispatch bookkeeping on calls, the routing-config
-- version, event-stream cursors and transcript turns as they arrive.
-- Keep in step with ../sqlite/0007_switch_link.sql.

-- node_url: the switch node carrying (or being handed) the current attempt;
-- recorded before PlaceCall, so a dispatch interrupted by a crash is
-- repeated on the same node, whose idempotency makes that safe.
-- lease_until / lease_token: a dispatcher's claim on a `dispatching` call;
-- after lease_until another dispatcher may take it over.
ALTER TABLE calls ADD COLUMN node_url TEXT;
ALTER TABLE calls ADD COLUMN lease_until BIGINT;
ALTER TABLE calls ADD COLUMN lease_token BIGINT;
ALTER TABLE calls ADD COLUMN tokens_in BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN tokens_out BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN input_turns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN output_turns BIGINT NOT NULL DEFAULT 0;
CREATE INDEX calls_node_live ON calls (node_url, status);

-- One row: the version of the routing configuration pushed to switch
-- nodes. Every change to what the snapshot holds bumps it, in the same
-- transaction as the change (these triggers), so a version names exactly
-- one configuration.
CREATE TABLE config_version (
    id      BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 1);

CREATE FUNCTION bump_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER trunks_config AFTER INSERT OR UPDATE OR DELETE ON trunks
    FOR EACH ROW EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER numbers_config AFTER INSERT OR UPDATE OR DELETE ON numbers
    FOR EACH ROW EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER routes_config AFTER INSERT OR UPDATE OR DELETE ON inbound_routes
    FOR EACH ROW EXECUTE FUNCTION bump_config_version();
CREATE TRIGGER whitelist_config AFTER INSERT OR UPDATE OR DELETE ON whitelist
    FOR EACH ROW EXECUTE FUNCTION bump_config_version();

-- Per switch node: the journal being read and the last event applied.
-- Updated in the same transaction as the event's effects.
CREATE TABLE switch_cursors (
    node_url   TEXT PRIMARY KEY,
    journal_id TEXT NOT NULL,
    last_seq   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Transcript turns of a call attempt as the switch reports them; the
-- transcript is assembled from them when the attempt ends.
CREATE TABLE call_turns (
    call_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    journal_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    speaker     TEXT NOT NULL,
    text        TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    interrupted BIGINT NOT NULL,
    PRIMARY KEY (call_id, attempt, journal_id, seq)
);
