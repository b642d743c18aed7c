"""Every database constraint rejects bad rows with a clear error naming the constraint."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

SETUP = """
INSERT INTO schedules (name, timezone) VALUES ('office', 'Europe/Paris');
INSERT INTO ivr_menus (name) VALUES ('main');
INSERT INTO queues (name) VALUES ('support');
INSERT INTO agents (username, display_name) VALUES ('alice', 'Alice');
"""

# (label, statement, exception, constraint name; '' when only the exception type is checked)
BAD_ROWS: list[tuple[str, str, type[Exception], str]] = [
    # schedules
    (
        "schedule name not a slug",
        "INSERT INTO schedules (name) VALUES ('Office Hours')",
        asyncpg.CheckViolationError,
        "schedules_name_slug",
    ),
    (
        "duplicate schedule",
        "INSERT INTO schedules (name) VALUES ('office')",
        asyncpg.UniqueViolationError,
        "schedules_name_key",
    ),
    (
        "weekday 7",
        "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)"
        " VALUES (1, 7, '09:00', '17:00')",
        asyncpg.CheckViolationError,
        "schedule_hours_weekday",
    ),
    (
        "opens after closes",
        "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)"
        " VALUES (1, 0, '17:00', '09:00')",
        asyncpg.CheckViolationError,
        "schedule_hours_opens_before_closes",
    ),
    (
        "hours of unknown schedule",
        "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)"
        " VALUES (99, 0, '09:00', '17:00')",
        asyncpg.ForeignKeyViolationError,
        "schedule_hours_schedule_id_fkey",
    ),
    (
        "closure ends before it starts",
        "INSERT INTO schedule_closures"
        " (schedule_id, name, starts_on, ends_on) VALUES (1, 'x', '2026-05-02', '2026-05-01')",
        asyncpg.CheckViolationError,
        "schedule_closures_ends_after_start",
    ),
    (
        "closure without a name",
        "INSERT INTO schedule_closures"
        " (schedule_id, name, starts_on, ends_on) VALUES (1, ' ', '2026-05-01', '2026-05-01')",
        asyncpg.CheckViolationError,
        "schedule_closures_name_label",
    ),
    # menus
    (
        "menu name not a slug",
        "INSERT INTO ivr_menus (name) VALUES ('-main')",
        asyncpg.CheckViolationError,
        "ivr_menus_name_slug",
    ),
    (
        "bare prompt without kind",
        "INSERT INTO ivr_menus (name, greeting) VALUES ('m', '{ivr/welcome}')",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    (
        "unknown prompt kind",
        "INSERT INTO ivr_menus (name, greeting) VALUES ('m', '{wav:hello}')",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    # Hardening findings (migration 003): menu text reached FreeSWITCH's command stream.
    (
        "greeting injecting a second ESL command",
        "INSERT INTO ivr_menus (name, greeting) VALUES ('m', ARRAY[E'tts:Welcome\\n\\nsendmsg\\n"
        "call-command: execute\\nexecute-app-name: playback\\nexecute-app-arg: /etc/passwd'])",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    (
        "prompt expanding ${system(...)} in FreeSWITCH",
        "INSERT INTO ivr_menus (name, greeting) VALUES ('m', '{\"tts:${system(id)}\"}')",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    (
        "file prompt leaving the sounds directory",
        "INSERT INTO ivr_menus (name, invalid_prompt) VALUES ('m', '{file:../../etc/passwd}')",
        asyncpg.CheckViolationError,
        "ivr_menus_invalid_prompts",
    ),
    (
        "file prompt fetching a URL",
        "INSERT INTO ivr_menus (name, timeout_prompt)"
        " VALUES ('m', '{file:http://169.254.169.254/latest/meta-data}')",
        asyncpg.CheckViolationError,
        "ivr_menus_timeout_prompts",
    ),
    (
        "prompt array of two dimensions",
        "INSERT INTO ivr_menus (name, greeting) VALUES ('m', '{{tts:a,tts:b},{tts:c,tts:d}}')",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    (
        "more than 20 prompts",
        "INSERT INTO ivr_menus (name, greeting)"
        " SELECT 'm', array_agg('tts:' || i) FROM generate_series(1, 21) AS i",
        asyncpg.CheckViolationError,
        "ivr_menus_greeting_prompts",
    ),
    (
        "menu description over 1000 characters",
        "INSERT INTO ivr_menus (name, description) VALUES ('m', repeat('d', 1001))",
        asyncpg.CheckViolationError,
        "ivr_menus_description",
    ),
    (
        "empty prompt value",
        "INSERT INTO ivr_menus (name, invalid_prompt) VALUES ('m', '{\"tts: \"}')",
        asyncpg.CheckViolationError,
        "ivr_menus_invalid_prompts",
    ),
    (
        "NULL prompt element",
        "INSERT INTO ivr_menus (name, timeout_prompt) VALUES ('m', ARRAY['file:a', NULL])",
        asyncpg.CheckViolationError,
        "ivr_menus_timeout_prompts",
    ),
    (
        "first digit timeout too short",
        "INSERT INTO ivr_menus (name, first_digit_timeout) VALUES ('m', 0.1)",
        asyncpg.CheckViolationError,
        "ivr_menus_first_digit_timeout",
    ),
    (
        "inter digit timeout too long",
        "INSERT INTO ivr_menus (name, inter_digit_timeout) VALUES ('m', 31)",
        asyncpg.CheckViolationError,
        "ivr_menus_inter_digit_timeout",
    ),
    (
        "max digits 0",
        "INSERT INTO ivr_menus (name, max_digits) VALUES ('m', 0)",
        asyncpg.CheckViolationError,
        "ivr_menus_max_digits",
    ),
    (
        "terminator 5",
        "INSERT INTO ivr_menus (name, terminator) VALUES ('m', '5')",
        asyncpg.CheckViolationError,
        "ivr_menus_terminator",
    ),
    (
        "max retries 11",
        "INSERT INTO ivr_menus (name, max_retries) VALUES ('m', 11)",
        asyncpg.CheckViolationError,
        "ivr_menus_max_retries",
    ),
    (
        "exhausted action unknown",
        "INSERT INTO ivr_menus (name, exhausted_action) VALUES ('m', 'explode')",
        asyncpg.CheckViolationError,
        "ivr_menus_exhausted_action",
    ),
    (
        "exhausted enqueue without queue",
        "INSERT INTO ivr_menus (name, exhausted_action) VALUES ('m', 'enqueue')",
        asyncpg.CheckViolationError,
        "ivr_menus_exhausted_action",
    ),
    (
        "hangup with a target",
        "INSERT INTO ivr_menus (name, exhausted_action, exhausted_target)"
        " VALUES ('m', 'hangup', 'x')",
        asyncpg.CheckViolationError,
        "ivr_menus_exhausted_action",
    ),
    (
        "schedule without closed action",
        "INSERT INTO ivr_menus (name, schedule_id) VALUES ('m', 1)",
        asyncpg.CheckViolationError,
        "ivr_menus_schedule_needs_closed_action",
    ),
    (
        "closed target without action",
        "INSERT INTO ivr_menus (name, closed_target) VALUES ('m', 'x')",
        asyncpg.CheckViolationError,
        "ivr_menus_closed_action",
    ),
    (
        "holiday dial to a name",
        "INSERT INTO ivr_menus (name, holiday_action, holiday_target) VALUES ('m', 'dial', 'bob')",
        asyncpg.CheckViolationError,
        "ivr_menus_holiday_action",
    ),
    (
        "unknown schedule",
        "INSERT INTO ivr_menus (name, schedule_id, closed_action) VALUES ('m', 99, 'hangup')",
        asyncpg.ForeignKeyViolationError,
        "ivr_menus_schedule_id_fkey",
    ),
    (
        "language english",
        "INSERT INTO ivr_menus (name, language) VALUES ('m', 'english')",
        asyncpg.CheckViolationError,
        "ivr_menus_language",
    ),
    # options
    (
        "option digits with a letter",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '1a', 'hangup')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_digits",
    ),
    (
        "option digits empty",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '', 'hangup')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_digits",
    ),
    (
        "set running a shell command at hangup (api_hangup_hook)",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'set', 'api_hangup_hook=system touch /tmp/pwned')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "set running an application on answer (execute_on_answer)",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'set', 'execute_on_answer=system id')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "set value with a line break",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'set', E'lang=fr\\n\\nsendmsg')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "option position out of range",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, position)"
        " VALUES (1, '1', 'hangup', 1001)",
        asyncpg.CheckViolationError,
        "ivr_menu_options_position",
    ),
    (
        "option action unknown",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '1', 'goto')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "submenu without target",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '1', 'submenu')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "submenu empty target",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'submenu', '')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "enqueue bad priority",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'enqueue', 'support:high')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "dial a name",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'dial', 'alice')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "transfer with spaces",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'transfer', '555 0100')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "set without =",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'set', 'lang')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "back with a target",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " VALUES (1, '1', 'back', 'main')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_action",
    ),
    (
        "play without prompt",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '1', 'play')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_play_needs_prompt",
    ),
    (
        "option bad prompt",
        "INSERT INTO ivr_menu_options (menu_id, digits, action, prompt)"
        " VALUES (1, '1', 'play', '{hello}')",
        asyncpg.CheckViolationError,
        "ivr_menu_options_prompts",
    ),
    (
        "option of unknown menu",
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (99, '1', 'hangup')",
        asyncpg.ForeignKeyViolationError,
        "ivr_menu_options_menu_id_fkey",
    ),
    (
        "duplicate digits",
        "INSERT INTO ivr_menu_options (menu_id, digits, action)"
        " VALUES (1, '1', 'hangup'), (1, '1', 'back')",
        asyncpg.UniqueViolationError,
        "ivr_menu_options_digits_unique",
    ),
    # queues
    (
        "queue strategy unknown",
        "INSERT INTO queues (name, strategy) VALUES ('q', 'lifo')",
        asyncpg.CheckViolationError,
        "queues_strategy",
    ),
    (
        "max wait 0",
        "INSERT INTO queues (name, max_wait_seconds) VALUES ('q', 0)",
        asyncpg.CheckViolationError,
        "queues_max_wait_seconds",
    ),
    (
        "max length negative",
        "INSERT INTO queues (name, max_length) VALUES ('q', -1)",
        asyncpg.CheckViolationError,
        "queues_max_length",
    ),
    (
        "announce every 5 s",
        "INSERT INTO queues (name, announce_interval) VALUES ('q', 5)",
        asyncpg.CheckViolationError,
        "queues_announce_interval",
    ),
    (
        "wrapup too long",
        "INSERT INTO queues (name, wrapup_seconds) VALUES ('q', 3601)",
        asyncpg.CheckViolationError,
        "queues_wrapup_seconds",
    ),
    (
        "ring timeout 1",
        "INSERT INTO queues (name, ring_timeout) VALUES ('q', 1)",
        asyncpg.CheckViolationError,
        "queues_ring_timeout",
    ),
    (
        "max no answer 0",
        "INSERT INTO queues (name, max_no_answer) VALUES ('q', 0)",
        asyncpg.CheckViolationError,
        "queues_max_no_answer",
    ),
    (
        "moh class with spaces",
        "INSERT INTO queues (name, moh_class) VALUES ('q', 'my music')",
        asyncpg.CheckViolationError,
        "queues_moh_class",
    ),
    (
        "overflow to menu without target",
        "INSERT INTO queues (name, overflow_action) VALUES ('q', 'menu')",
        asyncpg.CheckViolationError,
        "queues_overflow",
    ),
    (
        "overflow action unknown",
        "INSERT INTO queues (name, overflow_action, overflow_target)"
        " VALUES ('q', 'fax', 'x')",
        asyncpg.CheckViolationError,
        "queues_overflow",
    ),
    (
        "hangup overflow with target",
        "INSERT INTO queues (name, overflow_target) VALUES ('q', 'main')",
        asyncpg.CheckViolationError,
        "queues_overflow",
    ),
    (
        "exit key without action",
        "INSERT INTO queues (name, exit_key) VALUES ('q', '0')",
        asyncpg.CheckViolationError,
        "queues_exit",
    ),
    (
        "exit action without key",
        "INSERT INTO queues (name, exit_action) VALUES ('q', 'hangup')",
        asyncpg.CheckViolationError,
        "queues_exit",
    ),
    (
        "exit key two digits",
        "INSERT INTO queues (name, exit_key, exit_action) VALUES ('q', '00', 'hangup')",
        asyncpg.CheckViolationError,
        "queues_exit_key",
    ),
    (
        "service level 0",
        "INSERT INTO queues (name, service_level_seconds) VALUES ('q', 0)",
        asyncpg.CheckViolationError,
        "queues_service_level_seconds",
    ),
    (
        "tier widen negative",
        "INSERT INTO queues (name, tier_widen_seconds) VALUES ('q', -1)",
        asyncpg.CheckViolationError,
        "queues_tier_widen_seconds",
    ),
    (
        "skills not an object",
        "INSERT INTO queues (name, required_skills) VALUES ('q', '[1]')",
        asyncpg.CheckViolationError,
        "queues_required_skills",
    ),
    (
        "skill level 11",
        "INSERT INTO queues (name, required_skills) VALUES ('q', '{\"english\": 11}')",
        asyncpg.CheckViolationError,
        "queues_required_skills",
    ),
    (
        "skill level fractional",
        "INSERT INTO queues (name, required_skills) VALUES ('q', '{\"english\": 2.5}')",
        asyncpg.CheckViolationError,
        "queues_required_skills",
    ),
    (
        "skill level a string",
        "INSERT INTO queues (name, required_skills) VALUES ('q', '{\"english\": \"5\"}')",
        asyncpg.CheckViolationError,
        "queues_required_skills",
    ),
    # agents
    (
        "username with capitals",
        "INSERT INTO agents (username, display_name) VALUES ('Bob', 'B')",
        asyncpg.CheckViolationError,
        "agents_username_slug",
    ),
    (
        "blank display name",
        "INSERT INTO agents (username, display_name) VALUES ('bob', '')",
        asyncpg.CheckViolationError,
        "agents_display_name_label",
    ),
    (
        "agent kind phone",
        "INSERT INTO agents (username, display_name, kind) VALUES ('bob', 'B', 'phone')",
        asyncpg.CheckViolationError,
        "agents_kind",
    ),
    (
        "sip agent without extension",
        "INSERT INTO agents (username, display_name, kind) VALUES ('bob', 'B', 'sip')",
        asyncpg.CheckViolationError,
        "agents_sip_needs_extension",
    ),
    (
        "extension with letters",
        "INSERT INTO agents (username, display_name, extension) VALUES ('bob', 'B', '20a')",
        asyncpg.CheckViolationError,
        "agents_extension_digits",
    ),
    (
        "role root",
        "INSERT INTO agents (username, display_name, role) VALUES ('bob', 'B', 'root')",
        asyncpg.CheckViolationError,
        "agents_role",
    ),
    (
        "agent skills with bad name",
        "INSERT INTO agents (username, display_name, skills)"
        " VALUES ('bob', 'B', '{\"Big Skill\": 1}')",
        asyncpg.CheckViolationError,
        "agents_skills",
    ),
    # members
    (
        "tier 0",
        "INSERT INTO queue_members (queue_id, agent_id, tier) VALUES (1, 1, 0)",
        asyncpg.CheckViolationError,
        "queue_members_tier",
    ),
    (
        "penalty 101",
        "INSERT INTO queue_members (queue_id, agent_id, penalty) VALUES (1, 1, 101)",
        asyncpg.CheckViolationError,
        "queue_members_penalty",
    ),
    (
        "member of unknown queue",
        "INSERT INTO queue_members (queue_id, agent_id) VALUES (9, 1)",
        asyncpg.ForeignKeyViolationError,
        "queue_members_queue_id_fkey",
    ),
    # extensions
    (
        "extension number with letters",
        "INSERT INTO extensions (number, kind, menu_id) VALUES ('12a', 'menu', 1)",
        asyncpg.CheckViolationError,
        "extensions_number",
    ),
    (
        "extension kind fax",
        "INSERT INTO extensions (number, kind) VALUES ('1', 'fax')",
        asyncpg.CheckViolationError,
        "extensions_kind",
    ),
    (
        "menu extension without menu",
        "INSERT INTO extensions (number, kind, queue_id) VALUES ('1', 'menu', 1)",
        asyncpg.CheckViolationError,
        "extensions_kind_reference",
    ),
    (
        "queue extension with two targets",
        "INSERT INTO extensions (number, kind, queue_id, menu_id) VALUES ('1', 'queue', 1, 1)",
        asyncpg.CheckViolationError,
        "extensions_kind_reference",
    ),
    (
        "user extension without endpoint",
        "INSERT INTO extensions (number, kind) VALUES ('1', 'user')",
        asyncpg.CheckViolationError,
        "extensions_kind_reference",
    ),
    (
        "user extension blank endpoint",
        "INSERT INTO extensions (number, kind, dial_target) VALUES ('1', 'user', '  ')",
        asyncpg.CheckViolationError,
        "extensions_dial_target",
    ),
    (
        "user extension endpoint adding a second dial-string leg",
        "INSERT INTO extensions (number, kind, dial_target)"
        " VALUES ('1', 'user', '1001,sofia/gateway/carrier/+900123')",
        asyncpg.CheckViolationError,
        "extensions_dial_target",
    ),
    (
        "closure in a year programs cannot hold",
        "INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on)"
        " VALUES (1, 'x', '2026-01-01', 'infinity')",
        asyncpg.CheckViolationError,
        "schedule_closures_dates",
    ),
    (
        "extension to unknown agent",
        "INSERT INTO extensions (number, kind, agent_id) VALUES ('1', 'agent', 42)",
        asyncpg.ForeignKeyViolationError,
        "extensions_agent_id_fkey",
    ),
    # cdrs
    (
        "cdr engine unknown",
        "INSERT INTO cdrs (call_id, engine, started_at) VALUES ('c', 'yate', now())",
        asyncpg.CheckViolationError,
        "cdrs_engine",
    ),
    (
        "cdr disposition unknown",
        "INSERT INTO cdrs (call_id, engine, started_at, disposition)"
        " VALUES ('c', 'asterisk', now(), 'lost')",
        asyncpg.CheckViolationError,
        "cdrs_disposition",
    ),
    (
        "cdr negative wait",
        "INSERT INTO cdrs (call_id, engine, started_at, wait_seconds)"
        " VALUES ('c', 'asterisk', now(), -1)",
        asyncpg.CheckViolationError,
        "cdrs_wait_seconds",
    ),
    (
        "cdr without start",
        "INSERT INTO cdrs (call_id, engine) VALUES ('c', 'asterisk')",
        asyncpg.NotNullViolationError,
        "",
    ),
]


@pytest.mark.parametrize(
    ("statement", "error", "constraint"),
    [pytest.param(s, e, c, id=label) for label, s, e, c in BAD_ROWS],
)
async def test_constraint_rejects_bad_row(
    pg_pool: asyncpg.Pool, statement: str, error: type[Exception], constraint: str
) -> None:
    await pg_pool.execute(SETUP)
    with pytest.raises(error) as excinfo:
        await pg_pool.execute(statement)
    if constraint:
        assert excinfo.value.constraint_name == constraint  # type: ignore[attr-defined]
        assert constraint in str(excinfo.value)


async def test_good_rows_are_accepted(pg_pool: asyncpg.Pool) -> None:
    # The mirror image of the table above: valid values right at the limits.
    await pg_pool.execute(SETUP)
    await pg_pool.execute(
        """
        INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)
             VALUES (1, 0, '00:00', '24:00'), (1, 6, '09:00', '09:01');
        INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on)
             VALUES (1, 'May Day', '2026-05-01', '2026-05-01');
        INSERT INTO ivr_menus (name, greeting, invalid_prompt, first_digit_timeout,
                               inter_digit_timeout, max_digits, terminator, max_retries,
                               exhausted_action, exhausted_target, schedule_id, closed_action,
                               closed_target, holiday_action, language)
             VALUES ('m-2_x', '{file:a,"tts:Hi {{ caller }}",digits:12,number:5,silence:250}',
                     '{}', 0.5, 30, 20, '', 0, 'transfer', 'sip:desk@example.com', 1,
                     'enqueue', 'support:-3', 'hangup', 'pt-BR');
        INSERT INTO ivr_menu_options (menu_id, digits, action, target, prompt) VALUES
             (1, '1', 'submenu', 'billing', NULL), (1, '2', 'back', NULL, NULL),
             (1, '3', 'repeat', NULL, NULL), (1, '4', 'main', NULL, NULL),
             (1, '5', 'enqueue', 'support', NULL), (1, '6', 'dial', '+4930123', NULL),
             (1, '7', 'play', NULL, '{file:x}'), (1, '8', 'set', 'lang=fr', NULL),
             (1, '*#0123456789*#01234', 'hangup', NULL, NULL);
        INSERT INTO queues (name, strategy, announce_interval, overflow_action, overflow_target,
                            exit_key, exit_action, required_skills)
             VALUES ('q', 'skills', 0, 'extension', '100', '#', 'hangup', '{"english": 10}');
        INSERT INTO agents (username, display_name, kind, extension, skills)
             VALUES ('bob', 'Bob', 'sip', '2002', '{"english": 1, "french-2": 10}');
        INSERT INTO queue_members (queue_id, agent_id, tier, penalty) VALUES (1, 1, 9, 100);
        INSERT INTO extensions (number, kind, menu_id) VALUES ('*97', 'menu', 1);
        INSERT INTO extensions (number, kind, dial_target) VALUES ('+15550100', 'user', 'u/1');
        INSERT INTO cdrs (call_id, engine, started_at, disposition, wait_seconds)
             VALUES ('c', 'freeswitch', now(), 'voicemail', 0);
        """
    )
    assert await pg_pool.fetchval("SELECT count(*) FROM ivr_menu_options") == 9


async def test_timezone_is_checked_against_the_database(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match='unknown time zone "Mars/Olympus"'):
        await pg_pool.execute("INSERT INTO schedules (name, timezone) VALUES ('x', 'Mars/Olympus')")
    await pg_pool.execute("INSERT INTO schedules (name, timezone) VALUES ('x', 'America/Chicago')")
    with pytest.raises(asyncpg.CheckViolationError, match="unknown time zone"):
        await pg_pool.execute("UPDATE schedules SET timezone = 'CEST' WHERE name = 'x'")
    assert await pg_pool.fetchval("SELECT timezone FROM schedules") == "America/Chicago"


async def test_restrict_keeps_referenced_rows(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute(SETUP)
    await pg_pool.execute(
        "UPDATE ivr_menus SET schedule_id = 1, closed_action = 'hangup';"
        "INSERT INTO extensions (number, kind, queue_id) VALUES ('100', 'queue', 1)"
    )
    with pytest.raises(asyncpg.RestrictViolationError):
        await pg_pool.execute("DELETE FROM schedules WHERE id = 1")
    with pytest.raises(asyncpg.RestrictViolationError):
        await pg_pool.execute("DELETE FROM queues WHERE id = 1")


async def test_cascades_remove_children(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute(SETUP)
    await pg_pool.execute(
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES (1, '1', 'hangup');"
        "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)"
        " VALUES (1, 0, '09:00', '17:00');"
        "INSERT INTO queue_members (queue_id, agent_id) VALUES (1, 1);"
        "DELETE FROM ivr_menus; DELETE FROM schedules; DELETE FROM agents;"
    )
    for table in ("ivr_menu_options", "schedule_hours", "queue_members"):
        assert await pg_pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_updated_at_is_maintained(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute(SETUP)
    before = await pg_pool.fetchval("SELECT updated_at FROM queues WHERE id = 1")
    await pg_pool.execute("UPDATE queues SET updated_at = '2000-01-01', max_length = 5")
    after = await pg_pool.fetchval("SELECT updated_at FROM queues WHERE id = 1")
    assert after >= before and after.year > 2000


async def test_readme_hand_edit_example_works(pg_pool: asyncpg.Pool) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```sql\nBEGIN;") + len("```sql\n")
    example = readme[start : readme.index("```", start)]
    await pg_pool.execute(example)
    rows = await pg_pool.fetch(
        "SELECT o.digits, o.action, o.target FROM ivr_menu_options o"
        " JOIN extensions e ON e.menu_id = o.menu_id WHERE e.number = '7000' ORDER BY position"
    )
    assert [tuple(r) for r in rows] == [
        ("1", "enqueue", "billing"),
        ("2", "enqueue", "sales:5"),
        ("9", "repeat", None),
        ("0", "back", None),
    ]
