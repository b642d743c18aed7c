"""One set of rules: the database's check functions (migration 003) and their Python twins
in ivr/model.py (used by the API schema and the IVR validator) agree on every probe."""

from __future__ import annotations

import asyncpg
from pydantic import TypeAdapter, ValidationError

from appserver.api.schemas import Label
from ivr.model import (
    RESERVED_VARIABLE_PREFIXES,
    SET_VARIABLE_RE,
    stored_prompt_problem,
    target_problem,
    unsafe_text_problem,
)

TEXTS = [chr(c) for c in range(1, 0xA2)] + [
    "${", "$", "{", "$ {", "a${b}", "\\${x}", "\u2028", "\ufeff", "\u00a0", "☎", "é"]
PROMPTS = [
    "file:ivr/welcome", "file: ivr/x ", "file:x.wav", "file:a/b/c-d_e.f", "file:../x",
    "file:a/../b", "file:/abs", "file:http://x/y", "file:shout://x", "file:a b", "file:.x",
    "file:a//b", "file:a,b", "file:ivr/{{ language }}/x", "file:{% if 1 %}../x{% endif %}",
    "tts:hi", "tts: ", "tts:a\nb", "tts:${x}", "tts:{{ x }}", "tts:" + "x" * 996,
    "tts:" + "x" * 997, "digits:12", "digits:abc", "number:1", "silence:500", "wav:x", "file:",
    "tts:\u3000", "TTS:x", " file:x", "file:x\x7f", "tts:a\x9fb",
]  # fmt: skip
NAMES = ["lang", "lang\n", "customer_tier", "a", "x" * 32, "x" * 33, "Lang", "_x", "1x", "apis",
         "a_hook", "hook", "x-y", "a.b", ""]
TARGETS = [
    ("set", "lang=fr"), ("set", "lang="), ("set", "lang"), ("set", "=x"),
    ("set", "api_hangup_hook=system rm -rf /"), ("set", "execute_on_answer=x"),
    ("set", "exec_after_bridge_app=x"), ("set", "bridge_pre_execute_bleg_app=x"),
    ("set", "session_in_hangup_hook=true"), ("set", "x_hook=y"), ("set", "lang=a\nb"),
    ("set", "lang=${system(id)}"), ("set", "lang=a=b"), ("set", "l=" + "v" * 126),
    ("set", "l=" + "v" * 127), ("set", None), ("submenu", "sales"), ("submenu", "Sales"),
    ("submenu", None), ("enqueue", "q:5"), ("enqueue", "q:-999999"), ("enqueue", "q:1234567"),
    ("dial", "1001"), ("dial", "1001\n"), ("transfer", "+1555"), ("transfer", "x y"),
    ("transfer", "a" * 129), ("hangup", None), ("hangup", "x"), ("play", None), ("nope", "x"),
]  # fmt: skip


async def test_safe_text_is_one_rule(pg_pool: asyncpg.Pool) -> None:
    for text in TEXTS:
        in_sql = await pg_pool.fetchval("SELECT callyard_is_safe_text($1)", text)
        assert in_sql == (unsafe_text_problem(text) is None), repr(text)


async def test_prompts_are_one_rule(pg_pool: asyncpg.Pool) -> None:
    for spec in PROMPTS + [f"tts:a{t}b" for t in TEXTS]:
        in_sql = await pg_pool.fetchval("SELECT callyard_valid_prompt($1)", spec)
        assert in_sql == (stored_prompt_problem(spec) is None), repr(spec)


async def test_set_variables_are_one_rule(pg_pool: asyncpg.Pool) -> None:
    names = NAMES + [n for p in RESERVED_VARIABLE_PREFIXES for n in (p, f"{p}_x", f"{p}x")]
    for name in names:
        in_sql = await pg_pool.fetchval("SELECT callyard_is_set_variable($1)", name)
        assert in_sql == bool(SET_VARIABLE_RE.fullmatch(name)), name
    assert not SET_VARIABLE_RE.fullmatch("api_hangup_hook") and SET_VARIABLE_RE.fullmatch("lang")


async def test_action_targets_are_one_rule(pg_pool: asyncpg.Pool) -> None:
    for action, target in TARGETS:
        in_sql = await pg_pool.fetchval("SELECT callyard_valid_action($1, $2)", action, target)
        assert in_sql == (target_problem(action, target) is None), (action, target)


async def test_labels_are_one_rule(pg_pool: asyncpg.Pool) -> None:
    label = TypeAdapter(Label)
    for text in [*TEXTS, "", " ", "  x ", "x" * 100, "x" * 101, "Bob", "☎" * 100]:
        try:
            label.validate_python(text)
            in_python = True
        except ValidationError:
            in_python = False
        assert await pg_pool.fetchval("SELECT callyard_is_label($1)", text) == in_python, text
