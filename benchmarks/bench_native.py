"""Callyard against the engines' own IVR, on the real FreeSWITCH and Asterisk.

    .venv/bin/python benchmarks/bench_native.py        # both engines, 400 calls each way and round
    .venv/bin/python benchmarks/bench_native.py --engines freeswitch --calls 200 --json out.json

One walk, served two ways on the same engine in the same run: answer, welcome, a tone, an
"enter digits" prompt, the caller keys 1 (``1#`` sent 2.5 s after answer, interrupting the
prompt), goodbye, hang up. *native*: the engine's own dialplan (FreeSWITCH ``playback`` +
``play_and_get_digits``; Asterisk ``Playback`` + ``Read``). *callyard*: the same prompts as a
Callyard menu in PostgreSQL, served by a ``callyard freeswitch`` / ``callyard asterisk`` worker
(the project's rendered engine configuration, as CI's real-engine tests use it). Rounds
alternate native / callyard so drift hits both.

Callers are the engine's own: FreeSWITCH ``originate loopback/<n>/<ctx>`` whose ``-a`` leg
runs ``sleep:2500,send_dtmf:1#,park``; Asterisk ``POST /channels`` to ``Local/<n>@<ctx>`` whose
caller half enters a Stasis app of this script that sends the digits. Per way it prints the
engine's CPU per call (the engine process's CPU time over the run, less its idle rate), the
worker's CPU per call, and the call length (answer to hang-up, by the engine's clock), and
the ratios. Needs root and ``../shared/engines`` (the real engines exist only there; skips
with a message otherwise) and takes the same per-engine lock as the real-engine tests.

``--ways native,callyard,inbound`` (FreeSWITCH): a third way, the same walk over ONE inbound
Event Socket for all calls (the dialplan parks them) by the bare controller of
``fs_inbound_walk.py``: what that shape costs the engine, and a controller's floor.

``--ways native,callyard,bare`` (Asterisk): a third way, the same walk through the same
rendered dialplan into the Stasis application of ``ari_bare_walk.py``, a bare controller with
Callyard's own ARI client and event filter and nothing else: what ARI itself costs the engine
for this walk, and a controller's floor.

``--callers sip`` (FreeSWITCH): each caller is a SIP call from the engine to its own
``callyard`` profile (RTP both ways, RFC 2833 digits), routed to the way's context by a
first extension in the rendered context, with the RTP port range widened: the call length a
SIP phone sees (a loopback caller starts its wait only when the originate loop notices the
answer, up to a frame late). The engine's CPU then includes both legs' RTP.

``--baseline DIR``: one more way, the same walk served by a second worker run from another
checkout (e.g. ``git worktree add ../before <commit>``) on the same engine, in the same rounds
(on Asterisk through its own Stasis application): an A/B of two versions of Callyard that
the engine's drift from run to run (a fifth of its CPU per call here) does not swamp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "real"), str(ROOT / "tests")]

from engines import (  # noqa: E402  (a test helper module: the real engines' conventions)
    ARI_PASSWORD,
    ARI_USER,
    AST_SOUNDS,
    BINARIES,
    FS_SOUNDS,
    AsteriskConf,
    FreeswitchConf,
    build_asterisk_conf,
    build_freeswitch_conf,
    exclusive,
    start_asterisk,
    start_freeswitch,
    unavailable_reason,
)
from engines import stop as stop_engine  # noqa: E402

SOUNDS = ("welcome", "tone", "enter-digits", "invalid", "goodbye")
STOCK_SOUNDS = Path("/opt/freeswitch/sounds/custom")  # the engines' own test recordings
DIGITS_AFTER = 2.5  # s after answer, as the yardstick
# The Asterisk callers' codec, as a phone's. Without it ARI's originate offers every audio
# format and the Local channel resamples the 8 kHz prompts to a wider one: perf put 80 % of
# the engine's CPU per call in codec_resample.so, either way, and most of Callyard's extra
# too (the walks cost 71 and 83 ms per call then; 10-11 and 11-14 ms with ulaw callers).
CALLER_FORMAT = "ulaw"
CONTEXT = "callyard-bench"
NATIVE, CALLYARD = "9998", "9999"
BASELINE_CONTEXT = "callyard-baseline"  # --baseline: the rendered context, to the other worker
# (on Asterisk also the other worker's Stasis application)
INBOUND_CONTEXT = "callyard-inbound"  # --ways ...,inbound: parked for fs_inbound_walk.py
PARK_CONTEXT = "callyard-park"  # --ways ...,park: parked for a worker with ingress "park"
BARE_CONTEXT = BARE_APP = "callyard-bare"  # --ways ...,bare (Asterisk): ari_bare_walk.py
TICKS = os.sysconf("SC_CLK_TCK")

FS_NATIVE = f"""<include>
  <context name="{CONTEXT}">
    <extension name="native_ivr">
      <condition field="destination_number" expression="^{NATIVE}$">
        <action application="answer"/>
        <action application="playback" data="callyard-bench/welcome.wav"/>
        <action application="playback" data="callyard-bench/tone.wav"/>
        <action application="play_and_get_digits" data="1 1 3 5000 # callyard-bench/enter-digits.wav callyard-bench/invalid.wav ivr_digits \\d 3000"/>
        <action application="playback" data="callyard-bench/goodbye.wav"/>
        <action application="hangup" data="NORMAL_CLEARING"/>
      </condition>
    </extension>
  </context>
