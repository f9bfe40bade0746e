-- Substring search for `GET /transcripts?q=`: a trigram GIN index over the
-- lowercased search text, so `search_text LIKE '%q%'` is answered from the
-- index instead of a scan. pg_trgm is a trusted extension (PostgreSQL 13+):
-- the database owner may create it without superuser rights.
-- Keep in step with ../sqlite/0003_transcript_search.sql.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX transcripts_search_trgm ON transcripts USING gin (search_text gin_trgm_ops);
