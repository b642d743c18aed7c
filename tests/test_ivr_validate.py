"""Validation: every rule, with the message naming menu and option."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time

import pytest

from ivr.compile import compile_menuset
from ivr.model import (
    ClosureDef,
    ExtensionDef,
    HoursDef,
    MenuDef,
    MenuSource,
    OptionDef,
    ScheduleDef,
)
from ivr.validate import MenuSetInvalid, validate

MAIN = MenuDef(
    "main",
    greeting=("file:ivr/welcome",),
    options=(OptionDef("1", "submenu", "sales"), OptionDef("2", "enqueue", "support")),
)
SALES = MenuDef("sales", greeting=("file:ivr/sales",), options=(OptionDef("0", "back"),))
OFFICE = ScheduleDef("office", "Europe/Paris", (HoursDef(0, time(9), time(17)),))


def source(*menus: MenuDef, **kw: object) -> MenuSource:
    base: dict[str, object] = {
        "menus": menus or (MAIN, SALES),
        "schedules": (OFFICE,),
        "extensions": (ExtensionDef("9999", "menu", "main"), ExtensionDef("200", "user", "alice")),
        "queues": frozenset({"support"}),
    }
    base.update(kw)
    return MenuSource(**base)  # type: ignore[arg-type]


def texts(src: MenuSource, severity: str = "error") -> list[str]:
    return [str(i) for i in validate(src) if i.severity == severity]


def with_option(option: OptionDef, menu: MenuDef = MAIN) -> MenuSource:
    return source(replace(menu, options=(*menu.options, option)), SALES)


def test_valid_source_has_no_issues() -> None:
    assert validate(source()) == []
    ms = compile_menuset(source(), 4)
    assert ms.version == 4 and set(ms.menus) == {"main", "sales"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            OptionDef("3", "submenu", "salez"),
            "menu 'main', option '3': action submenu target 'salez' does not exist",
        ),
        (OptionDef("3", "submenu", "main"), "option '3': action submenu targets its own menu"),
        (
            OptionDef("3", "enqueue", "billing"),
            "option '3': action enqueue target queue 'billing' does not exist (known: support)",
        ),
        (OptionDef("3", "enqueue", "support:urgent"), "must be queue or queue:priority"),
        (
            OptionDef("3", "dial", "201"),
            "option '3': action dial target '201' is not a defined extension",
        ),
        (OptionDef("3", "transfer", "sip:a b"), "option '3': action transfer destination"),
        (OptionDef("3", "play"), "option '3': action play needs the option's prompt"),
        (OptionDef("3", "set", "2x=1"), "option '3': action set target '2x=1' must be name=value"),
        # Hardening findings: `set` reached engine variables that run commands.
        (OptionDef("3", "set", "api_hangup_hook=system touch /tmp/x"), "is not an engine's own"),
        (OptionDef("3", "set", "execute_on_answer=system id"), "is not an engine's own"),
        (OptionDef("3", "set", "exec_after_bridge_app=system"), "is not an engine's own"),
        (OptionDef("3", "set", "bridge_pre_execute_bleg_app=x"), "is not an engine's own"),
        (OptionDef("3", "set", "my_hook=x"), "is not an engine's own"),
        (OptionDef("3", "set", "lang=fr\n\nsendmsg"), "value must not contain control"),
        (OptionDef("3", "set", "lang=${system(id)}"), "value must not contain '${'"),
        (
            OptionDef("3", "hangup", "", ("tts:Bye\n\nsendmsg\ncall-command: execute",)),
            "must not contain control characters",
        ),
        (OptionDef("3", "hangup", "", ("file:../../etc/passwd",)), "sound name relative"),
        (OptionDef("3", "back", "sales"), "option '3': action back takes no target"),
        (OptionDef("3", "jump", "sales"), "option '3': action 'jump' is not one of"),
        (
            OptionDef("3", "hangup", "", ("tts:Bye {{ nobody }}",)),
            "option '3': prompt 'tts:Bye "
            "{{ nobody }}' does not render: template error: 'nobody' is undefined",
        ),
        (
            OptionDef("3", "hangup", "", ("mp3:bye",)),
            "option '3': prompt: prompt 'mp3:bye' must look like kind:value",
        ),
        (OptionDef("1", "hangup"), "menu 'main', option '1': is defined twice"),
        (OptionDef("3a", "hangup"), "option '3a': digits must be 1 to 20 of 0-9, * and #"),
        (OptionDef("3#", "hangup"), "option '3#': contains the terminator '#'"),
        (OptionDef("34", "hangup"), "option '34': is 2 digits long but the menu's max_digits is 1"),
    ],
)
def test_option_errors(option: OptionDef, message: str) -> None:
    errors = texts(with_option(option))
    assert any(message in e for e in errors), errors
    with pytest.raises(MenuSetInvalid) as exc:
        compile_menuset(with_option(option))
    assert any(message in str(i) for i in exc.value.issues)


def test_prefix_options_are_legal() -> None:
    menu = replace(
        MAIN,
        max_digits=2,
        options=(*MAIN.options, OptionDef("3", "hangup"), OptionDef("31", "hangup")),
    )
    assert texts(source(menu, SALES)) == []


def test_star_option_is_legal_with_another_terminator() -> None:
    assert texts(with_option(OptionDef("*", "back"))) == []
    menu = replace(MAIN, terminator="", options=(*MAIN.options, OptionDef("#", "main")))
    assert texts(source(menu, SALES)) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"first_digit_timeout": 0.1}, "first_digit_timeout 0.1 must be a number from 0.5 to 60s"),
        (
            {"inter_digit_timeout": 99.0},
            "inter_digit_timeout 99.0 must be a number from 0.2 to 30s",
        ),
        ({"max_digits": 0}, "max_digits 0 must be a whole number from 1 to 20"),
        ({"max_retries": 11}, "max_retries 11 must be a whole number from 0 to 10"),
        ({"terminator": "5"}, "terminator '5' must be '#', '*' or empty"),
        ({"language": "French"}, "language 'French' must be a code"),
        ({"greeting": ("tts:{{ caller ",)}, "greeting 'tts:{{ caller ' does not render"),
        ({"invalid_prompt": ("number:x",)}, "invalid_prompt: prompt 'number:x'"),
        ({"exhausted_action": "play"}, "exhausted action 'play' is not one of back, dial"),
        ({"exhausted_action": "repeat"}, "exhausted action 'repeat' is not one of"),
        (
            {"exhausted_action": "submenu", "exhausted_target": "nowhere"},
            "exhausted action submenu target 'nowhere' does not exist",
        ),
        ({"schedule": "weekend"}, "schedule 'weekend' does not exist"),
        (
            {"schedule": "office", "closed_action": "enqueue", "closed_target": "nope"},
            "closed action enqueue target queue 'nope' does not exist",
        ),
        ({"name": "Main Menu"}, "menu name 'Main Menu' must be 1-64 letters"),
        # Finding: nested range(8000) loops passed validation and stalled workers.
        (
            {"greeting": ("tts:{% for i in range(8000) %}{% for j in range(8000) %}"
                          "{% endfor %}{% endfor %}x",)},
            "loops may not be nested",
        ),
        # Each template within bounds, together too much for one render of the greeting.
        (
            {"greeting": ("tts:{% for d in caller %}{{ d }}{% endfor %}",) * 2},
            "greeting: its templates do too much work together",
        ),
    ],
)
def test_menu_errors(changes: dict[str, object], message: str) -> None:
    menu = replace(MAIN, **changes)  # type: ignore[arg-type]
    errors = texts(source(menu, SALES))
    assert any(message in e for e in errors), errors


def test_template_may_use_variables_set_by_set_actions() -> None:
    menu = replace(
        MAIN,
        greeting=("tts:Language {{ vars.lang }}",),
        options=(*MAIN.options, OptionDef("9", "set", "lang=fr")),
    )
    assert texts(source(menu, SALES)) == []


def test_duplicate_menu_and_extension_collisions() -> None:
    src = source(
        MAIN,
        SALES,
        replace(SALES, greeting=("file:other",)),
        extensions=(
            ExtensionDef("9999", "menu", "main"),
            ExtensionDef("9999", "queue", "support"),
            ExtensionDef("12a", "user", "bob"),
            ExtensionDef("300", "menu", "missing"),
            ExtensionDef("301", "queue", "missing"),
            ExtensionDef("302", "robot", "x"),
        ),
    )
    errors = texts(src)
    assert "menu 'sales': is defined twice" in errors
    assert "extension '9999' collides with another extension (menu and queue)" in errors
    assert "extension '12a': number must be 1 to 32 of 0-9, *, # and +" in errors
    assert "extension '300': menu 'missing' does not exist" in errors
    assert "extension '301': queue 'missing' does not exist" in errors
    assert "extension '302': kind 'robot' must be menu, queue, agent or user" in errors


def test_schedule_errors() -> None:
    bad = ScheduleDef(
        "bad",
        "Atlantis/Capital",
        (HoursDef(7, time(9), time(10)), HoursDef(1, time(9), time(9))),
        (ClosureDef("oops", date(2026, 5, 2), date(2026, 5, 1)),),
    )
    errors = texts(source(schedules=(OFFICE, bad)))
    assert "schedule 'bad': unknown time zone 'Atlantis/Capital': use an IANA name" in errors[0]
    assert "schedule 'bad': weekday 7 must be 0 (Monday) to 6 (Sunday)" in errors
    assert "schedule 'bad': interval 09:00:00-09:00:00 is empty" in errors
    assert (
        "schedule 'bad': closure 'oops' ends (2026-05-01) before it starts (2026-05-02)" in errors
    )


def test_unreachable_menu_is_a_warning() -> None:
    lonely = MenuDef("lonely", greeting=("file:x",))
    src = source(MAIN, SALES, lonely)
    assert texts(src) == []
    assert texts(src, "warning") == ["menu 'lonely': is not reachable from any extension"]
    assert compile_menuset(src).warnings == ("menu 'lonely': is not reachable from any extension",)


def test_menu_reachable_through_dial_to_menu_extension_is_reachable() -> None:
    hidden = MenuDef("hidden", greeting=("file:x",))
    main = replace(MAIN, options=(*MAIN.options, OptionDef("5", "dial", "500")))
    exts = (ExtensionDef("9999", "menu", "main"), ExtensionDef("500", "menu", "hidden"))
    assert validate(source(main, SALES, hidden, extensions=exts)) == []


def test_loop_with_no_exit_is_an_error() -> None:
    a = MenuDef(
        "a",
        greeting=("file:a",),
        exhausted_action="submenu",
        exhausted_target="b",
        options=(OptionDef("1", "submenu", "b"),),
    )
    b = MenuDef("b", greeting=("file:b",), exhausted_action="submenu", exhausted_target="c")
    c = MenuDef(
        "c",
        greeting=("file:c",),
        exhausted_action="submenu",
        exhausted_target="a",
        options=(OptionDef("9", "hangup"),),
    )
    errors = texts(source(a, b, c, extensions=(ExtensionDef("1", "menu", "a"),)))
    assert len(errors) == 1, errors
    assert "loops forever when the caller presses nothing, with no exit: " in errors[0]
    assert "a (exhausted) -> b (exhausted) -> c (exhausted) -> a" in errors[0]
    # One fallback that ends breaks the loop.
    fixed = replace(c, exhausted_action="hangup", exhausted_target="")
    assert texts(source(a, b, fixed, extensions=(ExtensionDef("1", "menu", "a"),))) == []


def test_loop_through_closed_actions_is_an_error() -> None:
    a = MenuDef(
        "a", greeting=("file:a",), schedule="office", closed_action="submenu", closed_target="b"
    )
    b = MenuDef(
        "b", greeting=("file:b",), schedule="office", closed_action="submenu", closed_target="a"
    )
    errors = texts(source(a, b, extensions=(ExtensionDef("1", "menu", "a"),)))
    assert any("a (closed) -> b (closed) -> a" in e for e in errors), errors


def test_closed_action_without_schedule_is_a_warning() -> None:
    menu = replace(MAIN, closed_action="hangup")
    assert texts(source(menu, SALES), "warning") == [
        "menu 'main': closed/holiday action set but no schedule: it never runs"
    ]


def test_compile_error_message_lists_errors() -> None:
    with pytest.raises(
        MenuSetInvalid,
        match=r"1 error\(s\) in the menu set: menu 'main', "
        r"option '3': action submenu target 'x' does not exist",
    ):
        compile_menuset(with_option(OptionDef("3", "submenu", "x")))


@pytest.mark.parametrize(
    ("menu", "option", "field"),
    [
        (replace(MAIN, options=(OptionDef("1", "submenu", "ghost"),)), "1", "target"),
        (replace(MAIN, options=(OptionDef("1", "fly"),)), "1", "action"),
        (replace(MAIN, options=(OptionDef("1", "play"),)), "1", "prompt"),
        (replace(MAIN, options=(OptionDef("1#", "hangup"),), max_digits=2), "1#", "digits"),
        (replace(MAIN, options=(OptionDef("1", "hangup", "", ("say:x",)),)), "1", "prompt"),
        (replace(MAIN, greeting=("tts:{{ nope }}",)), None, "greeting"),
        (replace(MAIN, max_retries=11), None, "max_retries"),
        (replace(MAIN, language="English"), None, "language"),
        (replace(MAIN, exhausted_action="enqueue", exhausted_target="ghost"), None,
         "exhausted_target"),
        (replace(MAIN, exhausted_action="play"), None, "exhausted_action"),
        (replace(MAIN, schedule="office", closed_action="dial", closed_target="1"), None,
         "closed_target"),
        (replace(MAIN, schedule="nope", closed_action="hangup"), None, "schedule"),
    ],
)
def test_issues_name_the_field_at_fault(menu: MenuDef, option: str | None, field: str) -> None:
    """The admin UI shows each error on its field: menu, option and field are named."""
    found = [(i.menu, i.option, i.field) for i in validate(source(menu, SALES))
             if i.severity == "error"]
    assert found == [("main", option, field)]
    assert validate(source(menu, SALES))[0].to_dict()["field"] == field