</include>
"""  # noqa: E501

FS_INBOUND = f"""<include>
  <context name="{INBOUND_CONTEXT}">
    <extension name="inbound_ivr">
      <condition field="destination_number" expression="^{CALLYARD}$">
        <action application="multiset" data="hangup_after_bridge=false continue_on_fail=true playback_terminators=none"/>
        <action application="park"/>
      </condition>
    </extension>
  </context>
</include>
"""  # noqa: E501  (as Callyard's dialplan, ``park`` instead of ``socket``)

SIP_ROUTE = """
    <extension name="bench-route">
      <condition field="destination_number" expression="^bench-(.+)-(\\d+)$">
        <action application="transfer" data="$2 XML $1"/>
      </condition>
    </extension>"""  # --callers sip: first in the rendered context, where SIP calls arrive

AST_NATIVE = f"""
[{CONTEXT}]
exten => {NATIVE},1,Answer()
 same => n,Playback(callyard-bench/welcome&callyard-bench/tone)
 same => n,Read(digits,callyard-bench/enter-digits,1,,3,5)
 same => n,Playback(callyard-bench/goodbye)
 same => n,Hangup()
"""

MENU_SQL = """
INSERT INTO ivr_menus (name, greeting, invalid_prompt, timeout_prompt, max_retries,
                       first_digit_timeout)
VALUES ('bench', '{file:callyard-bench/welcome,file:callyard-bench/tone,
                   file:callyard-bench/enter-digits}',
        '{file:callyard-bench/invalid}', '{file:callyard-bench/invalid}', 2, 5);
