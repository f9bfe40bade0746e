-- When some control plane last heard from each switch node it watches
-- (a probe answered, or an event read), noted every few seconds. A call
-- recorded on a node that no control plane watches any more (its URL left
-- every CODEB_SWITCH_URLS: a renamed host, a node taken out) would
-- otherwise stay in flight for ever: once no one has heard from its node
-- for a while, any control plane ends it as lost
-- (switch_link::SwitchNodes::sweep_unwatched).
-- Keep in step with ../sqlite/0019_nodes_heard.sql.

CREATE TABLE switch_nodes_heard (
    node_url TEXT PRIMARY KEY,
    heard_at BIGINT NOT NULL
);
