-- The switch process that carries a call (PlaceCallReply / InboundCall
-- instance_id; '' for calls placed before it was recorded). A node that
-- restarts comes back with another instance: once its journal is read,
-- its calls carried by an earlier instance are lost and are ended
-- (switch_link::sweep_lost_nodes). Keep in step with
-- ../postgres/0014_node_instance.sql.

ALTER TABLE calls ADD COLUMN node_instance TEXT NOT NULL DEFAULT '';
ALTER TABLE inbound_calls ADD COLUMN node_instance TEXT NOT NULL DEFAULT '';
