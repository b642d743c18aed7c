"""A/B benchmark of the Asterisk worker's per-call ARI requests: aioari vs the worker's client.

    .venv/bin/python benchmarks/bench_ari_clients.py                  # 3 rounds of 60 s each
    .venv/bin/python benchmarks/bench_ari_clients.py --rounds 1 --duration 20

Runs ``callyard bench --engine asterisk`` (2,000 calls in progress, 200 new calls/s, every
caller walking the demo menu with barge-in and queueing) against the ARI simulator, once per
side and round, sides alternating (the machine is shared: compare ranges). Both sides run the
production worker; they differ only in what serves a call's requests (the driver's
:class:`~appserver.asterisk.port.AriPort`: answer, play, stop playback, MOH, variables,
originate, bridges, continue, hang up):

* ``client``: :class:`appserver.asterisk.ari.AriClient` (keep-alive HTTP/1.1 on httptools);
* ``aioari``: the same operations through aioari (swagger model + aiohttp), errors mapped to
  :class:`~appserver.asterisk.port.AriError` so the driver behaves the same. The events
  WebSocket and the link's own requests stay the worker's in both.

Printed per run: key press -> next prompt at the wire (p50/p99, timed by the simulator) and the
worker's CPU; then a table. ``--worker SIDE`` is how ``callyard bench`` starts each side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("aioari", "client")


def aioari_client_class() -> type:
    """AriClient whose per-call operations go through aioari (connected on first use)."""
    import aioari
    from aiohttp import web_exceptions

    from appserver.asterisk.ari import AriClient
    from appserver.asterisk.port import AriError
    from appserver.settings import AriNode

    class AioariPort(AriClient):
        def __init__(self, node: AriNode, app: str) -> None:
            super().__init__(node, app)
            self._node = node
            self._aioari: asyncio.Task[Any] | None = None

        async def _call(self, operation: str, **params: Any) -> Any:
            if self._aioari is None:
                self._aioari = asyncio.ensure_future(aioari.connect(
                    self._node.url + "/", self._node.username, self._node.password))
            client = await self._aioari
            resource, _, name = operation.partition(".")
            try:
                return await getattr(getattr(client, resource), name)(**params)
            except web_exceptions.HTTPException as exc:
                text = exc.text or ""
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    text = json.loads(text)["message"]
                raise AriError(exc.status, text) from None

        async def answer(self, channel_id: str) -> None:
            await self._call("channels.answer", channelId=channel_id)

        async def hangup(self, channel_id: str, reason: str = "") -> None:
            await self._call("channels.hangup", channelId=channel_id,
                             **({"reason": reason} if reason else {}))

        async def play(self, channel_id: str, playback_id: str, media: list[str],
                       lang: str = "") -> None:
            await self._call("channels.play", channelId=channel_id, media=media,
                             playbackId=playback_id, **({"lang": lang} if lang else {}))

        async def stop_playback(self, playback_id: str) -> None:
            await self._call("playbacks.stop", playbackId=playback_id)

        async def start_moh(self, channel_id: str, moh_class: str = "") -> None:
            await self._call("channels.startMoh", channelId=channel_id,
                             **({"mohClass": moh_class} if moh_class else {}))

        async def stop_moh(self, channel_id: str) -> None:
            await self._call("channels.stopMoh", channelId=channel_id)

        async def set_variable(self, channel_id: str, name: str, value: str) -> None:
            await self._call("channels.setChannelVar", channelId=channel_id, variable=name,
                             value=value)

        async def continue_in_dialplan(self, channel_id: str, context: str,
                                       extension: str) -> None:
            await self._call("channels.continueInDialplan", channelId=channel_id,
                             context=context, extension=extension, priority=1)

        async def originate(self, leg_id: str, endpoint: str, *, app_args: str,
                            originator: str, caller_id: str, timeout: int) -> None:
            await self._call("channels.originate", endpoint=endpoint, app=self.app,
                             appArgs=app_args, channelId=leg_id, originator=originator,
                             callerId=caller_id, timeout=timeout)

        async def create_bridge(self, bridge_id: str, name: str) -> None:
            await self._call("bridges.create", type="mixing", bridgeId=bridge_id, name=name)

        async def add_to_bridge(self, bridge_id: str, channel_ids: list[str]) -> None:
            await self._call("bridges.addChannel", bridgeId=bridge_id, channel=channel_ids)

        async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None:
            await self._call("bridges.removeChannel", bridgeId=bridge_id, channel=channel_id)

        async def destroy_bridge(self, bridge_id: str) -> None:
            await self._call("bridges.destroy", bridgeId=bridge_id)

        async def channel(self, channel_id: str) -> dict[str, Any]:
            return dict((await self._call("channels.get", channelId=channel_id)).json)

        async def playback(self, playback_id: str) -> dict[str, Any]:
            return dict((await self._call("playbacks.get", playbackId=playback_id)).json)

    return AioariPort


def serve_worker(side: str) -> int:
    """``callyard asterisk`` with the given side serving the calls' requests."""
    from appserver import cli
    from appserver.asterisk import worker

    if side == "aioari":
        worker.AriClient = aioari_client_class()  # type: ignore[misc]
    return cli.main(["asterisk"])


def run(side: str, args: argparse.Namespace) -> dict[str, Any]:
    worker = f"{sys.executable} {Path(__file__).resolve()} --worker {side}"
    cmd = [sys.executable, "-m", "appserver.cli", "bench", "--engine", "asterisk",
           "--concurrent", str(args.concurrent), "--cps", str(args.cps),
           "--duration", str(args.duration), "--json", "--worker-command", worker]
    env = {**os.environ, "CALLYARD_LOG_LEVEL": "WARNING"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if not out.stdout.strip():
        raise SystemExit(f"{side}: callyard bench printed nothing\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["side"] = side
    print(json.dumps(result), flush=True)
    return result


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}" if len(set(values)) == 1 else f"{min(values):.1f}-{max(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--cps", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    if args.worker:
        return serve_worker(args.worker)
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            results[side].append(run(side, args))
    print(f"{'side':8} {'failed':>6} {'p50 ms':>12} {'p99 ms':>14} {'worker CPU %':>14}")
    for side, runs in results.items():
        print(f"{side:8} {sum(r['failed'] for r in runs):6d} "
              f"{_span([r['latency_ms']['p50'] for r in runs]):>12} "
              f"{_span([r['latency_ms']['p99'] for r in runs]):>14} "
              f"{_span([r['worker']['cpu_percent'] for r in runs]):>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
