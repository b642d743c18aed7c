-- Audit trail of configuration writes: who changed what, when, and how it looked before and
-- after. The API records each of its admin writes as one row about the resource (a menu with
-- its options, a schedule with its hours...), with the agent or API key that made it and
-- the client address; `callyard api-key` records as 'cli'. Writes made in SQL by anything
-- but Callyard itself (psql, pgAdmin...) are recorded by triggers, row by row, as
-- 'sql:<database role>': the database cannot know which person that was.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,   -- agent username, 'key:<name>', 'cli:<os user>', 'sql:<role>'
    via      text NOT NULL CONSTRAINT audit_log_via CHECK (via IN ('session', 'api_key', 'cli', 'sql')),
    client   text,            -- the client's address (API writes)
    action   text NOT NULL CONSTRAINT audit_log_action CHECK (action IN ('create', 'update', 'delete')),
    resource text NOT NULL,   -- menu, schedule, extension, queue, member, agent, api_key; in SQL
                              -- also menu_option, schedule_hours, schedule_closure
    name     text NOT NULL,   -- which one: its name or number ('queue/agent' for a member);
                              -- in SQL the row's key columns joined with ':'
    before   jsonb,           -- NULL when created
    after    jsonb            -- NULL when deleted
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_resource ON audit_log (resource, name);
CREATE INDEX audit_log_actor ON audit_log (actor);

-- A row as the audit trail shows it: never a password hash or an API key digest; instead
-- "password": null (none), "set", or "changed" (differs from `previous`).
CREATE FUNCTION callyard_audit_row(rec jsonb, previous jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE
    WHEN rec IS NULL THEN NULL
    WHEN rec ? 'password_hash' THEN (rec - 'password_hash') || jsonb_build_object('password',
        CASE WHEN rec ->> 'password_hash' IS NULL THEN NULL
             WHEN previous IS NOT NULL
                  AND previous ->> 'password_hash' IS DISTINCT FROM rec ->> 'password_hash'
                  THEN 'changed'
             ELSE 'set' END)
    ELSE rec - 'secret_sha256'
END $$;

-- Trigger arguments: the resource name, then the columns naming the row (joined with ':').
CREATE FUNCTION callyard_audit_sql() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    rec jsonb := coalesce(new_row, old_row);
    key text := '';
    i int;
BEGIN
    IF current_setting('application_name') = 'callyard' THEN
        RETURN NULL;  -- Callyard's own connections: the API records its writes itself
    END IF;
    FOR i IN 1 .. TG_NARGS - 1 LOOP
        key := key || CASE WHEN i > 1 THEN ':' ELSE '' END || coalesce(rec ->> TG_ARGV[i], '');
    END LOOP;
    INSERT INTO audit_log (actor, via, action, resource, name, before, after)
    VALUES ('sql:' || session_user, 'sql',
            CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update' ELSE 'delete' END,
            TG_ARGV[0], key, callyard_audit_row(old_row, NULL), callyard_audit_row(new_row, old_row));
    RETURN NULL;
END $$;

CREATE TRIGGER ivr_menus_audit AFTER INSERT OR UPDATE OR DELETE ON ivr_menus
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('menu', 'name');
CREATE TRIGGER ivr_menu_options_audit AFTER INSERT OR UPDATE OR DELETE ON ivr_menu_options
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('menu_option', 'menu_id', 'digits');
CREATE TRIGGER schedules_audit AFTER INSERT OR UPDATE OR DELETE ON schedules
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('schedule', 'name');
CREATE TRIGGER schedule_hours_audit AFTER INSERT OR UPDATE OR DELETE ON schedule_hours
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('schedule_hours', 'schedule_id', 'id');
CREATE TRIGGER schedule_closures_audit AFTER INSERT OR UPDATE OR DELETE ON schedule_closures
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('schedule_closure', 'schedule_id', 'id');
CREATE TRIGGER extensions_audit AFTER INSERT OR UPDATE OR DELETE ON extensions
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('extension', 'number');
CREATE TRIGGER queues_audit AFTER INSERT OR UPDATE OR DELETE ON queues
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('queue', 'name');
CREATE TRIGGER queue_members_audit AFTER INSERT OR UPDATE OR DELETE ON queue_members
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('member', 'queue_id', 'agent_id');
CREATE TRIGGER agents_audit AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('agent', 'username');
CREATE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION callyard_audit_sql('api_key', 'name');
