-- Row versions for the list pages' cache of rendered rows
-- (store/row_cache.rs). Keep in step with ../sqlite/0013_row_versions.sql.
--
-- Every INSERT and every UPDATE of a call or transcript row gives the row a
-- row_version that no row of either table has had before (one sequence:
-- nextval never hands out a number twice, even across rolled-back
-- transactions), set by a BEFORE trigger on the row being written: no
-- write path can change a row and keep its version, so a version names
-- one content for ever and a cache keyed by it is never stale.

CREATE SEQUENCE row_version_seq;

ALTER TABLE calls ADD COLUMN row_version BIGINT;
ALTER TABLE transcripts ADD COLUMN row_version BIGINT;
UPDATE calls SET row_version = nextval('row_version_seq');
UPDATE transcripts SET row_version = nextval('row_version_seq');
ALTER TABLE calls ALTER COLUMN row_version SET NOT NULL;
ALTER TABLE transcripts ALTER COLUMN row_version SET NOT NULL;

CREATE FUNCTION next_row_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_version := nextval('row_version_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER calls_row_version BEFORE INSERT OR UPDATE ON calls
    FOR EACH ROW EXECUTE FUNCTION next_row_version();
CREATE TRIGGER transcripts_row_version BEFORE INSERT OR UPDATE ON transcripts
    FOR EACH ROW EXECUTE FUNCTION next_row_version();