INSERT INTO ivr_menu_options (menu_id, digits, action, target, prompt)
SELECT id, '1', 'hangup', NULL, '{file:callyard-bench/goodbye}' FROM ivr_menus WHERE name = 'bench';
INSERT INTO extensions (number, kind, menu_id)
SELECT '9999', 'menu', id FROM ivr_menus WHERE name = 'bench';
"""


# ---------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def engine_pid(engine: str) -> int:
    out = subprocess.run(["pgrep", "-of", f"^{BINARIES[engine]}"], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[0])


@dataclass
class Walk:
    """One way of serving the walk, measured over one batch of calls."""

    way: str
    calls: int = 0
    failed: int = 0
    lengths: list[float] = field(default_factory=list)
    engine_cpu: float = 0.0  # s, idle rate subtracted
    worker_cpu: float = 0.0  # s

    def row(self) -> dict[str, Any]:
        done = max(self.calls - self.failed, 1)
        return {
            "way": self.way, "calls": self.calls, "failed": self.failed,
            "engine_cpu_ms_per_call": round(1000 * self.engine_cpu / done, 2),
            "worker_cpu_ms_per_call": round(1000 * self.worker_cpu / done, 2),
            "call_length_s": round(statistics.median(self.lengths), 3) if self.lengths else None,
            # the median moves in the engines' 20 ms frames; the mean shows a shift within one
            "call_length_mean_s": round(statistics.mean(self.lengths), 4) if self.lengths
            else None,
        }  # fmt: skip


def idle_rates(engine: int, workers: list[int], seconds: float = 3.0
               ) -> tuple[float, dict[int, float]]:
    """CPU seconds per second the engine and each worker spend with no call (timers, polls)."""
    before = {pid: cpu_seconds(pid) for pid in (engine, *workers)}
    time.sleep(seconds)
    rates = {pid: (cpu_seconds(pid) - cpu) / seconds for pid, cpu in before.items()}
    return rates[engine], {pid: rates[pid] for pid in workers}


async def measured(way: str, engine: int, worker: int | None, idle: tuple[float, float],
                   place: Callable[[int, float], Any], calls: int, cps: float) -> Walk:
    """One batch, run again (up to twice more) if its prompts went missing meanwhile.
    ``idle``: the engine's and the worker's CPU seconds per second with no call."""
    for _ in range(3):
        install_sounds()
        walk = await measured_once(way, engine, worker, idle, place, calls, cps)
        if sounds_intact():
            return walk
        print(f"{way}: prompts removed during the batch (another session?), again",
              file=sys.stderr)
    raise RuntimeError("the prompts keep disappearing: is another test session running?")


async def measured_once(way: str, engine: int, worker: int | None, idle: tuple[float, float],
                        place: Callable[[int, float], Any], calls: int, cps: float) -> Walk:
    walk = Walk(way)
    engine0, worker0 = cpu_seconds(engine), cpu_seconds(worker) if worker else 0.0
    started = time.monotonic()
    walk.lengths, walk.failed = await place(calls, cps)
    elapsed = time.monotonic() - started
    walk.calls = calls
    walk.engine_cpu = cpu_seconds(engine) - engine0 - idle[0] * elapsed
    walk.worker_cpu = cpu_seconds(worker) - worker0 - idle[1] * elapsed if worker else 0.0
    return walk


# ---------------------------------------------------------------- callers


class FreeswitchCallers:
    """Callers over one inbound Event Socket: only the callers' own hang-ups are subscribed
    to (so watching costs the engine the same whichever way serves the call). ``sip_port``:
    each call is a SIP call from the engine to its own ``callyard`` profile (RTP both ways,
    RFC 2833 digits), routed to the way's context by ``SIP_ROUTE``; else a loopback call."""

    def __init__(self, password: str = "ClueCon", sip_port: int | None = None) -> None:
        self.password = password
        self.sip_port = sip_port
        self.pending: dict[str, asyncio.Future[tuple[float, bool]]] = {}
        self.replies: asyncio.Queue[Any] = asyncio.Queue()

    async def __aenter__(self) -> FreeswitchCallers:
        from appserver.freeswitch import esl_codec as codec

        self.codec = codec
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", 8021)
        self.task = asyncio.create_task(self._read())
        await self.replies.get()
        await self.command(f"auth {self.password}")
        await self.command("event plain CHANNEL_HANGUP_COMPLETE")
        await self.command("filter variable_bench_leg caller")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        self.writer.close()

    async def command(self, line: str) -> Any:
        self.writer.write(self.codec.encode_command(line))
        return await asyncio.wait_for(self.replies.get(), 10)

    async def _read(self) -> None:
        parser = self.codec.FrameParser()
        while data := await self.reader.read(65536):
            for frame in parser.feed(data):
                if frame.content_type.startswith("text/event"):
                    self._ended(self.codec.parse_event(frame))
                elif frame.content_type in ("auth/request", "command/reply", "api/response"):
                    self.replies.put_nowait(frame)

    def _ended(self, event: Any) -> None:
        future = self.pending.pop(event.get("Unique-ID"), None)
        if future is None or future.done():
            return
        answered = int(event.get("variable_answer_uepoch") or 0)
        ended = int(event.get("variable_end_uepoch") or 0)
        ok = answered > 0 and event.get("Hangup-Cause") == "NORMAL_CLEARING"
        future.set_result(((ended - answered) / 1e6, ok))

    def place(self, number: str, context: str) -> Callable[[int, float], Any]:
        async def run(calls: int, cps: float) -> tuple[list[float], int]:
            futures = []
            for i in range(calls):
                leg = str(uuid.uuid4())
                endpoint = (f"sofia/callyard/bench-{context}-{number}@127.0.0.1:{self.sip_port}"
                            if self.sip_port else f"loopback/{number}/{context}")
                future = asyncio.get_running_loop().create_future()
                self.pending[leg] = future
                futures.append(future)
                self.writer.write(self.codec.encode_command(
                    f"bgapi originate {{origination_uuid={leg},bench_leg=caller,"
                    f"origination_caller_id_number=+1555{i:07d}}}{endpoint} "
                    f"sleep:{int(DIGITS_AFTER * 1000)},send_dtmf:1#,park inline"))
                await asyncio.sleep(1 / cps)
            return await gather_lengths(futures)

        return run


