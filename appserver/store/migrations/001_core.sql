-- 001_core: the Callyard data model (configuration tables and CDRs).
--
-- Everything an operator may edit by hand (psql, pgAdmin) is guarded by constraints here, so
-- an edit cannot store something the application would choke on. Cross-references held in
-- text (menu and queue names in option targets) are checked by the IVR validator instead.
-- Every configuration table NOTIFYs channel 'callyard_config' on change.

-- ------------------------------------------------------------------ check functions

-- Names of menus, queues, schedules, agents: lowercase slugs.
CREATE FUNCTION callyard_is_slug(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN value ~ '^[a-z0-9][a-z0-9_-]{0,62}$';

-- A prompt list: every element is 'kind:value', kind one of file|tts|digits|number|silence,
-- value not blank (values may be jinja2 templates, so their format is checked by the app).
CREATE FUNCTION callyard_valid_prompts(prompts text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(
    (SELECT bool_and(p IS NOT NULL AND p ~ '^(file|tts|digits|number|silence):.*[^[:space:]]')
       FROM unnest(prompts) AS p),
    true);

-- Skills: a JSON object {"skill-name": level} with integer levels 1..10.
CREATE FUNCTION callyard_valid_skills(skills jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN skills IS NULL OR jsonb_typeof(skills) <> 'object' THEN false
    ELSE NOT EXISTS (
        SELECT 1 FROM jsonb_each(skills) AS e(k, v)
         WHERE NOT (callyard_is_slug(k)
                    AND CASE WHEN jsonb_typeof(v) = 'number'
                             THEN v::numeric = trunc(v::numeric) AND v::numeric BETWEEN 1 AND 10
                             ELSE false END))
END;

-- Menu actions and their targets. Actions that need a target must have a well-formed one;
-- the others must have none (NULL).
--   submenu  menu name            back, repeat, main, play, hangup   no target
--   enqueue  queue[:priority]     dial       extension number
--   transfer destination          set        variable=value
CREATE FUNCTION callyard_valid_action(action text, target text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN action IN ('back', 'repeat', 'main', 'play', 'hangup') THEN target IS NULL
    WHEN action = 'submenu'  THEN coalesce(callyard_is_slug(target), false)
    WHEN action = 'enqueue'  THEN coalesce(target ~ '^[a-z0-9][a-z0-9_-]{0,62}(:-?[0-9]{1,6})?$', false)
    WHEN action = 'dial'     THEN coalesce(target ~ '^[0-9*#+]{1,32}$', false)
    WHEN action = 'transfer' THEN coalesce(target ~ '^[0-9A-Za-z+*#@._:/-]{1,128}$', false)
    WHEN action = 'set'      THEN coalesce(target ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}=', false)
    ELSE false
END;

-- Where a queue sends a caller on overflow or exit key: queue|menu name, extension, hangup.
CREATE FUNCTION callyard_valid_route(action text, target text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN action = 'hangup' THEN target IS NULL
    WHEN action IN ('queue', 'menu') THEN coalesce(callyard_is_slug(target), false)
    WHEN action = 'extension' THEN coalesce(target ~ '^[0-9*#+]{1,32}$', false)
    ELSE false
END;

-- ------------------------------------------------------------------ trigger functions

CREATE FUNCTION callyard_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- NOTIFY callyard_config '{"table": ..., "op": "INSERT|UPDATE|DELETE", "id": "<pk>"}'.
-- Trigger arguments name the primary-key columns; a composite key is joined with ':'.
CREATE FUNCTION callyard_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    key text := '';
    i int;
BEGIN
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        key := key || CASE WHEN i > 0 THEN ':' ELSE '' END || (rec ->> TG_ARGV[i]);
    END LOOP;
    PERFORM pg_notify('callyard_config',
        json_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'id', key)::text);
    RETURN NULL;
END $$;

CREATE FUNCTION callyard_check_timezone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.timezone) THEN
        RAISE EXCEPTION 'unknown time zone "%" for schedule "%"', NEW.timezone, NEW.name
            USING ERRCODE = 'check_violation',
                  HINT = 'use an IANA name such as UTC or Europe/Paris (see pg_timezone_names)';
    END IF;
    RETURN NEW;
END $$;

-- ------------------------------------------------------------------ schedules

CREATE TABLE schedules (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CONSTRAINT schedules_name_slug CHECK (callyard_is_slug(name)),
    timezone    text NOT NULL DEFAULT 'UTC',
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER schedules_timezone BEFORE INSERT OR UPDATE OF timezone, name ON schedules
    FOR EACH ROW EXECUTE FUNCTION callyard_check_timezone();

-- Opening hours; weekday 0 = Monday .. 6 = Sunday. Several rows per day are allowed
-- (e.g. a lunch break); an overnight opening is two rows.
CREATE TABLE schedule_hours (
    id          serial PRIMARY KEY,
    schedule_id int NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    weekday     smallint NOT NULL CONSTRAINT schedule_hours_weekday CHECK (weekday BETWEEN 0 AND 6),
    opens       time NOT NULL,
    closes      time NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_hours_opens_before_closes CHECK (opens < closes)
);
CREATE INDEX schedule_hours_schedule ON schedule_hours (schedule_id, weekday);

-- Holidays and other closures, whole days from starts_on to ends_on inclusive.
CREATE TABLE schedule_closures (
    id          serial PRIMARY KEY,
    schedule_id int NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    name        text NOT NULL CONSTRAINT schedule_closures_name_not_blank CHECK (btrim(name) <> ''),
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_closures_ends_after_start CHECK (ends_on >= starts_on)
);
CREATE INDEX schedule_closures_schedule ON schedule_closures (schedule_id, starts_on);

-- ------------------------------------------------------------------ IVR menus

CREATE TABLE ivr_menus (
    id                  serial PRIMARY KEY,
    name                text NOT NULL UNIQUE CONSTRAINT ivr_menus_name_slug CHECK (callyard_is_slug(name)),
    description         text NOT NULL DEFAULT '',
    greeting            text[] NOT NULL DEFAULT '{}'
                        CONSTRAINT ivr_menus_greeting_prompts CHECK (callyard_valid_prompts(greeting)),
    invalid_prompt      text[] CONSTRAINT ivr_menus_invalid_prompts CHECK (callyard_valid_prompts(invalid_prompt)),
    timeout_prompt      text[] CONSTRAINT ivr_menus_timeout_prompts CHECK (callyard_valid_prompts(timeout_prompt)),
    first_digit_timeout real NOT NULL DEFAULT 5
                        CONSTRAINT ivr_menus_first_digit_timeout CHECK (first_digit_timeout BETWEEN 0.5 AND 60),
    inter_digit_timeout real NOT NULL DEFAULT 2
                        CONSTRAINT ivr_menus_inter_digit_timeout CHECK (inter_digit_timeout BETWEEN 0.2 AND 30),
    max_digits          smallint NOT NULL DEFAULT 1
                        CONSTRAINT ivr_menus_max_digits CHECK (max_digits BETWEEN 1 AND 20),
    terminator          text NOT NULL DEFAULT '#'
                        CONSTRAINT ivr_menus_terminator CHECK (terminator IN ('#', '*', '')),
    max_retries         smallint NOT NULL DEFAULT 3
                        CONSTRAINT ivr_menus_max_retries CHECK (max_retries BETWEEN 0 AND 10),
    exhausted_action    text NOT NULL DEFAULT 'hangup',
    exhausted_target    text,
    schedule_id         int REFERENCES schedules (id) ON DELETE RESTRICT,
    closed_action       text,
    closed_target       text,
    holiday_action      text,
    holiday_target      text,
    language            text NOT NULL DEFAULT 'en'
                        CONSTRAINT ivr_menus_language CHECK (language ~ '^[a-z]{2}(-[A-Z]{2})?$'),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ivr_menus_exhausted_action
        CHECK (callyard_valid_action(exhausted_action, exhausted_target)),
    CONSTRAINT ivr_menus_closed_action
        CHECK (CASE WHEN closed_action IS NULL THEN closed_target IS NULL
                    ELSE callyard_valid_action(closed_action, closed_target) END),
    CONSTRAINT ivr_menus_holiday_action
        CHECK (CASE WHEN holiday_action IS NULL THEN holiday_target IS NULL
                    ELSE callyard_valid_action(holiday_action, holiday_target) END),
    -- A menu with a schedule must say what happens outside opening hours
    -- (holidays fall back to closed_action when holiday_action is NULL).
    CONSTRAINT ivr_menus_schedule_needs_closed_action
        CHECK (schedule_id IS NULL OR closed_action IS NOT NULL)
);
CREATE INDEX ivr_menus_schedule ON ivr_menus (schedule_id);

CREATE TABLE ivr_menu_options (
    id          serial PRIMARY KEY,
    menu_id     int NOT NULL REFERENCES ivr_menus (id) ON DELETE CASCADE,
    digits      text NOT NULL CONSTRAINT ivr_menu_options_digits CHECK (digits ~ '^[0-9*#]{1,20}$'),
    action      text NOT NULL,
    target      text,
    prompt      text[] CONSTRAINT ivr_menu_options_prompts CHECK (callyard_valid_prompts(prompt)),
    position    smallint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ivr_menu_options_digits_unique UNIQUE (menu_id, digits),
    CONSTRAINT ivr_menu_options_action CHECK (callyard_valid_action(action, target)),
    CONSTRAINT ivr_menu_options_play_needs_prompt
        CHECK (action <> 'play' OR coalesce(cardinality(prompt), 0) > 0)
);

-- ------------------------------------------------------------------ queues and agents

CREATE TABLE queues (
    id                    serial PRIMARY KEY,
    name                  text NOT NULL UNIQUE CONSTRAINT queues_name_slug CHECK (callyard_is_slug(name)),
    description           text NOT NULL DEFAULT '',
    strategy              text NOT NULL DEFAULT 'longest_idle'
                          CONSTRAINT queues_strategy CHECK (strategy IN
                              ('ring_all', 'longest_idle', 'round_robin', 'fewest_calls', 'random', 'skills')),
    max_wait_seconds      int CONSTRAINT queues_max_wait_seconds CHECK (max_wait_seconds > 0),
    max_length            int CONSTRAINT queues_max_length CHECK (max_length > 0),
    announce_interval     int NOT NULL DEFAULT 30
                          CONSTRAINT queues_announce_interval
                          CHECK (announce_interval = 0 OR announce_interval BETWEEN 10 AND 3600),
    announce_position     boolean NOT NULL DEFAULT true,
    announce_wait         boolean NOT NULL DEFAULT true,
    moh_class             text NOT NULL DEFAULT 'default'
                          CONSTRAINT queues_moh_class CHECK (moh_class ~ '^[A-Za-z0-9_-]{1,64}$'),
    wrapup_seconds        int NOT NULL DEFAULT 10
                          CONSTRAINT queues_wrapup_seconds CHECK (wrapup_seconds BETWEEN 0 AND 3600),
    ring_timeout          int NOT NULL DEFAULT 20
                          CONSTRAINT queues_ring_timeout CHECK (ring_timeout BETWEEN 5 AND 300),
    max_no_answer         int NOT NULL DEFAULT 3
                          CONSTRAINT queues_max_no_answer CHECK (max_no_answer BETWEEN 1 AND 100),
    overflow_action       text NOT NULL DEFAULT 'hangup',
    overflow_target       text,
    join_when_empty       boolean NOT NULL DEFAULT true,
    leave_when_empty      boolean NOT NULL DEFAULT false,
    exit_key              text CONSTRAINT queues_exit_key CHECK (exit_key ~ '^[0-9*#]$'),
    exit_action           text,
    exit_target           text,
    service_level_seconds int NOT NULL DEFAULT 20
                          CONSTRAINT queues_service_level_seconds CHECK (service_level_seconds BETWEEN 1 AND 3600),
    tier_widen_seconds    int NOT NULL DEFAULT 30
                          CONSTRAINT queues_tier_widen_seconds CHECK (tier_widen_seconds >= 0),
    required_skills       jsonb NOT NULL DEFAULT '{}'
                          CONSTRAINT queues_required_skills CHECK (callyard_valid_skills(required_skills)),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queues_overflow CHECK (callyard_valid_route(overflow_action, overflow_target)),
    -- An exit key and its action come together; without a key, no exit action.
    CONSTRAINT queues_exit CHECK (
        CASE WHEN exit_key IS NULL THEN exit_action IS NULL AND exit_target IS NULL
             ELSE exit_action IS NOT NULL AND callyard_valid_route(exit_action, exit_target) END)
);

CREATE TABLE agents (
    id            serial PRIMARY KEY,
    username      text NOT NULL UNIQUE CONSTRAINT agents_username_slug CHECK (callyard_is_slug(username)),
    display_name  text NOT NULL CONSTRAINT agents_display_name_not_blank CHECK (btrim(display_name) <> ''),
    kind          text NOT NULL DEFAULT 'browser' CONSTRAINT agents_kind CHECK (kind IN ('browser', 'sip')),
    extension     text UNIQUE CONSTRAINT agents_extension_digits CHECK (extension ~ '^[0-9]{1,16}$'),
    password_hash text,
    role          text NOT NULL DEFAULT 'agent'
                  CONSTRAINT agents_role CHECK (role IN ('agent', 'supervisor', 'admin')),
    skills        jsonb NOT NULL DEFAULT '{}' CONSTRAINT agents_skills CHECK (callyard_valid_skills(skills)),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_sip_needs_extension CHECK (kind <> 'sip' OR extension IS NOT NULL)
);

CREATE TABLE queue_members (
    queue_id   int NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    agent_id   int NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tier       smallint NOT NULL DEFAULT 1 CONSTRAINT queue_members_tier CHECK (tier BETWEEN 1 AND 9),
    penalty    smallint NOT NULL DEFAULT 0 CONSTRAINT queue_members_penalty CHECK (penalty BETWEEN 0 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_id, agent_id)
);
CREATE INDEX queue_members_agent ON queue_members (agent_id);

-- ------------------------------------------------------------------ extensions (dial plan)

-- What a dialled number reaches: exactly one of menu, queue, agent, or (kind 'user') an
-- endpoint to dial.
CREATE TABLE extensions (
    number      text PRIMARY KEY CONSTRAINT extensions_number CHECK (number ~ '^[0-9*#+]{1,32}$'),
    kind        text NOT NULL CONSTRAINT extensions_kind CHECK (kind IN ('menu', 'queue', 'agent', 'user')),
    menu_id     int REFERENCES ivr_menus (id) ON DELETE RESTRICT,
    queue_id    int REFERENCES queues (id) ON DELETE RESTRICT,
    agent_id    int REFERENCES agents (id) ON DELETE RESTRICT,
    dial_target text CONSTRAINT extensions_dial_target_not_blank CHECK (btrim(dial_target) <> ''),
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT extensions_kind_reference CHECK (
        (kind = 'menu') = (menu_id IS NOT NULL)
        AND (kind = 'queue') = (queue_id IS NOT NULL)
        AND (kind = 'agent') = (agent_id IS NOT NULL)
        AND (kind = 'user') = (dial_target IS NOT NULL))
);
CREATE INDEX extensions_menu ON extensions (menu_id) WHERE menu_id IS NOT NULL;
CREATE INDEX extensions_queue ON extensions (queue_id) WHERE queue_id IS NOT NULL;
CREATE INDEX extensions_agent ON extensions (agent_id) WHERE agent_id IS NOT NULL;

-- ------------------------------------------------------------------ call detail records

CREATE TABLE cdrs (
    call_id      text PRIMARY KEY,
    engine       text NOT NULL CONSTRAINT cdrs_engine CHECK (engine IN ('freeswitch', 'asterisk')),
    node         text NOT NULL DEFAULT '',
    caller       text NOT NULL DEFAULT '',
    called       text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL,
    answered_at  timestamptz,
    ended_at     timestamptz,
    menu_path    text[] NOT NULL DEFAULT '{}',
    queue        text,
    wait_seconds real CONSTRAINT cdrs_wait_seconds CHECK (wait_seconds >= 0),
    agent        text,
    disposition  text CONSTRAINT cdrs_disposition CHECK (disposition IN
                     ('answered', 'abandoned', 'overflow', 'transferred', 'hangup', 'failed', 'voicemail')),
    hangup_cause text,
    extra        jsonb NOT NULL DEFAULT '{}',
    inserted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cdrs_started_at ON cdrs (started_at DESC);
CREATE INDEX cdrs_caller ON cdrs (caller, started_at DESC);
CREATE INDEX cdrs_called ON cdrs (called, started_at DESC);
CREATE INDEX cdrs_queue ON cdrs (queue, started_at DESC) WHERE queue IS NOT NULL;
CREATE INDEX cdrs_agent ON cdrs (agent, started_at DESC) WHERE agent IS NOT NULL;

-- ------------------------------------------------------------------ triggers on config tables

CREATE TRIGGER schedules_updated_at BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER schedule_hours_updated_at BEFORE UPDATE ON schedule_hours
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER schedule_closures_updated_at BEFORE UPDATE ON schedule_closures
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER ivr_menus_updated_at BEFORE UPDATE ON ivr_menus
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER ivr_menu_options_updated_at BEFORE UPDATE ON ivr_menu_options
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER queues_updated_at BEFORE UPDATE ON queues
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER agents_updated_at BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER queue_members_updated_at BEFORE UPDATE ON queue_members
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER extensions_updated_at BEFORE UPDATE ON extensions
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();

CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OR DELETE ON schedules
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER schedule_hours_notify AFTER INSERT OR UPDATE OR DELETE ON schedule_hours
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER schedule_closures_notify AFTER INSERT OR UPDATE OR DELETE ON schedule_closures
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER ivr_menus_notify AFTER INSERT OR UPDATE OR DELETE ON ivr_menus
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER ivr_menu_options_notify AFTER INSERT OR UPDATE OR DELETE ON ivr_menu_options
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER queues_notify AFTER INSERT OR UPDATE OR DELETE ON queues
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER agents_notify AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');
CREATE TRIGGER queue_members_notify AFTER INSERT OR UPDATE OR DELETE ON queue_members
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('queue_id', 'agent_id');
CREATE TRIGGER extensions_notify AFTER INSERT OR UPDATE OR DELETE ON extensions
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('number');
