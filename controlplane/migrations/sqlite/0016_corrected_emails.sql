-- A call may have a second email: the corrected end of a call recorded as
-- lost whose first email had already gone (or failed for good) when its
-- node's own account came (store::emails, queue_email). The first keeps
-- revision 0; each correction sent after it is the next revision.
-- Keep in step with ../postgres/0016_corrected_emails.sql.

ALTER TABLE email_outbox ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
DROP INDEX email_outbox_call;
CREATE UNIQUE INDEX email_outbox_call ON email_outbox (call_id, revision);
