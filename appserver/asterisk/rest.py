"""Direct ARI requests for the operations every call makes many times.

``aioari`` builds each request through its swagger model (operation lookup, parameter
walk, response promotion into objects) and aiohttp's general-purpose client: together
most of the worker's CPU at a few hundred calls per second. :class:`HotRest` sends the same
requests (same URL as aioari's swagger base path, same credentials) over a small keep-alive
client (:mod:`appserver.asterisk.http`), and fails the same way: an HTTP status >= 400
raises the :mod:`aiohttp.web_exceptions` class aioswagger raises (``HTTPNotFound`` for
404 ...) with the response body as ``text``; no answer raises ``ConnectionResetError`` or
``TimeoutError``. Everything else (the events WebSocket, originate, bridges, re-adoption)
still goes through ``aioari``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web_exceptions

from appserver.asterisk.http import HttpPool

# status -> the exception aioswagger raises for it (as aioswagger11.http_client.error_map)
_ERRORS: dict[int, type[web_exceptions.HTTPException]] = {
    cls.status_code: cls
    for name in web_exceptions.__all__
    if isinstance(cls := getattr(web_exceptions, name), type)
    and issubclass(cls, web_exceptions.HTTPException)
    and isinstance(getattr(cls, "status_code", None), int)
}


def _segment(value: str) -> str:
    return quote(value, safe="")


class HotRest:
    """Answer, hang up, play, stop a playback, music on hold and channel variables, with
    the credentials of one aioari client. :meth:`close` with the client."""

    def __init__(self, client: Any, timeout: float = 30.0) -> None:
        swagger = client.swagger
        http = swagger.http_client
        base = str(swagger.resources["channels"].json["api_declaration"]["basePath"])
        params: dict[str, str] = {}
        headers: dict[str, str] = {"Accept": "application/json"}
        auth = http.authenticator
        if auth is not None and auth.matches(base.rstrip("/") + "/channels"):
            auth.apply(headers, params)  # api_key=user:pass (query) or Basic (header)
        self._auth_query = urlencode(params)
        self._pool = HttpPool(base, headers, timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def _send(self, method: str, path: str, query: str = "") -> None:
        joined = "&".join(q for q in (query, self._auth_query) if q)
        response = await self._pool.request(method, f"{path}?{joined}" if joined else path)
        if response.status >= 400:
            raise _ERRORS.get(response.status, web_exceptions.HTTPError)(
                reason=response.reason, text=response.text)

    async def answer(self, channel_id: str) -> None:
        await self._send("POST", f"/channels/{_segment(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "") -> None:
        query = f"reason={quote(reason, safe='')}" if reason else ""
        await self._send("DELETE", f"/channels/{_segment(channel_id)}", query)

    async def play(self, channel_id: str, playback_id: str, media: list[str],
                   lang: str = "") -> None:
        """``media`` URIs never hold a comma (ARI splits the list on commas, even encoded
        ones): :func:`appserver.asterisk.media.prompt_media` makes sure of it."""
        listed = ",".join(quote(m, safe=":/") for m in media)
        query = f"media={listed}&playbackId={_segment(playback_id)}"
        if lang:
            query += "&lang=" + quote(lang, safe="")
        await self._send("POST", f"/channels/{_segment(channel_id)}/play", query)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        query = f"variable={quote(name, safe='')}&value={quote(value, safe='')}"
        await self._send("POST", f"/channels/{_segment(channel_id)}/variable", query)

    async def stop_playback(self, playback_id: str) -> None:
        await self._send("DELETE", f"/playbacks/{_segment(playback_id)}")

    async def start_moh(self, channel_id: str, moh_class: str = "") -> None:
        query = f"mohClass={quote(moh_class, safe='')}" if moh_class else ""
        await self._send("POST", f"/channels/{_segment(channel_id)}/moh", query)

    async def stop_moh(self, channel_id: str) -> None:
        await self._send("DELETE", f"/channels/{_segment(channel_id)}/moh")
