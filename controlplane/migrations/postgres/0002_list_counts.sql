-- Row counts for list totals. `GET /calls` and `GET /transcripts` report
-- the total number of matching rows on every page; counting 100k index
-- entries per request costs milliseconds, so the totals for the common
-- filters (tenant, tenant + status, tenant + caller source) are kept here by
-- triggers, in the same transaction as the row change.
-- Keep in step with ../sqlite/0002_list_counts.sql.

CREATE TABLE call_counts (
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (tenant, status)
);

INSERT INTO call_counts (tenant, status, n)
    SELECT tenant, status, COUNT(*) FROM calls GROUP BY tenant, status;

CREATE FUNCTION calls_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tenant = NEW.tenant AND OLD.status = NEW.status THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE call_counts SET n = n - 1 WHERE tenant = OLD.tenant AND status = OLD.status;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO call_counts (tenant, status, n) VALUES (NEW.tenant, NEW.status, 1)
            ON CONFLICT (tenant, status) DO UPDATE SET n = call_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER calls_count AFTER INSERT OR DELETE OR UPDATE OF tenant, status ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_count();

CREATE TABLE transcript_counts (
    tenant        TEXT NOT NULL,
    caller_source TEXT NOT NULL,
    n             BIGINT NOT NULL,
    PRIMARY KEY (tenant, caller_source)
);

INSERT INTO transcript_counts (tenant, caller_source, n)
    SELECT tenant, caller_source, COUNT(*) FROM transcripts GROUP BY tenant, caller_source;

CREATE FUNCTION transcripts_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tenant = NEW.tenant AND OLD.caller_source = NEW.caller_source THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE transcript_counts SET n = n - 1
            WHERE tenant = OLD.tenant AND caller_source = OLD.caller_source;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO transcript_counts (tenant, caller_source, n)
            VALUES (NEW.tenant, NEW.caller_source, 1)
            ON CONFLICT (tenant, caller_source) DO UPDATE SET n = transcript_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER transcripts_count AFTER INSERT OR DELETE OR UPDATE OF tenant, caller_source
    ON transcripts FOR EACH ROW EXECUTE FUNCTION transcripts_count();
