-- Row counts for list totals. `GET /calls` and `GET /transcripts` report
-- the total number of matching rows on every page; counting 100k index
-- entries per request costs milliseconds, so the totals for the common
-- filters (tenant, tenant + status, tenant + caller source) are kept here by
-- triggers, in the same transaction as the row change.
-- Keep in step with ../postgres/0002_list_counts.sql.

CREATE TABLE call_counts (
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (tenant, status)
);

INSERT INTO call_counts (tenant, status, n)
    SELECT tenant, status, COUNT(*) FROM calls GROUP BY tenant, status;

CREATE TRIGGER calls_count_insert AFTER INSERT ON calls
BEGIN
    INSERT INTO call_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1)
        ON CONFLICT (tenant, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER calls_count_delete AFTER DELETE ON calls
BEGIN
    UPDATE call_counts SET n = n - 1 WHERE tenant = OLD.tenant AND status = OLD.status;
END;

CREATE TRIGGER calls_count_update AFTER UPDATE OF tenant, status ON calls
    WHEN OLD.tenant <> NEW.tenant OR OLD.status <> NEW.status
BEGIN
    UPDATE call_counts SET n = n - 1 WHERE tenant = OLD.tenant AND status = OLD.status;
    INSERT INTO call_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1)
        ON CONFLICT (tenant, status) DO UPDATE SET n = n + 1;
END;

CREATE TABLE transcript_counts (
    tenant        TEXT NOT NULL,
    caller_source TEXT NOT NULL,
    n             BIGINT NOT NULL,
    PRIMARY KEY (tenant, caller_source)
);

INSERT INTO transcript_counts (tenant, caller_source, n)
    SELECT tenant, caller_source, COUNT(*) FROM transcripts GROUP BY tenant, caller_source;

CREATE TRIGGER transcripts_count_insert AFTER INSERT ON transcripts
BEGIN
    INSERT INTO transcript_counts (tenant, caller_source, n) VALUES (NEW.tenant, NEW.caller_source, 1)
        ON CONFLICT (tenant, caller_source) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER transcripts_count_delete AFTER DELETE ON transcripts
BEGIN
    UPDATE transcript_counts SET n = n - 1
        WHERE tenant = OLD.tenant AND caller_source = OLD.caller_source;
END;

CREATE TRIGGER transcripts_count_update AFTER UPDATE OF tenant, caller_source ON transcripts
    WHEN OLD.tenant <> NEW.tenant OR OLD.caller_source <> NEW.caller_source
BEGIN
    UPDATE transcript_counts SET n = n - 1
        WHERE tenant = OLD.tenant AND caller_source = OLD.caller_source;
    INSERT INTO transcript_counts (tenant, caller_source, n) VALUES (NEW.tenant, NEW.caller_source, 1)
        ON CONFLICT (tenant, caller_source) DO UPDATE SET n = n + 1;
END;
