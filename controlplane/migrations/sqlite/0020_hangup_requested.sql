-- When a hangup was asked for a call whose switch node could not be
-- reached to take it (the API answered 502): its retries are called off,
-- and a dispatch of it still under way ends it as cancelled instead of
-- placing it (on that node once sure the PlaceCall never got there, or on
-- another one after a deferral). NULL: none asked, or it reached the node.
-- Keep in step with ../postgres/0020_hangup_requested.sql.

ALTER TABLE calls ADD COLUMN hangup_requested_at BIGINT;