class AsteriskCallers:
    """Local-channel callers: the caller half enters this script's Stasis app when the call
    is answered, sends the digits, and is counted when it is destroyed."""

    APP = "callyard-bench-caller"

    def __init__(self, conf: AsteriskConf) -> None:
        import aiohttp

        self.base = f"http://127.0.0.1:{conf.http_port}/ari"
        self.auth = {"Authorization": aiohttp.encode_basic_auth(ARI_USER, ARI_PASSWORD)}
        self.pending: dict[str, asyncio.Future[tuple[float, bool]]] = {}
        self.answered: dict[str, float] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> AsteriskCallers:
        import aiohttp

        self.http = aiohttp.ClientSession(headers=self.auth)
        self.ws = await self.http.ws_connect(self.base.replace("http", "ws", 1) + "/events",
                                             params={"app": self.APP})
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await self.ws.close()
        await self.http.close()

    async def _read(self) -> None:
        async for message in self.ws:
            event = json.loads(message.data)
            channel = (event.get("channel") or {}).get("id", "")
            if channel not in self.pending:
                continue
            if event["type"] == "StasisStart":
                self.answered[channel] = event_time(event)
                self._spawn(self._press(channel))
            elif event["type"] == "ChannelDestroyed":
                answered = self.answered.pop(channel, None)
                future = self.pending.pop(channel)
                ok = answered is not None and event.get("cause") == 16
                future.set_result((event_time(event) - (answered or 0), ok))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _press(self, channel: str) -> None:
        await asyncio.sleep(DIGITS_AFTER)
        with contextlib.suppress(Exception):
            async with self.http.post(f"{self.base}/channels/{channel}/dtmf",
                                      params={"dtmf": "1#"}) as resp:
                await resp.read()

    async def _originate(self, channel: str, endpoint: str, caller: str) -> None:
        async with self.http.post(f"{self.base}/channels", params={
            "endpoint": endpoint, "app": self.APP, "channelId": channel,
            "callerId": caller, "formats": CALLER_FORMAT,
        }) as resp:  # fmt: skip
            if resp.status >= 300:
                future = self.pending.pop(channel)
                future.set_result((0.0, False))

    def place(self, number: str, context: str) -> Callable[[int, float], Any]:
        async def run(calls: int, cps: float) -> tuple[list[float], int]:
            futures = []
            for i in range(calls):
                channel = f"bench-{uuid.uuid4().hex[:16]}"
                future = asyncio.get_running_loop().create_future()
                self.pending[channel] = future
                futures.append(future)
                self._spawn(self._originate(channel, f"Local/{number}@{context}",
                                            f"+1555{i:07d}"))
                await asyncio.sleep(1 / cps)
            return await gather_lengths(futures)

        return run


def event_time(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


async def gather_lengths(futures: list[asyncio.Future[tuple[float, bool]]],
                         timeout: float = 60) -> tuple[list[float], int]:
    done, _ = await asyncio.wait(futures, timeout=timeout)
    results = [f.result() for f in done]
    return [length for length, ok in results if ok], len(futures) - sum(ok for _, ok in results)


# ---------------------------------------------------------------- the stack


SOUND_FOLDERS = (FS_SOUNDS / "callyard-bench", AST_SOUNDS / "callyard-bench")


def install_sounds() -> None:
    """The walk's prompts in both engines' sound folders: the engines' own test recordings
    and a 0.5 s tone."""
    from conftest import write_tone

    for folder in SOUND_FOLDERS:
        folder.mkdir(parents=True, exist_ok=True)
        for name in SOUNDS:
            if (folder / f"{name}.wav").exists():
                continue
            if name == "tone":
                write_tone(folder / "tone.wav", 0.5)
            else:
                shutil.copyfile(STOCK_SOUNDS / f"{name}.wav", folder / f"{name}.wav")


def sounds_intact() -> bool:
    """False when something removed a prompt meanwhile (another test session's clean-up:
    the batch then measured calls without prompts and is run again)."""
    return all((folder / f"{name}.wav").exists() for folder in SOUND_FOLDERS for name in SOUNDS)


@contextlib.contextmanager
def sounds() -> Iterator[None]:
    install_sounds()
    try:
        yield
    finally:
        for folder in SOUND_FOLDERS:
            shutil.rmtree(folder, ignore_errors=True)


def callyard(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "appserver.cli", *args], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)


