"""Settings from environment variables ``CALLYARD_*`` (pydantic-settings).

Every setting has a working default for ``callyard dev``. A bad value stops the
process at start with a message naming the variable and what it expects
(see :func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from appserver.redisconn import check_url

ENV_PREFIX = "CALLYARD_"


class SettingsError(SystemExit):
    """Raised (and exits the process with status 2) when the environment is invalid."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class EslNode(BaseModel):
    """A FreeSWITCH node reached over inbound ESL: ``host:port:password``."""

    host: str
    port: int = Field(ge=1, le=65535)
    password: str

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class AriNode(BaseModel):
    """An Asterisk node's ARI base URL with credentials: ``http://user:secret@host:8088``."""

    url: str
    username: str
    password: str

    @property
    def name(self) -> str:
        return urlsplit(self.url).netloc


class AmiNode(BaseModel):
    """An Asterisk node's AMI: ``host:port:user:secret``."""

    host: str
    port: int = Field(ge=1, le=65535)
    username: str
    secret: str


def _split(value: object) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ValueError("expected a comma-separated list")


def hide_credentials(url: str) -> str:
    """``url`` with its ``user:password@`` part, if any, replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def _host_only(item: str) -> str:
    """A ``host:port:...:secret`` item as ``'host:***'``: for errors, which must not show
    secrets (a malformed item's secret can be in any part)."""
    return repr(item.split(":", 1)[0] + (":***" if ":" in item else ""))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {hide_credentials(value)!r}")
    return (host or default_host), int(port)


# target_session_attrs values that connect to the writable server only.
PRIMARY_ONLY = ("read-write", "primary")


def _check_host(item: str) -> None:
    host, sep, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
    if not item or (sep and not host):
        raise ValueError(f"a host is missing in the host list (got {item!r})")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"expected host:port in the host list, got {item!r}")


def check_database_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is a PostgreSQL URL every process can write through:
    one host, or several with ``target_session_attrs=read-write`` (or ``primary``), so each
    connection goes to the current primary whichever host is listed first."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("expected postgresql://user:password@host:port/dbname")
    host_list = parts.netloc.rpartition("@")[2]  # "db1:5432,db2:5432"; "": the local socket
    hosts = host_list.split(",") if host_list else []
    for item in hosts:
        _check_host(item)
    attrs = parse_qs(parts.query).get("target_session_attrs", [""])[-1]
    if attrs and attrs not in PRIMARY_ONLY:
        raise ValueError(f"target_session_attrs={attrs}: Callyard writes, so it needs the"
                         " primary: use target_session_attrs=read-write")
    if len(hosts) > 1 and not attrs:
        raise ValueError(f"{len(hosts)} hosts but no target_session_attrs: add"
                         " ?target_session_attrs=read-write so every process connects to the"
                         " primary, never to a read-only standby")


StorageUrl = Literal["database_url", "redis_url"]
STORAGE_EXAMPLES: dict[StorageUrl, str] = {
    "database_url": "postgresql://callyard:PASSWORD@db-host:5432/callyard",
    "redis_url": "redis://:PASSWORD@redis-host:6379/0",
}


