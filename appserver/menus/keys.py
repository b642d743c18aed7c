"""Redis keys and channel of published menu sets.

* ``callyard:menus:current`` -- the live version number (string).
* ``callyard:menus:v{N}`` -- the MenuSet JSON of version N (older versions expire after a day).
* ``callyard:menus:seq`` -- the version counter (INCR), so versions only ever grow.
* ``callyard:menus:status`` -- hash: version, digest, published_at, checked_at, last_error,
  last_error_at, errors (JSON list of issues), warnings (JSON list), error_count.
* channel ``callyard:menus`` -- PUBLISH of the new version number after each publication.
"""

from __future__ import annotations

PREFIX = "callyard:menus"
CURRENT = f"{PREFIX}:current"
SEQUENCE = f"{PREFIX}:seq"
STATUS = f"{PREFIX}:status"
CHANNEL = PREFIX
OLD_VERSION_TTL = 24 * 3600  # seconds a superseded version stays readable


def version_key(version: int) -> str:
    return f"{PREFIX}:v{version}"
