-- SIP users (`/api.ashx/v1/sip-users`, an extension of the v1 spec): who an
-- inbound route's `user` rings and whom the AI's `transfer_to_user` may
-- name. A user registers with digest auth (password) and/or has a static
-- contact (a PBX-style peer). They are pushed to switch nodes in the
-- routing snapshot.
--
-- The name is unique across tenants, not only within one: a switch node's
-- registrar names a user by its name alone (one realm per node) and
-- refuses a snapshot that holds a name twice. The password is kept like a
-- trunk's (the switch verifies digest with the plain password).
-- Keep in step with ../postgres/0011_sip_users.sql.

CREATE TABLE sip_users (
    name         TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password     TEXT NOT NULL,
    contact      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE INDEX sip_users_tenant ON sip_users (tenant, name);

-- Users are in the routing snapshot, so a change is a configuration change
-- (see 0007).
CREATE TRIGGER sip_users_config_ins AFTER INSERT ON sip_users
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER sip_users_config_upd AFTER UPDATE ON sip_users
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER sip_users_config_del AFTER DELETE ON sip_users
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
