"""Every sound the product plays exists on the real engines once installed as the README says
(``callyard sounds <sound folder>`` for the generated ones; the engines' stock packs for the
rest). A missing one is silent on Asterisk (skipped inside a media list) and FILE NOT FOUND
on FreeSWITCH, so the catalogue (appserver/sounds.py) is checked against the engine itself."""

from __future__ import annotations

from urllib.parse import quote

from ast_probe import AsteriskProbe
from engines import FS_SOUNDS
from fs_probe import FreeswitchProbe

from appserver.sounds import required


async def test_every_product_sound_exists_on_freeswitch(freeswitch: FreeswitchProbe) -> None:
    missing = [s.file for s in required("freeswitch")
               if (await freeswitch.api(f"file_exists {FS_SOUNDS}/{s.file}")).strip() != "true"]
    assert not missing, f"FreeSWITCH cannot find: {missing}"


async def test_every_product_sound_exists_on_asterisk(asterisk: AsteriskProbe) -> None:
    missing = []
    for sound in required("asterisk"):
        try:
            await asterisk.request("GET", f"/sounds/{quote(sound.name, safe='')}")
        except RuntimeError:  # 404: Asterisk has no such sound in any format or language
            missing.append(sound.file)
    assert not missing, f"Asterisk cannot find: {missing}"
