-- Row versions for the list pages' cache of rendered rows
-- (store/row_cache.rs). Keep in step with ../postgres/0013_row_versions.sql.
--
-- Every INSERT and every UPDATE of a call or transcript row gives the row a
-- row_version that no row of either table has had before, in the same
-- transaction, by trigger: no write path (present or future, in this
-- process or another) can change a row and keep its version. A list page
-- reads (call_id, row_version) from an index and takes the row's JSON from
-- the cache when it holds exactly that version; a version names one
-- content for ever, so the cache is never stale, only missing.
--
-- Nothing may set row_version itself: an UPDATE that changes it is taken
-- as the trigger's own and not bumped again.

CREATE TABLE row_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    v  BIGINT NOT NULL
);

ALTER TABLE calls ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transcripts ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;

-- Existing rows: distinct versions across both tables.
UPDATE calls SET row_version = rowid;
UPDATE transcripts SET row_version = rowid + (SELECT COALESCE(MAX(rowid), 0) FROM calls);
INSERT INTO row_version (id, v) VALUES (1,
    MAX((SELECT COALESCE(MAX(row_version), 0) FROM calls),
        (SELECT COALESCE(MAX(row_version), 0) FROM transcripts)));

-- A missing counter row would make the version NULL: the write fails
-- (NOT NULL) rather than reusing a version.
CREATE TRIGGER calls_row_version_insert AFTER INSERT ON calls
BEGIN
    UPDATE row_version SET v = v + 1 WHERE id = 1;
    UPDATE calls SET row_version = (SELECT v FROM row_version WHERE id = 1)
        WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER calls_row_version_update AFTER UPDATE ON calls
    WHEN NEW.row_version = OLD.row_version
BEGIN
    UPDATE row_version SET v = v + 1 WHERE id = 1;
    UPDATE calls SET row_version = (SELECT v FROM row_version WHERE id = 1)
        WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER transcripts_row_version_insert AFTER INSERT ON transcripts
BEGIN
    UPDATE row_version SET v = v + 1 WHERE id = 1;
    UPDATE transcripts SET row_version = (SELECT v FROM row_version WHERE id = 1)
        WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER transcripts_row_version_update AFTER UPDATE ON transcripts
    WHEN NEW.row_version = OLD.row_version
BEGIN
    UPDATE row_version SET v = v + 1 WHERE id = 1;
    UPDATE transcripts SET row_version = (SELECT v FROM row_version WHERE id = 1)
        WHERE rowid = NEW.rowid;
END;

-- The list indexes carry the version, so a page's (call_id, row_version)
-- pairs are read from the index alone (no table row per list row).
DROP INDEX calls_tenant_created;
CREATE INDEX calls_tenant_created ON calls (tenant, created_at DESC, call_id DESC, row_version);
DROP INDEX calls_tenant_status;
CREATE INDEX calls_tenant_status ON calls (tenant, status, created_at DESC, call_id DESC, row_version);
DROP INDEX transcripts_tenant_started;
CREATE INDEX transcripts_tenant_started
    ON transcripts (tenant, started_at DESC, call_id DESC, row_version);
