-- 003_input_rules: one set of rules for what may be stored, checked alike here and by the
-- API (appserver/api/schemas.py with ivr/model.py), so every row the database accepts reads
-- back through the API and every body the API accepts is stored.
--
-- * No prompt, target or value that reaches an engine holds a control character (a line
--   break ends an ESL header, so text after "\n\n" ran as a command of its own) or "${"
--   (FreeSWITCH expands ${...} in application arguments, ${system(...)} included).
-- * A menu's `set` writes only lowercase variables outside the engines' namespaces
--   (api_hangup_hook=system ... ran a shell command on the FreeSWITCH host).
-- * A file prompt is a sound name relative to the sounds directory: no "..", no absolute
--   path, no URL (http://169.254.169.254/..., shout://...).
-- * Free text is bounded: descriptions 1000 characters, names and labels 100.
--
-- The constraints whose check functions change are added again, so existing rows are
-- checked too: a row that breaks a rule stops this migration with the constraint's name
-- (fix the row, e.g. in psql, and run `callyard migrate` again; nothing is half applied).

-- ------------------------------------------------------------------ check functions

-- Text an engine may receive: no control characters, no "${".
CREATE FUNCTION callyard_is_safe_text(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN value !~ '[\x01-\x1f\x7f-\x9f]' AND strpos(value, '${') = 0;

-- A short label (closure name, agent display name): 1-100 characters, not blank, no
-- control characters.
CREATE FUNCTION callyard_is_label(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN char_length(value) BETWEEN 1 AND 100 AND value ~ '[^ ]'
   AND value !~ '[\x01-\x1f\x7f-\x9f]';

-- One prompt 'kind:value' (values holding {{ or {% are templates, checked when rendered).
CREATE FUNCTION callyard_valid_prompt(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p IS NOT NULL AND char_length(p) <= 1000
   AND p ~ '^(file|tts|digits|number|silence):.*[^ ]'
   AND callyard_is_safe_text(p)
   AND (p !~ '^file:' OR strpos(p, '{{') > 0 OR strpos(p, '{%') > 0
        OR btrim(substr(p, 6), ' ') ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$');

-- A prompt list: a plain (one-dimensional) array of at most 20 valid prompts.
CREATE OR REPLACE FUNCTION callyard_valid_prompts(prompts text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(cardinality(prompts), 0) <= 20
   AND coalesce(array_ndims(prompts), 1) = 1
   AND coalesce((SELECT bool_and(callyard_valid_prompt(p)) FROM unnest(prompts) AS p), true);

-- A variable a menu's `set` may write (see SET_VARIABLE_RE in ivr/model.py).
CREATE FUNCTION callyard_is_set_variable(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN name ~ '^(?!(?:absolute|answer|api|asr|bind|bridge|bypass|call|callyard|campon|cc|codec|conference|continue|default|detect|dialed|digit|disable|domain|dtmf|early|effective|enable|exec|execute|export|failure|fax|fifo|fire|force|group|hangup|hold|ignore|inherit|instant|intercept|ivr|jitterbuffer|leg|limit|local|loopback|lua|max|media|monitor|origination|originate|originator|outbound|park|playback|presence|process|progress|proxy|read|record|recording|ringback|rtcp|rtp|sched|session|signal|sip|socket|sound|srtp|suppress|t38|temp|timezone|tod|tone|transfer|tts|user|uuid|valet|verto|video|vm|voicemail|wait|zrtp)(?:_|$))(?!.*_hook$)[a-z][a-z0-9_]{0,31}$';

-- Menu actions and their targets, as in 001 with `set` restricted: name=value with an
-- allowed name and a safe value, at most 128 characters.
CREATE OR REPLACE FUNCTION callyard_valid_action(action text, target text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN action IN ('back', 'repeat', 'main', 'play', 'hangup') THEN target IS NULL
    WHEN action = 'submenu'  THEN coalesce(callyard_is_slug(target), false)
    WHEN action = 'enqueue'  THEN coalesce(target ~ '^[a-z0-9][a-z0-9_-]{0,62}(:-?[0-9]{1,6})?$', false)
    WHEN action = 'dial'     THEN coalesce(target ~ '^[0-9*#+]{1,32}$', false)
    WHEN action = 'transfer' THEN coalesce(target ~ '^[0-9A-Za-z+*#@._:/-]{1,128}$', false)
    WHEN action = 'set'      THEN coalesce(char_length(target) <= 128 AND strpos(target, '=') > 0
                                           AND callyard_is_set_variable(split_part(target, '=', 1))
                                           AND callyard_is_safe_text(target), false)
    ELSE false
END;

-- Skills as in 001, at most 50 of them.
CREATE OR REPLACE FUNCTION callyard_valid_skills(skills jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN skills IS NULL OR jsonb_typeof(skills) <> 'object' THEN false
    ELSE (SELECT count(*) FROM jsonb_object_keys(skills)) <= 50
         AND NOT EXISTS (
            SELECT 1 FROM jsonb_each(skills) AS e(k, v)
             WHERE NOT (callyard_is_slug(k)
                        AND CASE WHEN jsonb_typeof(v) = 'number'
                                 THEN v::numeric = trunc(v::numeric) AND v::numeric BETWEEN 1 AND 10
                                 ELSE false END))
END;

-- ------------------------------------------------------------------ constraints

ALTER TABLE schedules
    ADD CONSTRAINT schedules_description CHECK (char_length(description) <= 1000);

ALTER TABLE schedule_closures
    DROP CONSTRAINT schedule_closures_name_not_blank,
    ADD CONSTRAINT schedule_closures_name_label CHECK (callyard_is_label(name)),
    -- plausible dates (no 'infinity', no year 10000 that programs cannot hold)
    ADD CONSTRAINT schedule_closures_dates
        CHECK (starts_on >= '1900-01-01' AND ends_on <= '2999-12-31');

ALTER TABLE ivr_menus
    ADD CONSTRAINT ivr_menus_description CHECK (char_length(description) <= 1000),
    DROP CONSTRAINT ivr_menus_greeting_prompts,
    ADD CONSTRAINT ivr_menus_greeting_prompts CHECK (callyard_valid_prompts(greeting)),
    DROP CONSTRAINT ivr_menus_invalid_prompts,
    ADD CONSTRAINT ivr_menus_invalid_prompts CHECK (callyard_valid_prompts(invalid_prompt)),
    DROP CONSTRAINT ivr_menus_timeout_prompts,
    ADD CONSTRAINT ivr_menus_timeout_prompts CHECK (callyard_valid_prompts(timeout_prompt)),
    DROP CONSTRAINT ivr_menus_exhausted_action,
    ADD CONSTRAINT ivr_menus_exhausted_action
        CHECK (callyard_valid_action(exhausted_action, exhausted_target)),
    DROP CONSTRAINT ivr_menus_closed_action,
    ADD CONSTRAINT ivr_menus_closed_action
        CHECK (CASE WHEN closed_action IS NULL THEN closed_target IS NULL
                    ELSE callyard_valid_action(closed_action, closed_target) END),
    DROP CONSTRAINT ivr_menus_holiday_action,
    ADD CONSTRAINT ivr_menus_holiday_action
        CHECK (CASE WHEN holiday_action IS NULL THEN holiday_target IS NULL
                    ELSE callyard_valid_action(holiday_action, holiday_target) END);

ALTER TABLE ivr_menu_options
    DROP CONSTRAINT ivr_menu_options_prompts,
    ADD CONSTRAINT ivr_menu_options_prompts CHECK (callyard_valid_prompts(prompt)),
    DROP CONSTRAINT ivr_menu_options_action,
    ADD CONSTRAINT ivr_menu_options_action CHECK (callyard_valid_action(action, target)),
    ADD CONSTRAINT ivr_menu_options_position CHECK (position BETWEEN 0 AND 1000);

ALTER TABLE queues
    ADD CONSTRAINT queues_description CHECK (char_length(description) <= 1000),
    DROP CONSTRAINT queues_max_wait_seconds,
    ADD CONSTRAINT queues_max_wait_seconds CHECK (max_wait_seconds BETWEEN 1 AND 86400),
    DROP CONSTRAINT queues_max_length,
    ADD CONSTRAINT queues_max_length CHECK (max_length BETWEEN 1 AND 100000),
    DROP CONSTRAINT queues_tier_widen_seconds,
    ADD CONSTRAINT queues_tier_widen_seconds CHECK (tier_widen_seconds BETWEEN 0 AND 3600),
    DROP CONSTRAINT queues_required_skills,
    ADD CONSTRAINT queues_required_skills CHECK (callyard_valid_skills(required_skills));

ALTER TABLE agents
    DROP CONSTRAINT agents_display_name_not_blank,
    ADD CONSTRAINT agents_display_name_label CHECK (callyard_is_label(display_name)),
    DROP CONSTRAINT agents_skills,
    ADD CONSTRAINT agents_skills CHECK (callyard_valid_skills(skills));

-- A 'user' extension's endpoint goes into the engine's dial string: one token of safe
-- characters (the IVR validator always required this shape).
ALTER TABLE extensions
    ADD CONSTRAINT extensions_description CHECK (char_length(description) <= 1000),
    DROP CONSTRAINT extensions_dial_target_not_blank,
    ADD CONSTRAINT extensions_dial_target CHECK (dial_target ~ '^[0-9A-Za-z+*#@._:/-]{1,128}$');
