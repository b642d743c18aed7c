-- Voicemail: mailboxes (configuration, the `voicemail` action's target) and the messages
-- callers leave in them. A message comes from the call's CDR: the worker's CDR layer puts
-- {"voicemail": {"mailbox", "name", "seconds", "started_at"}} in the record's `extra`, and
-- the trigger below files it when the CDR writer stores the CDR (exactly once, as the CDR),
-- then NOTIFYs `callyard_voicemail` so consoles show it at once.

CREATE TABLE voicemail_boxes (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CONSTRAINT voicemail_boxes_name_slug CHECK (callyard_is_slug(name)),
    description text NOT NULL DEFAULT '' CONSTRAINT voicemail_boxes_description CHECK (char_length(description) <= 1000),
    -- empty: the standard greeting (file:voicemail/greeting)
    greeting    text[] NOT NULL DEFAULT '{}'
                CONSTRAINT voicemail_boxes_greeting CHECK (callyard_valid_prompts(greeting)),
    max_seconds int NOT NULL DEFAULT 120
                CONSTRAINT voicemail_boxes_max_seconds CHECK (max_seconds BETWEEN 5 AND 600),
    review      boolean NOT NULL DEFAULT false,
    -- who sees the messages in the console: the queue's members and/or one agent
    queue_id    int REFERENCES queues (id) ON DELETE SET NULL,
    agent_id    int REFERENCES agents (id) ON DELETE SET NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER voicemail_boxes_updated_at BEFORE UPDATE ON voicemail_boxes
    FOR EACH ROW EXECUTE FUNCTION callyard_touch_updated_at();
CREATE TRIGGER voicemail_boxes_notify AFTER INSERT OR UPDATE OR DELETE ON voicemail_boxes
    FOR EACH ROW EXECUTE FUNCTION callyard_notify_config('id');

CREATE TABLE voicemail_messages (
    id          bigserial PRIMARY KEY,
    call_id     text NOT NULL UNIQUE,  -- one message per call
    mailbox     text NOT NULL,         -- the mailbox's name when the message was left
    caller      text NOT NULL DEFAULT '',
    engine      text NOT NULL,
    node        text NOT NULL DEFAULT '',
    path        text NOT NULL CONSTRAINT voicemail_messages_path
                CHECK (path ~ '^voicemail-[a-z0-9][a-z0-9_-]{0,62}-[A-Za-z0-9_.-]{1,128}\.wav$'),
    seconds     real NOT NULL CONSTRAINT voicemail_messages_seconds CHECK (seconds >= 0),
    received_at timestamptz NOT NULL,
    handled_at  timestamptz,
    handled_by  text
);
CREATE INDEX voicemail_messages_mailbox ON voicemail_messages (mailbox, received_at DESC);

CREATE FUNCTION callyard_voicemail_from_cdr() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    vm jsonb := NEW.extra -> 'voicemail';
    new_id bigint;
BEGIN
    INSERT INTO voicemail_messages (call_id, mailbox, caller, engine, node, path, seconds,
                                    received_at)
    VALUES (NEW.call_id, vm ->> 'mailbox', NEW.caller, NEW.engine, NEW.node,
            (vm ->> 'name') || '.wav', round((vm ->> 'seconds')::numeric, 3),
            to_timestamp((vm ->> 'started_at')::double precision))
    ON CONFLICT (call_id) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        PERFORM pg_notify('callyard_voicemail',
            json_build_object('id', new_id, 'mailbox', vm ->> 'mailbox')::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cdrs_voicemail AFTER INSERT ON cdrs
    FOR EACH ROW WHEN (NEW.extra ? 'voicemail') EXECUTE FUNCTION callyard_voicemail_from_cdr();

-- The `voicemail` action (target: a mailbox name) in menus, as in 003 otherwise.
CREATE OR REPLACE FUNCTION callyard_valid_action(action text, target text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN action IN ('back', 'repeat', 'main', 'play', 'hangup') THEN target IS NULL
    WHEN action IN ('submenu', 'voicemail') THEN coalesce(callyard_is_slug(target), false)
    WHEN action = 'enqueue'  THEN coalesce(target ~ '^[a-z0-9][a-z0-9_-]{0,62}(:-?[0-9]{1,6})?$', false)
    WHEN action = 'dial'     THEN coalesce(target ~ '^[0-9*#+]{1,32}$', false)
    WHEN action = 'transfer' THEN coalesce(target ~ '^[0-9A-Za-z+*#@._:/-]{1,128}$', false)
    WHEN action = 'set'      THEN coalesce(char_length(target) <= 128 AND strpos(target, '=') > 0
                                           AND callyard_is_set_variable(split_part(target, '=', 1))
                                           AND callyard_is_safe_text(target), false)
    ELSE false
END;

-- A queue's overflow (or exit) route may leave a message: `voicemail` with a mailbox name.
CREATE OR REPLACE FUNCTION callyard_valid_route(action text, target text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN action = 'hangup' THEN target IS NULL
    WHEN action IN ('queue', 'menu', 'voicemail') THEN coalesce(callyard_is_slug(target), false)
    WHEN action = 'extension' THEN coalesce(target ~ '^[0-9*#+]{1,32}$', false)
    ELSE false
END;

-- ------------------------------------------------------------------ call recording

-- Per queue: never | always (from the agent's answer) | on_demand (the agent starts it in
-- the console); an optional announcement (one prompt) plays as the caller joins.
ALTER TABLE queues
    ADD COLUMN recording text NOT NULL DEFAULT 'never'
        CONSTRAINT queues_recording CHECK (recording IN ('never', 'always', 'on_demand')),
    ADD COLUMN recording_announcement text
        CONSTRAINT queues_recording_announcement
        CHECK (recording_announcement IS NULL OR callyard_valid_prompt(recording_announcement));

-- One row per recorded conversation, from the call's CDR (extra.recordings, written by the
-- worker's CDR layer): the file's path (relative to the recordings directory), when it
-- began and how long it lasted; its SHA-256 is added once the file is read (CDR writer).
CREATE TABLE recordings (
    id          bigserial PRIMARY KEY,
    call_id     text NOT NULL,
    queue       text NOT NULL,
    agent       text,
    engine      text NOT NULL,
    path        text NOT NULL UNIQUE CONSTRAINT recordings_path
                CHECK (path ~ '^recording-[a-z0-9][a-z0-9_-]{0,62}-[A-Za-z0-9_.-]{1,128}\.wav$'),
    started_at  timestamptz NOT NULL,
    seconds     real NOT NULL CONSTRAINT recordings_seconds CHECK (seconds >= 0),
    checksum    text CONSTRAINT recordings_checksum CHECK (checksum ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recordings_started_at ON recordings (started_at);
CREATE INDEX recordings_agent ON recordings (agent, started_at DESC);

CREATE FUNCTION callyard_recordings_from_cdr() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO recordings (call_id, queue, agent, engine, path, started_at, seconds)
    SELECT NEW.call_id, r ->> 'queue', NEW.agent, NEW.engine, (r ->> 'name') || '.wav',
           to_timestamp((r ->> 'started_at')::double precision),
           round((r ->> 'seconds')::numeric, 3)
      FROM jsonb_array_elements(NEW.extra -> 'recordings') AS r
    ON CONFLICT (path) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER cdrs_recordings AFTER INSERT ON cdrs
    FOR EACH ROW WHEN (jsonb_typeof(NEW.extra -> 'recordings') = 'array')
    EXECUTE FUNCTION callyard_recordings_from_cdr();

-- Every playback of a recording is audited (action 'listen', resource 'recording').
ALTER TABLE audit_log
    DROP CONSTRAINT audit_log_action,
    ADD CONSTRAINT audit_log_action CHECK (action IN ('create', 'update', 'delete', 'listen'));