# A Stasis application name: safe in a URL and in the dialplan's Stasis(<app>,...) argument.
STASIS_APP_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Storage. Production commands require them (required_urls); unset, `callyard dev` and
    # the operator tools use embedded servers under data_dir (appserver/devkit/embedded.py).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".callyard")

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)

    # Sessions of the console and API: HMAC secret for signed tokens (unset: a random one
    # kept in data_dir/api-secret, 0600, for the API processes of this host) and their
    # lifetime in seconds (the server's cap, whatever a token claims).
    api_secret: str | None = Field(None, min_length=32)
    api_session_ttl: int = Field(3600, ge=60, le=86400)
    # Largest request body accepted, in bytes (413 above it).
    api_max_body: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs; none: the
    # client is the TCP peer).
    trusted_proxies: Annotated[list[Network], NoDecode] = []
    # `callyard api` on a non-loopback address refuses to start with development secrets
    # (no api_secret, LiveKit's devkey/secret) unless this is set.
    api_allow_insecure: bool = False

    # The time zone of the supervisors' wallboard: its "today" starts at midnight there.
    wallboard_timezone: str = "UTC"

    # LiveKit: server API (rooms, tokens) and the SIP address engines bridge callers to.
    livekit_url: str = "http://127.0.0.1:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = Field("secret", min_length=6)
    livekit_sip_uri: str = "sip:127.0.0.1:5070"
    # What browsers connect to (ws(s)://); unset: livekit_url with ws(s) for http(s).
    livekit_public_url: str | None = None

    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    # FreeSWITCH worker.
    freeswitch_esl: Annotated[list[EslNode], NoDecode] = []
    freeswitch_listen: str = "127.0.0.1:8084"
    freeswitch_dial_template: str = "user/{target}"
    freeswitch_sip_template: str = "sofia/callyard/{target}"  # Dial(kind="sip"): a SIP URI
    # Where a callback's answered customer goes: "<extension> XML <context>" whose dialplan
    # hands the call to a worker (the shipped callyard.xml routes 8xxx/9xxx).
    freeswitch_callback_destination: str = Field(
        "9999 XML callyard", pattern=r"^[0-9A-Za-z_*#+-]{1,32} XML [A-Za-z0-9_.-]{1,64}$")
    # Where FreeSWITCH writes recordings (voicemail-<mailbox>-<call>.wav in it; it must exist).
    freeswitch_recordings_dir: str = "/var/lib/freeswitch/recordings"
    # Where the API reads them: the same files (a shared volume; Asterisk's is
    # astspooldir/recording, e.g. /var/spool/asterisk/recording).
    recordings_dir: str = ".callyard/recordings"
    # Call recordings: kept this many days (`callyard recordings purge`); whether an agent
    # may play their own calls' recordings (supervisors and admins play any).
    recordings_retention_days: int = Field(90, ge=1, le=36500)
    recordings_agent_access: bool = False
    # Outbound sockets open at once (calls + handshakes), and seconds to answer `connect`.
    freeswitch_max_calls: int = Field(20000, ge=1)
    freeswitch_connect_timeout: float = Field(5.0, gt=0, le=60)
    # How calls reach the worker: "socket" (the dialplan's outbound socket per call) or
    # "park" (the dialplan parks them; the worker drives the parked calls of this dialplan
    # context over one inbound connection per node: see freeswitch/parked.py).
    freeswitch_ingress: Literal["socket", "park"] = "socket"
    freeswitch_park_context: str = Field("callyard", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Callbacks are dialled from the node their caller came in on; another node of the same
    # engine dials them once no worker has reached that node for this many seconds.
    callback_affinity_grace: float = Field(30.0, ge=0, le=86400)

    # Asterisk worker.
    asterisk_ari: Annotated[list[AriNode], NoDecode] = []
    asterisk_app: str = Field("callyard", pattern=STASIS_APP_PATTERN)
    asterisk_ami: Annotated[list[AmiNode], NoDecode] = []
    asterisk_dial_template: str = "PJSIP/{target}"
    asterisk_sip_template: str = "PJSIP/kamailio/{target}"  # Dial(kind="sip"): a SIP URI

    # Trial calls into menu drafts ("Try it" in the admin editor): the API stores a draft
    # under a trial number (*99 + 8 digits, 30 minutes) and workers answer it. `callyard dev`
    # turns it on; in production only with a dialplan route for *99 to the workers.
    menu_trials: bool = False

    # Call-flow apps, "module.path:attribute", comma-separated.
    apps: Annotated[list[str], NoDecode] = []

    # Operations: this process's /healthz /readyz /metrics server (host:port; unset: none),
    # seconds a worker lets calls finish after SIGTERM, the CDR stream's safety cap.
    health_listen: str | None = None
    shutdown_grace: float = Field(30.0, ge=0, le=3600)
    cdr_stream_maxlen: int = Field(1_000_000, ge=1000)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v:
            check_database_url(v)
        return v or None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v:
            check_url(v)
        return v or None

    @field_validator("wallboard_timezone")
    @classmethod
    def _check_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as "
                             "Europe/Paris or UTC") from None
        return v

    @field_validator("livekit_url")
    @classmethod
    def _check_livekit_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https", "ws", "wss") or not urlsplit(v).hostname:
            raise ValueError("expected http(s)://host:port of the LiveKit server")
        return v.rstrip("/")

    @field_validator("livekit_sip_uri")
    @classmethod
    def _check_livekit_sip_uri(cls, v: str) -> str:
        scheme, sep, rest = v.partition(":")
        if scheme not in ("sip", "sips") or not sep or not rest or "@" in rest:
            raise ValueError("expected sip:host[:port] of LiveKit SIP (no user part)")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("freeswitch_listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_hostport(v)
        return v

    @field_validator("health_listen")
    @classmethod
    def _check_health_listen(cls, v: str | None) -> str | None:
        if v:
            parse_hostport(v)
        return v or None

    @field_validator("freeswitch_esl", mode="before")
    @classmethod
    def _parse_esl(cls, v: object) -> list[EslNode]:
        nodes = []
        for item in _split(v):
            if isinstance(item, EslNode):
                nodes.append(item)
                continue
            parts = item.split(":")
            if len(parts) < 3 or not parts[1].isdigit():
                raise ValueError(f"expected host:port:password, got {_host_only(item)}")
            nodes.append(EslNode(host=parts[0], port=int(parts[1]), password=":".join(parts[2:])))
        return nodes

    @field_validator("asterisk_ari", mode="before")
    @classmethod
    def _parse_ari(cls, v: object) -> list[AriNode]:
        nodes = []
        for item in _split(v):
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"expected http://user:secret@host:port, got {hide_credentials(item)!r}"
                )
            if not parts.username or parts.password is None:
                raise ValueError(f"missing user:secret in {parts.scheme}://{parts.hostname}")
            port = f":{parts.port}" if parts.port else ""
            nodes.append(
                AriNode(
                    url=f"{parts.scheme}://{parts.hostname}{port}",
                    username=parts.username,
                    password=parts.password,
                )
            )
        return nodes

    @field_validator("asterisk_ami", mode="before")
    @classmethod
    def _parse_ami(cls, v: object) -> list[AmiNode]:
        nodes = []
        for item in _split(v):
            parts = item.split(":")
            if len(parts) < 4 or not parts[1].isdigit():
                raise ValueError(f"expected host:port:user:secret, got {_host_only(item)}")
            nodes.append(
                AmiNode(
                    host=parts[0], port=int(parts[1]), username=parts[2], secret=":".join(parts[3:])
                )
            )
        return nodes

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, v: object) -> list[Network]:
        networks = []
        for item in _split(v):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"expected addresses or CIDRs (10.0.0.0/8), got {item!r}") \
                    from None
        return networks

    @field_validator("apps", mode="before")
    @classmethod
    def _parse_apps(cls, v: object) -> list[str]:
        apps = _split(v)
        for app in apps:
            module, sep, attr = app.partition(":")
            if not sep or not module or not attr:
                raise ValueError(f"expected module.path:attribute, got {app!r}")
        return apps


    def required_urls(self, *names: StorageUrl) -> list[str]:
        """The storage URLs a production command needs, in the order asked, or a
        :class:`SettingsError` naming each unset one. Production commands use the servers
        every Callyard process shares and never start one of their own."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            variables = " and ".join(f"{ENV_PREFIX}{name.upper()}" for name in missing)
            examples = "; ".join(f"{ENV_PREFIX}{name.upper()}={STORAGE_EXAMPLES[name]}"
                                 for name in missing)
            raise SettingsError(
                f"{variables} {'is' if len(missing) == 1 else 'are'} not set. Production"
                " commands use the PostgreSQL and Redis that every Callyard process shares and"
                f" never start servers of their own: set {examples}. For everything on one"
                " machine (embedded PostgreSQL and Redis), run `callyard dev`.")
        return [str(getattr(self, name)) for name in names]


def load_settings(**overrides: object) -> Settings:
    """Read the environment; on a bad value raise :class:`SettingsError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {ENV_PREFIX}{field.upper()}: {msg}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
