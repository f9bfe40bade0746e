-- Substring search for `GET /transcripts?q=`: a trigram full-text index over
-- the lowercased search text (caller, number, display name, rule), so
-- `search_text LIKE '%q%'` is answered from the index instead of a scan.
-- Patterns shorter than three characters still scan (the trigram limit).
-- Keep in step with ../postgres/0003_transcript_search.sql.

CREATE VIRTUAL TABLE transcripts_fts USING fts5(
    search_text,
    content = 'transcripts',
    content_rowid = 'rowid',
    tokenize = 'trigram'
);

INSERT INTO transcripts_fts (rowid, search_text) SELECT rowid, search_text FROM transcripts;

CREATE TRIGGER transcripts_fts_insert AFTER INSERT ON transcripts
BEGIN
    INSERT INTO transcripts_fts (rowid, search_text) VALUES (NEW.rowid, NEW.search_text);
END;

CREATE TRIGGER transcripts_fts_delete AFTER DELETE ON transcripts
BEGIN
    INSERT INTO transcripts_fts (transcripts_fts, rowid, search_text)
        VALUES ('delete', OLD.rowid, OLD.search_text);
END;

CREATE TRIGGER transcripts_fts_update AFTER UPDATE OF search_text ON transcripts
BEGIN
    INSERT INTO transcripts_fts (transcripts_fts, rowid, search_text)
        VALUES ('delete', OLD.rowid, OLD.search_text);
    INSERT INTO transcripts_fts (rowid, search_text) VALUES (NEW.rowid, NEW.search_text);
END;