def start_worker(env: dict[str, str], log: Path, *args: str,
                 checkout: Path = ROOT) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "appserver.cli", *args], cwd=checkout,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes], log: Path) -> None:
    """Stop it; what it logged (warnings and worse) goes to stderr, to explain failures."""
    worker.terminate()
    worker.wait(30)
    lines = log.read_text(errors="replace").splitlines()
    if lines:
        print(f"--- {log.name} (last 30 of {len(lines)} lines)", *lines[-30:], sep="\n",
              file=sys.stderr)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def run_rounds(callers: Any, engine: int, worker: int, args: argparse.Namespace,
                     context: str, more: dict[str, tuple[str, int]] | None = None
                     ) -> list[Walk]:
    """``more``: further ways, name -> (the dialplan context of their calls, the pid whose
    CPU is theirs)."""
    ways = {"native": (callers.place(NATIVE, CONTEXT), None),
            "callyard": (callers.place(CALLYARD, context), worker)}
    ways = {name: ways[name] for name in args.ways if name in ways}
    for name, (way_context, way_pid) in (more or {}).items():
        ways[name] = (callers.place(CALLYARD, way_context), way_pid)
    for place, _ in ways.values():
        await place(20, args.cps)  # warm-up: sound files cached, the worker's first calls
    walks = []
    for _ in range(args.rounds):
        engine_idle, idle = idle_rates(engine, [pid for _, pid in ways.values() if pid])
        print(f"idle: engine {100 * engine_idle:.1f} %, "
              + ", ".join(f"{name} {100 * idle[pid]:.1f} %"
                          for name, (_, pid) in ways.items() if pid) + " of a core",
              file=sys.stderr)
        for name, (place, pid) in ways.items():
            walks.append(await measured(name, engine, pid, (engine_idle, idle[pid] if pid else 0.0),
                                        place, args.calls, args.cps))
    return walks


def baseline_dialplan(conf: Path, port: int, baseline_port: int) -> str:
    """The rendered ``callyard`` context again as ``BASELINE_CONTEXT``, sending its calls to
    the baseline worker's port."""
    text = (conf / "dialplan" / "callyard.xml").read_text()
    text = text.replace('<context name="callyard">', f'<context name="{BASELINE_CONTEXT}">')
    return text.replace(f"127.0.0.1:{port} ", f"127.0.0.1:{baseline_port} ")


