"""Prompt specs, schedules (DST boundaries), prompt templates and MenuSet serialisation."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from time import perf_counter

import pytest

from ivr.calls import Prompt
from ivr.compile import MenuSet
from ivr.model import (
    ClosureDef,
    HoursDef,
    MenuDef,
    OptionDef,
    PromptSpecError,
    ScheduleDef,
    parse_action,
    parse_prompt,
)
from ivr.prompts import MAX_WORK, check_template, compile_template, render, sample_context
from ivr.schedules import Schedule
from ivr.testing import build_menuset


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


# ---------------------------------------------------------------- prompt specs


@pytest.mark.parametrize(
    ("spec", "prompt"),
    [
        ("file:ivr/welcome", Prompt("file", "ivr/welcome")),
        ("tts:Hello {{ caller }}", Prompt("tts", "Hello {{ caller }}")),
        ("digits:12#", Prompt("digits", "12#")),
        ("number:42", Prompt("number", "42")),
        ("number:-7", Prompt("number", "-7")),
        ("silence:500", Prompt("silence", "500")),
        ("file: ivr/x ", Prompt("file", "ivr/x")),
    ],
)
def test_parse_prompt(spec: str, prompt: Prompt) -> None:
    assert parse_prompt(spec) == prompt


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("welcome", "must look like kind:value"),
        ("wav:ivr/welcome", "must look like kind:value"),
        ("file:", "empty value"),
        ("tts:   ", "empty value"),
        ("number:forty", "whole number"),
        ("digits:12x", "digits may only hold"),
        ("silence:0", "milliseconds from 1 to 60000"),
        ("silence:90000", "milliseconds from 1 to 60000"),
        ("file:ivr/my welcome", "sound name relative"),
        # Hardening findings: menu text reached FreeSWITCH's command stream and file system.
        ("tts:Welcome\n\nsendmsg\ncall-command: execute\nexecute-app-name: playback",
         "control characters"),
        ("tts:Hi\r", "control characters"),
        ("tts:Hi \x85 there", "control characters"),
        ("tts:${system(touch /tmp/pwned)}", "'\\$\\{'"),
        ("tts:{{ caller }} ${x}", "'\\$\\{'"),  # a template, checked before rendering too
        ("file:../../etc/passwd", "sound name relative"),
        ("file:ivr/../../../etc/passwd", "sound name relative"),
        ("file:/etc/passwd", "sound name relative"),
        ("file:http://169.254.169.254/latest/meta-data", "sound name relative"),
        ("file:shout://evil.example/x.mp3", "sound name relative"),
        ("file:.hidden", "sound name relative"),
        ("file:a,b", "sound name relative"),  # Asterisk splits its media list on commas
    ],
)
def test_parse_prompt_rejects(spec: str, message: str) -> None:
    with pytest.raises(PromptSpecError, match=message):
        parse_prompt(spec)


def test_parse_action_targets() -> None:
    a = parse_action("enqueue", "sales:5")
    assert (a.queue, a.priority) == ("sales", 5)
    assert parse_action("enqueue", "sales").priority == 0
    s = parse_action("set", "lang=fr=x")
    assert (s.variable, s.value) == ("lang", "fr=x")
    with pytest.raises(ValueError, match="queue or queue:priority"):
        parse_action("enqueue", "sales:high")


# ---------------------------------------------------------------- schedules

WEEKDAYS_9_TO_17 = tuple(HoursDef(d, time(9), time(17)) for d in range(5))


def schedule(tz: str, hours: tuple[HoursDef, ...] = WEEKDAYS_9_TO_17, closures=()) -> Schedule:
    return Schedule.from_def(ScheduleDef("office", tz, hours, tuple(closures)))


def test_hours_are_half_open_in_local_time() -> None:
    s = schedule("Europe/Paris")
    # Wednesday 2026-01-14, Paris is UTC+1 in winter.
    assert s.state(utc(2026, 1, 14, 7, 59)) == "closed"
    assert s.state(utc(2026, 1, 14, 8, 0)) == "open"
    assert s.state(utc(2026, 1, 14, 15, 59, 59)) == "open"
    assert s.state(utc(2026, 1, 14, 16, 0)) == "closed"
    assert s.state(utc(2026, 1, 17, 12, 0)) == "closed"  # Saturday


def test_several_intervals_a_day() -> None:
    s = schedule("UTC", (HoursDef(0, time(9), time(12)), HoursDef(0, time(14), time(18))))
    assert s.is_open(utc(2026, 1, 12, 11, 0))
    assert not s.is_open(utc(2026, 1, 12, 13, 0))
    assert s.is_open(utc(2026, 1, 12, 14, 0))


def test_midnight_close_and_overnight() -> None:
    late = schedule("UTC", (HoursDef(4, time(18), time(0)),))  # Friday 18:00 - midnight
    assert late.is_open(utc(2026, 1, 16, 23, 59))
    assert not late.is_open(utc(2026, 1, 17, 0, 0))
    night = schedule("UTC", (HoursDef(4, time(22), time(6)),))  # Friday 22:00 - Saturday 06:00
    assert night.is_open(utc(2026, 1, 16, 22, 30))
    assert night.is_open(utc(2026, 1, 17, 5, 59))
    assert not night.is_open(utc(2026, 1, 17, 6, 0))
    assert not night.is_open(utc(2026, 1, 16, 5, 0))  # Friday morning: Thursday had no night


def test_closures_are_holidays_whole_local_days() -> None:
    xmas = ClosureDef("Christmas", date(2026, 12, 24), date(2026, 12, 26))
    s = schedule("America/New_York", closures=[xmas])
    # 2026-12-24 is a Thursday. 14:00 UTC = 09:00 EST.
    assert s.state(utc(2026, 12, 24, 14, 0)) == "holiday"
    assert s.holiday(utc(2026, 12, 24, 14, 0)) == xmas
    # 2026-12-27 03:00 UTC is still Dec 26 in New York: holiday.
    assert s.state(utc(2026, 12, 27, 3, 0)) == "holiday"
    assert s.state(utc(2026, 12, 28, 14, 0)) == "open"  # Monday after
    assert s.holiday(utc(2026, 12, 28, 14, 0)) is None


def test_spring_forward_boundary_new_york() -> None:
    """2026-03-08: clocks go 02:00 EST -> 03:00 EDT; opening hours follow the wall clock."""
    s = schedule("America/New_York", tuple(HoursDef(d, time(9), time(17)) for d in range(7)))
    # Saturday before: 09:00 EST = 14:00 UTC.
    assert not s.is_open(utc(2026, 3, 7, 13, 59))
    assert s.is_open(utc(2026, 3, 7, 14, 0))
    # Sunday of the change and after: 09:00 EDT = 13:00 UTC.
    assert not s.is_open(utc(2026, 3, 8, 12, 59))
    assert s.is_open(utc(2026, 3, 8, 13, 0))
    assert s.is_open(utc(2026, 3, 9, 20, 59))  # 16:59 EDT
    assert not s.is_open(utc(2026, 3, 9, 21, 0))  # 17:00 EDT
    # An interval inside the skipped hour: 02:00-03:00 local never happens that night.
    night = schedule("America/New_York", (HoursDef(6, time(2), time(3)),))
    assert not night.is_open(utc(2026, 3, 8, 6, 59))  # 01:59 EST
    assert not night.is_open(utc(2026, 3, 8, 7, 0))  # 03:00 EDT, skipped the hour
    assert night.is_open(utc(2026, 3, 15, 6, 30))  # next Sunday 02:30 EDT


def test_fall_back_boundary_new_york() -> None:
    """2026-11-01: 01:00-02:00 happens twice (EDT then EST); both are inside 01:00-02:00."""
    s = schedule("America/New_York", (HoursDef(6, time(1), time(2)),))
    assert not s.is_open(utc(2026, 11, 1, 4, 59))  # 00:59 EDT
    assert s.is_open(utc(2026, 11, 1, 5, 0))  # 01:00 EDT
    assert s.is_open(utc(2026, 11, 1, 6, 30))  # 01:30 EST, the second time round
    assert not s.is_open(utc(2026, 11, 1, 7, 0))  # 02:00 EST
    day = schedule("America/New_York", (HoursDef(6, time(9), time(17)),))
    assert s.local(utc(2026, 11, 1, 14, 0)).hour == 9  # 09:00 EST = 14:00 UTC after the change
    assert day.is_open(utc(2026, 11, 1, 14, 0))
    assert not day.is_open(utc(2026, 11, 1, 13, 59))


def test_paris_dst_end_of_march() -> None:
    s = schedule("Europe/Paris", tuple(HoursDef(d, time(9), time(17)) for d in range(7)))
    assert s.is_open(utc(2026, 3, 28, 8, 0))  # Saturday 09:00 CET
    assert not s.is_open(utc(2026, 3, 29, 6, 59))  # Sunday 08:59 CEST
    assert s.is_open(utc(2026, 3, 29, 7, 0))  # Sunday 09:00 CEST


def test_schedule_rejects_naive_datetimes_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        schedule("UTC").is_open(datetime(2026, 1, 1, 12))
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        schedule("Mars/Olympus")


# ---------------------------------------------------------------- prompt templates


def test_render_templates_with_call_variables() -> None:
    prompts = (
        Prompt("file", "ivr/welcome"),
        Prompt("tts", "Hello {{ caller_name }}, you called {{ called }}"),
        Prompt("number", "{{ queue_position }}"),
        Prompt("file", "ivr/{{ language }}/menu"),
    )
    ctx = {"caller_name": "Bob", "called": "100", "queue_position": 3, "language": "fr"}
    assert render(prompts, lambda: ctx) == (
        Prompt("file", "ivr/welcome"),
        Prompt("tts", "Hello Bob, you called 100"),
        Prompt("number", "3"),
        Prompt("file", "ivr/fr/menu"),
    )


def test_render_skips_what_cannot_render_and_never_raises() -> None:
    prompts = (
        Prompt("tts", "{{ nope }}"),
        Prompt("number", "{{ caller }}"),  # renders, but not a number
        Prompt("file", "ok"),
    )
    assert render(prompts, lambda: {"caller": "+1555"}) == (Prompt("file", "ok"),)


def test_render_fast_path_does_not_build_a_context() -> None:
    static = (Prompt("file", "a"),)

    def boom() -> dict[str, str]:
        raise AssertionError("context built for static prompts")

    assert render(static, boom) is static


def test_check_template_catches_errors_at_validation() -> None:
    assert check_template(Prompt("tts", "Hi {{ caller }}")) is None
    assert "undefined" in (check_template(Prompt("tts", "Hi {{ callr }}")) or "")
    assert "template error" in (check_template(Prompt("tts", "Hi {{ caller ")) or "")
    assert check_template(Prompt("tts", "{{ vars.lang }}"), {"lang": "fr"}) is None
    assert check_template(Prompt("tts", "{{ vars.lang }}")) is not None
    # The sandbox refuses attribute access to internals.
    assert check_template(Prompt("tts", "{{ caller.__class__.__mro__ }}")) is not None
    assert check_template(Prompt("tts", "{% if false %}x{% endif %}")) == "renders to an empty text"
    # Templates cannot build huge values (validation renders them).
    assert "too long" in (check_template(Prompt("tts", '{{ "a" * 10**9 }}')) or "")
    assert "exponent" in (check_template(Prompt("tts", "{{ 2 ** 100000 }}")) or "")
    assert "more than 1000 characters" in (
        check_template(Prompt("tts", '{% for i in range(50) %}{{ "x" * 21 }}{% endfor %}')) or ""
    )
    assert check_template(Prompt("tts", '{{ "ab" * 3 }}')) is None


# Finding: a template with nested range(8000) loops passed validation, took 1.6 s to save
# (blocking the API) and stalled every call of the worker rendering it (an unrelated caller
# waited 5 s for the first prompt). Templates are now a bounded subset of jinja2, refused
# when saved, and their rendering is bounded wherever it runs.
HOSTILE_TEMPLATES = [
    ("{% for i in range(8000) %}{% for j in range(8000) %}{% endfor %}{% endfor %}x", "nested"),
    ("{% for i in range(8000) %}x{% endfor %}", "range() makes at most 50"),
    ("{% for c in caller * 10 %}{{ c }}{% endfor %}", "a loop runs over at most 50"),
    ("{% for i in range(3) recursive %}{{ loop(range(3)) }}{% endfor %}", "recursive"),
    ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(20) }}", "macro is not allowed"),
    ('{% set x = "x" * 999 %}{% set x = x ~ x %}{{ x|length }}', "assign is not allowed"),
    ('{% with x = 1 %}{{ x }}{% endwith %}', "is not allowed"),
    ('{% include "other" %}', "include is not allowed"),
    ('{{ ("x" * 999)|replace("x", "yy")|length }}', "more than 1000 characters"),
    ('{{ ("x" * 600 ~ "y" * 600)|length }}', "more than 1000 characters"),
    ('{{ ("x" * 600 + "y" * 600)|length }}', "more than 1000 characters"),
    ('{{ range(50)|join("x" * 30)|length }}', "more than 1000 characters"),
    ('{{ "%999999999s"|format(1) }}', "filter 'format' is not allowed"),
    ('{{ "x"|center(999999999) }}', "filter 'center' is not allowed"),
    ('{{ caller|map("upper")|list }}', "filter 'map' is not allowed"),
    ('{{ "%999999999s" % 1 }}', "'%' formatting"),
    ('{{ caller.replace("1", "2" * 999) }}', "the only call allowed"),
    ("{{ lipsum(1000) }}", "the only call allowed"),
    ("{{ ((2 ** 64) ** 64) ** 64 }}", "number too large"),
    ("{{ caller" + "|upper" * 20 + " }}", "nested more than"),
    ("{{ 1 + 1 }}" * 101, "too much work"),
]


@pytest.mark.parametrize(("source", "reason"), HOSTILE_TEMPLATES)
def test_hostile_templates_are_refused_quickly_when_saved(source: str, reason: str) -> None:
    started = perf_counter()
    problem = check_template(Prompt("tts", source)) or ""
    assert reason in problem, problem
    assert perf_counter() - started < 0.5
    # A version published before the limits existed still cannot stall a call.
    started = perf_counter()
    assert render((Prompt("tts", source), Prompt("tts", "ok")), sample_context) == (
        Prompt("tts", "ok"),)
    assert perf_counter() - started < 0.5


def test_the_costliest_allowed_templates_render_in_about_a_millisecond() -> None:
    """The worst cases found by search (tests and README report the figure): chains of the
    slowest filter on the longest text a template may hold, up to MAX_WORK steps."""
    worst = [
        "{{ (\"Ab \" * 333)" + "|capitalize" * 7 + "|length }}" * 24,
        "{{ (\"Ab \" * 333)" + "|capitalize" * 4 + "|length }}" * 33,
        "{% for d in caller %}{{ d|upper }}-{% endfor %}",
        '{{ (range(50)|join(",") ~ "x" * 800)|replace(",", ";")|length }}' * 22,
    ]
    for source in worst:
        _, work = compile_template(source)
        assert work <= MAX_WORK
        assert check_template(Prompt("tts", source)) is None
        prompts = (Prompt("tts", source),)
        best = min(_timed_render(prompts) for _ in range(5))
        assert best < 0.02, (source[:60], best)  # measured ~1 ms on a busy 2-core machine


def _timed_render(prompts: tuple[Prompt, ...]) -> float:
    started = perf_counter()
    assert render(prompts, sample_context)
    return perf_counter() - started


# ---------------------------------------------------------------- MenuSet serialisation


def sample_menuset(version: int = 3) -> MenuSet:
    return build_menuset(
        [
            MenuDef(
                "main",
                greeting=("file:ivr/welcome", "tts:Hi {{ caller }}"),
                max_digits=2,
                schedule="office",
                closed_action="hangup",
                holiday_action="submenu",
                holiday_target="sales",
                options=(
                    OptionDef("1", "submenu", "sales", ("file:ivr/sales-intro",)),
                    OptionDef("12", "enqueue", "support:5"),
                    OptionDef("9", "set", "lang=fr", ("silence:200",)),
                ),
            ),
            MenuDef("sales", greeting=("file:ivr/sales",), options=(OptionDef("0", "back"),)),
        ],
        queues={"support"},
        schedules=[
            ScheduleDef(
                "office",
                "Europe/Paris",
                WEEKDAYS_9_TO_17,
                (ClosureDef("May Day", date(2026, 5, 1), date(2026, 5, 1)),),
            )
        ],
        version=version,
    )


def test_menuset_json_round_trip() -> None:
    ms = sample_menuset()
    loaded = MenuSet.from_json(ms.to_json())
    assert loaded == ms
    assert loaded.version == 3 and loaded.digest == ms.digest
    assert loaded.menus["main"].by_digits["12"].action.queue == "support"
    assert loaded.menus["main"].prefixes == frozenset({"1"})
    assert loaded.schedules["office"].state(utc(2026, 5, 1, 10)) == "holiday"


def test_digest_depends_on_content_only() -> None:
    a, b = sample_menuset(1), sample_menuset(2)
    assert a.digest == b.digest and a.version != b.version
    other = build_menuset([MenuDef("main", greeting=("file:x",))])
    assert other.digest != a.digest


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="malformed menu set"):
        MenuSet.from_json("{}")
    with pytest.raises(ValueError, match="malformed menu set"):
        MenuSet.from_json("not json")
    with pytest.raises(ValueError, match="unsupported menu set format"):
        MenuSet.from_json('{"format": 99}')
