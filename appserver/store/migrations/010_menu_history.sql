-- 010_menu_history: every menu set that went live is a version, however it was edited.
--
-- Publish and rollback (the admin editor) record their version themselves. Edits through
-- the REST API or by hand in SQL are logged here, one row per transaction, with who made
-- them; the menu reloader, once it has compiled and published the set, records it as an
-- 'edit' version naming those people and deletes the rows it folded in.

-- 'edit': a REST or SQL edit recorded by the reloader; 'baseline': the set found when the
-- history began (no version yet), so the first edit has something to compare with.
ALTER TABLE menu_versions DROP CONSTRAINT menu_versions_action;
ALTER TABLE menu_versions ADD CONSTRAINT menu_versions_action
    CHECK (action IN ('publish', 'rollback', 'edit', 'baseline'));

CREATE TABLE menu_edits (
    txid             bigint PRIMARY KEY,   -- the transaction that changed the menu tables
    at               timestamptz NOT NULL DEFAULT now(),
    -- The API's principal (set_config('callyard.actor', ..., true) in its transaction),
    -- else 'sql:<session user> (<application_name>)'.
    actor            text NOT NULL,
    db_user          text NOT NULL,
    application_name text NOT NULL
);

CREATE FUNCTION callyard_log_menu_edit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    app text := current_setting('application_name');
BEGIN
    INSERT INTO menu_edits (txid, actor, db_user, application_name)
    VALUES (txid_current(),
            coalesce(nullif(current_setting('callyard.actor', true), ''),
                     'sql:' || session_user || CASE WHEN app = '' THEN '' ELSE ' (' || app || ')' END),
            session_user, app)
    ON CONFLICT (txid) DO NOTHING;
    RETURN NULL;
END $$;

-- Per statement: a bulk edit costs one row, and only its transaction's first statement inserts.
CREATE TRIGGER ivr_menus_edit_log AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ivr_menus
    FOR EACH STATEMENT EXECUTE FUNCTION callyard_log_menu_edit();
CREATE TRIGGER ivr_menu_options_edit_log AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON ivr_menu_options
    FOR EACH STATEMENT EXECUTE FUNCTION callyard_log_menu_edit();