def start_walk(script: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A bare controller of ``benchmarks/`` (``fs_inbound_walk.py``, ``ari_bare_walk.py``),
    once it says it is subscribed ("ready")."""
    with log.open("ab") as errors:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / script), *args],
                                   stdout=subprocess.PIPE, stderr=errors)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError(f"{script} did not subscribe: see {log}")
    return process


def run_freeswitch(directory: Path, env: dict[str, str], args: argparse.Namespace) -> list[Walk]:
    from appserver.devkit.embedded import free_port
    from appserver.freeswitch.parked import MARKER_VALUE, MARKER_VARIABLE

    port, health = free_port(), free_port()
    inbound = "inbound" in args.ways
    park = "park" in args.ways
    with exclusive("freeswitch"):
        fs_conf = FreeswitchConf(workers=(port,))
        conf = build_freeswitch_conf(directory / "freeswitch", fs_conf)
        if args.callers == "sip":
            rendered = conf / "dialplan" / "callyard.xml"
            rendered.write_text(rendered.read_text().replace(
                '<context name="callyard">', '<context name="callyard">' + SIP_ROUTE, 1))
            switch = conf / "autoload_configs" / "switch.conf.xml"  # 100 ports: 25 calls
            switch.write_text(re.sub(r'(name="rtp-end-port" value=)"\d+"', r'\1"32767"',
                                     switch.read_text()))
        (conf / "dialplan" / "callyard-bench.xml").write_text(FS_NATIVE)
        if inbound:
            (conf / "dialplan" / "callyard-inbound.xml").write_text(FS_INBOUND)
        if park:
            park_port, park_health = free_port(), free_port()
            (conf / "dialplan" / "callyard-park.xml").write_text(
                FS_INBOUND.replace(INBOUND_CONTEXT, PARK_CONTEXT).replace(
                    "playback_terminators=none", "playback_terminators=none "
                    f"{MARKER_VARIABLE}={MARKER_VALUE}"))
        if args.baseline:
            base_port, base_health = free_port(), free_port()
            (conf / "dialplan" / "callyard-baseline.xml").write_text(
                baseline_dialplan(conf, port, base_port))
        start_freeswitch(conf)
        workers: list[tuple[subprocess.Popen[bytes], str]] = []

        def worker_for(listen: int, health_port: int, name: str, checkout: Path,
                       **extra: str) -> int:
            workers.append((start_worker(
                {**env, **extra, "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{listen}",
                 "CALLYARD_FREESWITCH_ESL": "127.0.0.1:8021:ClueCon",
                 "CALLYARD_HEALTH_LISTEN": f"127.0.0.1:{health_port}"},
                directory / f"{name}.log", "freeswitch", checkout=checkout), name))
            wait_until(lambda: ready(health_port), 30, f"the {name} is not ready")
            return workers[-1][0].pid

        try:
            worker = worker_for(port, health, "worker-freeswitch", ROOT)
            more: dict[str, tuple[str, int]] = {}
            if args.baseline:
                more["baseline"] = (BASELINE_CONTEXT, worker_for(
                    base_port, base_health, "baseline-worker-freeswitch", args.baseline))
            if inbound:
                workers.append((start_walk("fs_inbound_walk.py", directory / "inbound-walk.log",
                                           INBOUND_CONTEXT),
                                "inbound-walk"))
                more["inbound"] = (INBOUND_CONTEXT, workers[-1][0].pid)
            if park:
                more["park"] = (PARK_CONTEXT, worker_for(
                    park_port, park_health, "park-worker-freeswitch", ROOT,
                    CALLYARD_FREESWITCH_INGRESS="park",
                    CALLYARD_FREESWITCH_PARK_CONTEXT=PARK_CONTEXT))

            async def go() -> list[Walk]:
                sip_port = fs_conf.sip_port if args.callers == "sip" else None
                async with FreeswitchCallers(sip_port=sip_port) as callers:
                    return await run_rounds(callers, engine_pid("freeswitch"), worker,
                                            args, "callyard", more)

            return asyncio.run(go())
        finally:
            for process, name in workers:
                stop_worker(process, directory / f"{name}.log")
            stop_engine("freeswitch")


def context_copy(extensions: str, context: str, app: str) -> str:
    """The rendered ``callyard`` context again as ``context``, its calls entering the Stasis
    application ``app`` instead of the worker's."""
    start = extensions.index("[callyard]")
    end = extensions.find("\n[", start + 1)
    text = extensions[start:end if end >= 0 else len(extensions)]
    return "\n" + text.replace("[callyard]", f"[{context}]", 1).replace(
        "Stasis(callyard,", f"Stasis({app},")


def run_asterisk(directory: Path, env: dict[str, str], args: argparse.Namespace) -> list[Walk]:
    from appserver.devkit.embedded import free_port

    bare = "bare" in args.ways
    with exclusive("asterisk"):
        conf = AsteriskConf(apps=("callyard",))
        path = build_asterisk_conf(directory / "asterisk", conf)
        extensions = path / "extensions.conf"
        rendered = extensions.read_text()
        extensions.write_text(
            rendered + AST_NATIVE
            + (context_copy(rendered, BARE_CONTEXT, BARE_APP) if bare else "")
            + (context_copy(rendered, BASELINE_CONTEXT, BASELINE_CONTEXT) if args.baseline
               else ""))
        start_asterisk(path)
        workers: list[tuple[subprocess.Popen[bytes], str]] = []  # and bare controllers

        def worker_for(app: str, name: str, checkout: Path) -> int:
            health = free_port()
            workers.append((start_worker(
                {**env, "CALLYARD_ASTERISK_ARI": conf.ari_url, "CALLYARD_ASTERISK_AMI": conf.ami,
                 "CALLYARD_ASTERISK_APP": app, "CALLYARD_HEALTH_LISTEN": f"127.0.0.1:{health}"},
                directory / f"{name}.log", "asterisk", checkout=checkout), name))
            wait_until(lambda: ready(health), 30, f"the {name} is not ready")
            return workers[-1][0].pid

        try:
            worker = worker_for("callyard", "worker-asterisk", ROOT)
            more = {}
            if bare:
                workers.append((start_walk("ari_bare_walk.py", directory / "bare-walk.log",
                                           f"http://127.0.0.1:{conf.http_port}", ARI_USER,
                                           ARI_PASSWORD, BARE_APP), "bare-walk"))
                more["bare"] = (BARE_CONTEXT, workers[-1][0].pid)
            if args.baseline:
                more["baseline"] = (BASELINE_CONTEXT, worker_for(
                    BASELINE_CONTEXT, "baseline-worker-asterisk", args.baseline))

            async def go() -> list[Walk]:
                async with AsteriskCallers(conf) as callers:
                    return await run_rounds(callers, engine_pid("asterisk"), worker,
                                            args, "callyard", more)

            return asyncio.run(go())
        finally:
            for process, name in workers:
                stop_worker(process, directory / f"{name}.log")
            stop_engine("asterisk")


MORE_WAYS = ("baseline", "inbound", "park", "bare")  # --baseline; --ways ...,inbound|park
# (FreeSWITCH) or ...,bare (Asterisk)


def summary(engine: str, walks: list[Walk]) -> dict[str, Any]:
    """The means over rounds per way; None for a way (or a comparison) that did not run."""
    def mean(way: str, key: str) -> float | None:
        values = [w.row()[key] for w in walks if w.way == way and w.row()[key] is not None]
        return round(statistics.mean(values), 3) if values else None

    def extra_percent(cpu: float | None) -> float | None:
        return round(100 * (cpu - native_cpu) / native_cpu, 1) \
            if cpu is not None and native_cpu else None

    native_cpu = mean("native", "engine_cpu_ms_per_call")
    ours_cpu = mean("callyard", "engine_cpu_ms_per_call")
    native_call, ours_call = mean("native", "call_length_s"), mean("callyard", "call_length_s")
    return {
        "engine": engine,
        "runs": [w.row() for w in walks],
        "native_engine_cpu_ms": native_cpu,
        "callyard_engine_cpu_ms": ours_cpu,
        "extra_engine_cpu_percent": extra_percent(ours_cpu),
        "worker_cpu_ms": mean("callyard", "worker_cpu_ms_per_call"),
        "native_call_s": native_call,
        "callyard_call_s": ours_call,
        "extra_call_ms": round(1000 * (ours_call - native_call))
        if ours_call is not None and native_call is not None else None,
        "failed": sum(w.failed for w in walks),
        **{f"{way}_{key}": value for way in MORE_WAYS if any(w.way == way for w in walks)
           for key, value in (
               ("engine_cpu_ms", mean(way, "engine_cpu_ms_per_call")),
               ("extra_engine_cpu_percent", extra_percent(mean(way, "engine_cpu_ms_per_call"))),
               ("worker_cpu_ms", mean(way, "worker_cpu_ms_per_call")),
               ("call_s", mean(way, "call_length_s")))},
    }  # fmt: skip


def cell(value: float | None, spec: str, unit: str = "") -> str:
    """``value`` formatted for the table; a dash, as wide, for what did not run."""
    text = "-" if value is None else f"{value:{spec}}"
    width = int(re.match(r"\d*", spec).group() or 0)  # type: ignore[union-attr]
    return f"{text:>{width}}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="freeswitch,asterisk")
    parser.add_argument("--calls", type=int, default=400, help="per way and round")
    parser.add_argument("--cps", type=float, default=None,
                        help="new calls/s (default: 40 on FreeSWITCH, 10 on Asterisk, as the "
                        "README's figures)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ways", default="native,callyard", type=lambda text: text.split(","),
                        help="of native, callyard, inbound and park (FreeSWITCH only), bare "
                        "(Asterisk only); e.g. callyard alone, to profile")
    parser.add_argument("--callers", choices=("loopback", "sip"), default="loopback",
                        help="FreeSWITCH: the callers' channels (sip: SIP calls to the engine "
                        "itself, as callers through Kamailio reach it)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--baseline", type=Path, help="another checkout whose "
                        "worker serves a third way in the same rounds (an A/B of two versions)")
    args = parser.parse_args()
    unknown = set(args.ways) - {"native", "callyard", "inbound", "park", "bare"}
    if unknown:
        parser.error(f"unknown way(s): {', '.join(sorted(unknown))}")
    freeswitch_only = [f"--ways ...,{w}" for w in ("inbound", "park")
                       if w in args.ways]
    if freeswitch_only and "freeswitch" not in args.engines.split(","):
        parser.error(f"{' and '.join(freeswitch_only)}: FreeSWITCH only")
    if "bare" in args.ways and "asterisk" not in args.engines.split(","):
        parser.error("--ways ...,bare: Asterisk only")
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0

    from appserver.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, guard_directory

    data = Path(tempfile.mkdtemp(prefix="cy-native-"))
    os.chmod(data, 0o755)
    guard_directory(data)
    pg, rd = EmbeddedPostgres(data / "postgres", fast=True), EmbeddedRedis(data / "redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(CALLYARD_DATABASE_URL=pg.start(), CALLYARD_REDIS_URL=rd.start(),
               CALLYARD_LOG_LEVEL="WARNING")
    results = []
    try:
        callyard(env, "migrate")
        subprocess.run([sys.executable, "-c", "import asyncio, asyncpg, sys\n"
                        "async def go():\n"
                        "    c = await asyncpg.connect(sys.argv[1]); await c.execute(sys.argv[2])\n"
                        "asyncio.run(go())", env["CALLYARD_DATABASE_URL"], MENU_SQL],
                       check=True, cwd=ROOT)  # fmt: skip
        callyard(env, "menus", "publish")
        runners = {"freeswitch": run_freeswitch, "asterisk": run_asterisk}
        default_cps = {"freeswitch": 40.0, "asterisk": 10.0}
        with sounds():
            for engine in args.engines.split(","):
                if engine == "asterisk" and freeswitch_only:
                    print(f"asterisk: {' and '.join(freeswitch_only)} not run (FreeSWITCH only)",
                          file=sys.stderr)
                if engine == "freeswitch" and "bare" in args.ways:
                    print("freeswitch: --ways ...,bare not run (Asterisk only)", file=sys.stderr)
                run = argparse.Namespace(**{**vars(args),
                                            "cps": args.cps or default_cps[engine]})
                result = summary(engine, runners[engine](data, env, run))
                result["cps"] = run.cps
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        rd.stop()
        pg.stop()
    print(f"\n{args.calls} calls per way and round, {args.rounds} rounds "
          "(engine CPU and call length: mean over rounds)")
    print("engine      calls/s  engine CPU/call: native  callyard   extra  worker CPU/call  "
          "call: native  callyard  extra  failed")
    for r in results:
        print(f"{r['engine']:10}  {r['cps']:7g}  {cell(r['native_engine_cpu_ms'], '20.2f', ' ms')} "
              f"{cell(r['callyard_engine_cpu_ms'], '6.2f', ' ms')}  "
              f"{cell(r['extra_engine_cpu_percent'], '5', ' %')}  "
              f"{cell(r['worker_cpu_ms'], '12.2f', ' ms')}  "
              f"{cell(r['native_call_s'], '10.3f', ' s')} "
              f"{cell(r['callyard_call_s'], '7.3f', ' s')} "
              f"{cell(r['extra_call_ms'], '5d', ' ms')}  {r['failed']:6d}")
        for way in MORE_WAYS:
            if f"{way}_engine_cpu_ms" in r:
                print(f"  {way:16} {cell(r[f'{way}_engine_cpu_ms'], '29.2f', ' ms')} "
                      f"{cell(r[f'{way}_extra_engine_cpu_percent'], '5', ' %')}  "
                      f"{cell(r[f'{way}_worker_cpu_ms'], '12.2f', ' ms')}  {'':10} "
                      f"{cell(r[f'{way}_call_s'], '7.3f', ' s')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
