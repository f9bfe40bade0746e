-- A fingerprint of the built-in prompts' texts (they live in the code) as
-- of the configuration version: a control plane whose built-ins differ
-- (a new release) raises the version at start, so that virtual numbers
-- naming a built-in get its new text on every node at once rather than
-- with the next unrelated change (store::Store::note_builtin_prompts).
-- Keep in step with ../postgres/0021_builtin_prompts.sql.

ALTER TABLE config_version ADD COLUMN builtins TEXT NOT NULL DEFAULT '';
