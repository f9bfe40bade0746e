-- The per-tenant prompt library (`/api.ashx/v1/prompts`): a call's or a
-- virtual number's systemPrompt that names a slug is replaced by the
-- prompt's text when the call is placed or the number's persona is pushed
-- to switch nodes. A tenant prompt may carry a built-in slug (`reminder`)
-- and then overrides the built-in for that tenant.
-- Keep in step with ../postgres/0010_prompts.sql.

CREATE TABLE prompts (
    tenant     TEXT NOT NULL,
    slug       TEXT NOT NULL,
    name       TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, slug)
);

-- Virtual numbers' prompts are resolved in the routing snapshot, so a
-- prompt change is a configuration change (see 0007).
CREATE TRIGGER prompts_config_ins AFTER INSERT ON prompts
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER prompts_config_upd AFTER UPDATE ON prompts
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER prompts_config_del AFTER DELETE ON prompts
BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
