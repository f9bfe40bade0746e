-- When the control plane last sent (or was about to send) PlaceCall for a
-- call's current attempt. A dispatch whose PlaceCall got no answer is
-- repeated on the same node; only once the attempt must be over counted
-- from its last PlaceCall (its ring time, talk limit and a margin) may it
-- go elsewhere, or the callee could be rung twice at once
-- (switch_link::SwitchNodes::dispatch). NULL: none sent yet, or sent
-- before this migration (then dispatched_at stands in).
-- Keep in step with ../sqlite/0018_placecall_sent.sql.

ALTER TABLE calls ADD COLUMN placecall_sent_at BIGINT;
