"""The demo data set: an IVR on 9999, a submenu with business hours, a "support" queue and
two agents, an admin, and the support team's voicemail box (main menu 4, and the queue's overflow).
Loaded by ``callyard seed-demo`` and by ``callyard dev``; safe to run again (it updates the
demo rows in place and leaves everything else alone).

Prompts are sound files (``demo/*``) so that both engines can play them (Asterisk has no
built-in text-to-speech); what each one says is the ``demo`` set of the sound catalogue
(:data:`appserver.sounds.DEMO_TEXT`), which ``callyard sounds`` speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from argon2 import PasswordHasher

from appserver.store.agents import Agent, get_agent, save_agent, set_password_hash
from appserver.store.db import Executor, transaction
from appserver.store.extensions import Extension, save_extension
from appserver.store.members import QueueMember, save_member
from appserver.store.menus import Menu, MenuOption, save_menu
from appserver.store.queues import Queue, save_queue
from appserver.store.schedules import Hours, Schedule, save_schedule

DEMO_NUMBER = "9999"


@dataclass(frozen=True)
class DemoAgent:
    username: str
    display_name: str
    extension: str
    password: str  # demo only, printed by `callyard dev`; change it for anything real


DEMO_AGENTS = (
    DemoAgent("alice", "Alice Example", "1001", "alice-demo"),
    DemoAgent("bob", "Bob Example", "1002", "bob-demo"),
)
# Who opens /admin and /supervisor in the demo (takes no calls: in no queue, no extension).
DEMO_ADMIN = DemoAgent("admin", "Demo Admin", "", "admin-demo")

SCHEDULE = Schedule(
    name="business-hours",
    timezone="America/New_York",
    description="Monday to Friday, 9:00 to 17:00 Eastern",
    hours=tuple(Hours(day, time(9), time(17)) for day in range(5)),
)

MENUS = (
    Menu(
        name="main",
        description="Demo main menu (extension 9999)",
        greeting=("file:demo/welcome", "file:demo/main-menu"),
        invalid_prompt=("file:demo/invalid",),
        timeout_prompt=("file:demo/no-input",),
        first_digit_timeout=5,
        max_retries=3,
        exhausted_action="hangup",
        options=(
            MenuOption("1", "submenu", "sales", position=1),
            MenuOption("2", "enqueue", "support", ("file:demo/connecting-support",), 2),
            MenuOption("3", "dial", "1001", ("file:demo/calling-alice",), 3),
            MenuOption("4", "voicemail", "support", position=4),
            MenuOption("9", "repeat", position=9),
        ),
    ),
    Menu(
        name="sales",
        description="Sales, open during business hours",
        greeting=("file:demo/sales-menu",),
        invalid_prompt=("file:demo/invalid",),
        timeout_prompt=("file:demo/no-input",),
        schedule="business-hours",
        closed_action="submenu",
        closed_target="after-hours",
        exhausted_action="main",
        options=(
            MenuOption("1", "dial", "1002", ("file:demo/calling-sales",), 1),
            MenuOption("2", "transfer", "+15551230000", ("file:demo/transferring",), 2),
            MenuOption("*", "main", position=3),
        ),
    ),
    Menu(
        name="after-hours",
        description="Played when sales is closed",
        greeting=("file:demo/sales-closed",),
        exhausted_action="hangup",
        options=(
            MenuOption("1", "enqueue", "support", position=1),
            MenuOption("*", "main", position=2),
        ),
    ),
)

QUEUE = Queue(
    name="support",
    description="Demo support queue",
    strategy="longest_idle",
    max_wait_seconds=600,
    announce_interval=30,
    wrapup_seconds=10,
    overflow_action="voicemail",  # after max_wait_seconds: a message for the team
    overflow_target="support",
    callback_key="5",  # "press 5 to be called back", announced every 30 s
    callback_retry_seconds=60,
    recording="on_demand",  # the agent records from the console
    recording_announcement="file:recording/announcement",
)
# The support team's mailbox (the queue's members read it in the console).
MAILBOX_SQL = """
INSERT INTO voicemail_boxes (name, description, review, queue_id)
SELECT 'support', 'Demo: messages for the support team', true, id FROM queues WHERE name = $1
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, review = EXCLUDED.review,
                                 queue_id = EXCLUDED.queue_id
"""

EXTENSIONS = (
    Extension(DEMO_NUMBER, "menu", "main", "Demo IVR"),
    Extension("2000", "queue", "support", "Support queue, directly"),
    *(Extension(a.extension, "agent", a.username, a.display_name) for a in DEMO_AGENTS),
)


async def seed_demo(db: Executor) -> list[str]:
    """Write the demo data in one transaction; return a line per thing written."""
    hasher = PasswordHasher()
    done: list[str] = []
    async with transaction(db) as conn:
        await save_schedule(conn, SCHEDULE)
        done.append(f"schedule {SCHEDULE.name}")
        await save_queue(conn, QUEUE)
        done.append(f"queue {QUEUE.name}")
        await conn.execute(MAILBOX_SQL, QUEUE.name)
        done.append("mailbox support")
        for demo in DEMO_AGENTS:
            existing = await get_agent(conn, demo.username)
            await save_agent(
                conn,
                Agent(
                    demo.username,
                    demo.display_name,
                    kind="browser",
                    extension=demo.extension,
                    skills={"support": 5},
                ),
            )
            if existing is None or existing.password_hash is None:
                await set_password_hash(conn, demo.username, hasher.hash(demo.password))
            await save_member(conn, QueueMember(QUEUE.name, demo.username))
            done.append(f"agent {demo.username}")
        existing = await get_agent(conn, DEMO_ADMIN.username)
        await save_agent(conn, Agent(DEMO_ADMIN.username, DEMO_ADMIN.display_name,
                                     role="admin"))
        if existing is None or existing.password_hash is None:
            await set_password_hash(conn, DEMO_ADMIN.username, hasher.hash(DEMO_ADMIN.password))
        done.append(f"admin {DEMO_ADMIN.username}")
        # Menus reference each other by name, so save them all before the extensions.
        for menu in MENUS:
            await save_menu(conn, menu)
            done.append(f"menu {menu.name}")
        for ext in EXTENSIONS:
            await save_extension(conn, ext)
            done.append(f"extension {ext.number} -> {ext.kind} {ext.target}")
    return done
