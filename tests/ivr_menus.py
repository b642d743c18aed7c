"""The IVR menu set the engine scenarios walk (tests only), written to PostgreSQL as an operator
would; ``callyard api`` publishes it and the workers serve it (numbers 8100-8199).

    8100 t-main   greeting welcome + main-menu (in that order), invalid, no-input;
                  1 t-sales | 2 queue t-queue | 3 dial 8201 (answers) | 4 dial 8202 (busy)
                  5 set vip=yes (+noted) | 6 play hours | 7 repeat | 8 t-pin | 0 transfer 1000
    t-sales       1 t-deep | * back | 0 main          t-deep   * back | 9 main
    t-pin         up to 4 digits, # ends, 1.5 s between digits: 1234 pin-ok | 12 short-ok | * back
    8101 t-open   schedule always open          8102 t-closed  schedule never open -> t-closed-msg
    8103 t-holiday  closed today -> t-holiday-msg
    8104 t-tts    a spoken (TTS) greeting (FreeSWITCH: mod_flite)
    8110 queue t-queue directly: music on hold, position announced every 10 s
    8111 queue t-phones: agent t-sip, a SIP phone on extension 1101 (rung directly)
    8112 queue t-web: agent t-web, in the browser (accepts in the console; LiveKit over SIP)
    8105 t-vm     1 voicemail t-box (messages of at most 5 s)
    8113 queue t-rec: recorded always; agent t-rec, a SIP phone on extension 1103

Prompts are ``file:callyard-test/<name>``; the real-engine fixtures write each as a short tone
into the engines' sound folders (``SOUNDS``).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from appserver.api.auth import hash_password
from appserver.store.agents import Agent, save_agent, set_password_hash
from appserver.store.db import Executor, transaction
from appserver.store.extensions import Extension, save_extension
from appserver.store.members import QueueMember, save_member
from appserver.store.menus import Menu, MenuOption, save_menu
from appserver.store.queues import Queue, save_queue
from appserver.store.schedules import Closure, Hours, Schedule, save_schedule

MAILBOX_SQL = "INSERT INTO voicemail_boxes (name, max_seconds) VALUES ('t-box', 5)"

SOUNDS = ("welcome", "main-menu", "invalid", "no-input", "noted", "hours", "sales", "deep",
          "enter-pin", "pin-ok", "short-ok", "open", "closed", "holiday")  # fmt: skip


def f(name: str) -> str:
    return f"file:callyard-test/{name}"


def _opt(digits: str, action: str, target: str | None = None, *prompt: str) -> MenuOption:
    return MenuOption(digits, action, target, tuple(prompt) or None)


def _menu(name: str, greeting: tuple[str, ...], *options: MenuOption, **kw: object) -> Menu:
    defaults: dict[str, object] = dict(
        invalid_prompt=(f("invalid"),), timeout_prompt=(f("no-input"),),
        first_digit_timeout=2.0, max_retries=1,
    )  # fmt: skip
    defaults.update(kw)
    return Menu(name, greeting=greeting, options=options, **defaults)  # type: ignore[arg-type]


def schedules(today: datetime | None = None) -> tuple[Schedule, ...]:
    day = (today or datetime.now(UTC)).date()
    all_day = tuple(Hours(d, time(0), time(23, 59, 59)) for d in range(7))
    return (
        Schedule("t-always", "UTC", hours=all_day),
        Schedule("t-never", "UTC"),
        Schedule("t-holiday", "UTC", hours=all_day,
                 closures=(Closure("test day", day - timedelta(days=1), day + timedelta(days=1)),)),
    )  # fmt: skip


QUEUES = (
    Queue("t-queue", announce_interval=10, announce_wait=False, max_wait_seconds=120,
          ring_timeout=8, wrapup_seconds=1),
    Queue("t-phones", announce_interval=0, ring_timeout=8, wrapup_seconds=1),
    Queue("t-web", announce_interval=0, ring_timeout=8, wrapup_seconds=1),
    Queue("t-rec", announce_interval=0, ring_timeout=8, wrapup_seconds=1),
)  # fmt: skip
RECORDED_SQL = "UPDATE queues SET recording = 'always' WHERE name = 't-rec'"
AGENTS = (
    Agent("t-sip", "Sip Agent", kind="sip", extension="1101"),
    Agent("t-web", "Web Agent", kind="browser", extension="1102"),
    Agent("t-super", "Supervisor", kind="browser", role="supervisor"),  # in no queue
    Agent("t-rec", "Recorded Agent", kind="sip", extension="1103"),
)
PASSWORD = "agent-test-pass"  # every agent's
MEMBERS = (QueueMember("t-phones", "t-sip"), QueueMember("t-web", "t-web"),
           QueueMember("t-rec", "t-rec"))

MENUS = (
    _menu("t-main", (f("welcome"), f("main-menu")),
          _opt("1", "submenu", "t-sales"), _opt("2", "enqueue", "t-queue"),
          _opt("3", "dial", "8201"), _opt("4", "dial", "8202"),
          _opt("5", "set", "vip=yes", f("noted")), _opt("6", "play", None, f("hours")),
          _opt("7", "repeat"), _opt("8", "submenu", "t-pin"),
          _opt("0", "transfer", "1000")),
    _menu("t-sales", (f("sales"),), _opt("1", "submenu", "t-deep"), _opt("*", "back"),
          _opt("0", "main")),
    _menu("t-deep", (f("deep"),), _opt("*", "back"), _opt("9", "main")),
    _menu("t-pin", (f("enter-pin"),), _opt("1234", "play", None, f("pin-ok")),
          _opt("12", "play", None, f("short-ok")), _opt("*", "back"),
          max_digits=4, inter_digit_timeout=1.5, first_digit_timeout=3.0),
    _menu("t-closed-msg", (f("closed"),)),
    _menu("t-holiday-msg", (f("holiday"),)),
    _menu("t-open", (f("open"),), schedule="t-always", closed_action="submenu",
          closed_target="t-closed-msg"),
    _menu("t-closed", (f("open"),), schedule="t-never", closed_action="submenu",
          closed_target="t-closed-msg"),
    _menu("t-holiday", (f("open"),), schedule="t-holiday", closed_action="submenu",
          closed_target="t-closed-msg", holiday_action="submenu", holiday_target="t-holiday-msg"),
    _menu("t-tts", ("tts:Thank you for calling.",)),
    _menu("t-vm", (f("welcome"),), _opt("1", "voicemail", "t-box")),
)  # fmt: skip

EXTENSIONS = (
    Extension("8100", "menu", "t-main"), Extension("8101", "menu", "t-open"),
    Extension("8102", "menu", "t-closed"), Extension("8103", "menu", "t-holiday"),
    Extension("8104", "menu", "t-tts"), Extension("8105", "menu", "t-vm"),
    Extension("8110", "queue", "t-queue"), Extension("8113", "queue", "t-rec"),
    Extension("8111", "queue", "t-phones"), Extension("8112", "queue", "t-web"),
    Extension("8201", "user", "1001"), Extension("8202", "user", "1002"),
)  # fmt: skip


async def seed(db: Executor) -> None:
    """Write the whole set in one transaction (menus before the extensions naming them)."""
    async with transaction(db) as conn:
        for schedule in schedules():
            await save_schedule(conn, schedule)
        for queue in QUEUES:
            await save_queue(conn, queue)
        for agent in AGENTS:
            await save_agent(conn, agent)
            await set_password_hash(conn, agent.username, await hash_password(PASSWORD))
        for member in MEMBERS:
            await save_member(conn, member)
        await conn.execute(MAILBOX_SQL)
        await conn.execute(RECORDED_SQL)
        for menu in MENUS:
            await save_menu(conn, menu)
        for extension in EXTENSIONS:
            await save_extension(conn, extension)
