"""appserver/sounds.py and `callyard sounds`: every sound the product plays is catalogued for
each engine, and the generated ones are written as 8 kHz mono WAV by flite."""

from __future__ import annotations

import ast
import re
import shutil
import wave
from collections.abc import Iterable
from itertools import product
from pathlib import Path

import pytest

from appserver import sounds
from appserver.cli import main
from appserver.devkit.demo import MENUS
from appserver.freeswitch.driver import DriverConfig
from appserver.queues.caller_flow import announcement
from appserver.queues.model import QueueConfig
from appserver.render_config_command import DEFAULTS, render_all
from appserver.settings import load_settings
from ivr.app import App
from ivr.calls import Prompt

REPO = Path(__file__).resolve().parents[1]
FLITE = shutil.which("flite")
needs_flite = pytest.mark.skipif(
    FLITE is None, reason="flite not installed (Debian package flite; .ci/run installs it)"
)


# ------------------------------------------------------------------ what the product plays


def _files(prompts: Iterable[Prompt]) -> set[str]:
    return {p.value.removesuffix(".wav") for p in prompts if p.kind == "file"}


def _announcements() -> list[tuple[Prompt, ...]]:
    """announcement() for every queue setting combination, position and wait."""
    return [
        announcement(position, wait, QueueConfig("q", announce_position=pos, announce_wait=w))
        for pos, w in product((True, False), repeat=2)
        for position in (0, 1, 2, 12, 250)
        for wait in (0.0, 20.0, 60.0, 90.0, 150.0, 3600.0)
    ]


def _demo_prompts() -> set[str]:
    specs = [
        spec
        for menu in MENUS
        for spec in (*menu.greeting, *(menu.invalid_prompt or ()), *(menu.timeout_prompt or ()),
                     *(p for option in menu.options for p in (option.prompt or ())))
    ]
    return {value for kind, _, value in (s.partition(":") for s in specs) if kind == "file"}


def _dialplan_prompts() -> dict[str, set[str]]:
    """The sounds the rendered dialplans play (FreeSWITCH playback, Asterisk Playback)."""
    rendered = render_all(REPO, load_settings(asterisk_app="callyard"), dict(DEFAULTS))
    freeswitch = rendered[Path("freeswitch-conf/conf/dialplan/callyard.xml")]
    asterisk = rendered[Path("asterisk-conf/extensions.conf")]
    return {
        "freeswitch": {m.removesuffix(".wav") for m in
                       re.findall(r'application="playback" data="([^"]+)"', freeswitch)},
        "asterisk": set(re.findall(r"\bPlayback\(([^,)]+)", asterisk)),
    }


def played(engine: sounds.Engine) -> set[str]:
    """Every file the product's code paths can ask ``engine`` to play."""
    names = {name for prompts in _announcements() for name in _files(prompts)}
    names |= _files(App("probe").options.error_prompt)  # a call-flow app's default
    names |= _demo_prompts()
    names |= _dialplan_prompts()[engine]
    if engine == "freeswitch":
        names.add(DriverConfig().fallback_prompt.removesuffix(".wav"))  # no app takes the call
    return names


@pytest.mark.parametrize("engine", sounds.ENGINES)
def test_every_sound_the_product_plays_is_catalogued(engine: sounds.Engine) -> None:
    catalogued = {s.name for s in sounds.required(engine)}
    names = played(engine)
    assert _dialplan_prompts()[engine], "the dialplan's polite endings were not found"
    assert {"queue/position", "queue/estimated_wait", "queue/minute", "queue/minutes"} <= names
    assert names <= catalogued, sorted(names - catalogued)
    # the numbers of the announcements are said from the engine's digits/ sounds
    numbers = {p.value for prompts in _announcements() for p in prompts if p.kind == "number"}
    assert numbers and {"digits/1", "digits/12", "digits/50", "digits/hundred"} <= catalogued


def _strings(node: ast.AST | None) -> set[str]:
    """The literal strings a value can be: "a", "a" if x else "b", ("a", "b")."""
    if isinstance(node, ast.Constant):
        return {node.value} if isinstance(node.value, str) else set()
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    if isinstance(node, ast.Tuple | ast.List):
        return {s for element in node.elts for s in _strings(element)}
    return set()


def _literal_sounds(tree: ast.AST) -> set[str]:
    """Sound names written in code: "file:<name>" strings, Prompt("file", ...) arguments and
    values given to a name or key ending in "prompt" (DEFAULT_ERROR_PROMPT, fallback_prompt)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = re.fullmatch(r"file:([\w./-]+)", node.value)
            found |= {match[1]} if match else set()
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", "")) == "Prompt" and len(node.args) == 2:
            if _strings(node.args[0]) == {"file"}:
                found |= _strings(node.args[1])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", getattr(t, "attr", "")).lower().endswith("prompt")
                   for t in targets):
                found |= _strings(node.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if any(k.lower().endswith("prompt") for k in _strings(key)):
                    found |= _strings(value)
    return {name.removesuffix(".wav") for name in found if name and "://" not in name}


def test_no_sound_is_written_in_code_without_a_catalogue_entry() -> None:
    """A sound added anywhere in the product's code (not only the paths enumerated above)
    must be catalogued for at least one engine."""
    written = set()
    for folder in ("appserver", "ivr"):
        for path in (REPO / folder).rglob("*.py"):
            written |= _literal_sounds(ast.parse(path.read_text(), str(path)))
    # the scan sees the known places, so it would see a new one
    assert {"queue/minute", "queue/minutes", "callyard/cannot-complete", "demo/welcome",
            "ivr/ivr-call_cannot_be_completed_as_dialed"} <= written
    catalogued = {s.name for engine in sounds.ENGINES for s in sounds.required(engine)}
    assert written <= catalogued, sorted(written - catalogued)


def test_the_scan_catches_a_new_sound() -> None:
    code = 'x = Prompt("file", "queue/thanks" if a else "queue/bye")\nPlay((c.Prompt("file", n),))'
    assert _literal_sounds(ast.parse(code)) == {"queue/thanks", "queue/bye"}
    assert _literal_sounds(ast.parse('ERROR_PROMPT = "x/y.wav"\nd = {"a_prompt": "p/q"}')) == {
        "x/y", "p/q"}


def test_generated_sounds_are_the_same_on_both_engines_and_stock_ones_name_their_pack() -> None:
    by_engine = {e: sounds.required(e) for e in sounds.ENGINES}
    generated = [{(s.name, s.text) for s in found if s.origin == "generated"}
                 for found in by_engine.values()]
    assert generated[0] == generated[1] == set(sounds.generated().items())
    for engine, found in by_engine.items():
        names = [s.name for s in found]
        assert len(names) == len(set(names)), engine  # one origin per file
        stock = [s for s in found if s.origin == "stock"]
        assert stock and all(s.source == sounds.STOCK_PACKS[engine] for s in stock)
        assert all(s.file == f"{s.name}.wav" for s in found)
    # a generated sound never overwrites a stock one: sets are folders Callyard owns
    stock_folders = {s.name.partition("/")[0] for f in by_engine.values() for s in f
                     if s.origin == "stock" and "/" in s.name}
    assert not stock_folders & set(sounds.SETS)
    with pytest.raises(ValueError, match="unknown engine"):
        sounds.required("yate")  # type: ignore[arg-type]


# ------------------------------------------------------------------ rendering with flite


@needs_flite
def test_command_writes_every_generated_sound_as_8khz_mono_wav(tmp_path: Path) -> None:
    assert main(["sounds", str(tmp_path)]) == 0
    files = {p.relative_to(tmp_path).with_suffix("").as_posix(): p
             for p in tmp_path.rglob("*.wav")}
    texts = sounds.generated()
    assert set(files) == set(texts)
    for name, path in files.items():
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
            seconds = w.getnframes() / w.getframerate()
        assert seconds > 0.15 * len(texts[name].split()), (name, seconds)  # speech, not a blip
    assert not list(tmp_path.rglob(".*"))  # no temporary files left


@needs_flite
def test_command_is_idempotent_and_writes_only_the_sets_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stock = tmp_path / "ivr" / "stock.wav"  # an engine's own file in the same folder
    stock.parent.mkdir()
    stock.write_bytes(b"stock")
    for _ in range(2):
        assert main(["sounds", str(tmp_path), "--set", "queue"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert written == sorted(["ivr/stock.wav", *(f"{n}.wav" for n in sounds.QUEUE_TEXT)])
    assert stock.read_bytes() == b"stock"
    assert capsys.readouterr().out.count("wrote ") == 2 * len(sounds.QUEUE_TEXT)


@needs_flite
def test_rerun_replaces_files_in_place(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "welcome.wav").write_bytes(b"stale")
    sounds.render(tmp_path, {"demo/welcome": "Hello again."}, str(FLITE))
    with wave.open(str(tmp_path / "demo" / "welcome.wav")) as w:
        assert w.getnframes() > 0


@pytest.mark.parametrize("name", ["welcome", "demo/", "demo/a/b", "demo/.hidden", "../x/y"])
def test_bad_sound_names_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(sounds.SoundError, match="expected <set>/<name>"):
        sounds.render(tmp_path / "out", {"demo/ok": "Fine.", name: "Text."}, "flite")
    assert not (tmp_path / "out").exists()


def test_a_failing_synthesizer_leaves_no_partial_file(tmp_path: Path) -> None:
    fake = tmp_path / "flite"
    fake.write_text("#!/bin/sh\necho 'voice not found' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    with pytest.raises(sounds.SoundError, match="welcome: flite failed: voice not found"):
        sounds.render(out, {"demo/welcome": "Hello."}, str(fake))
    assert list((out / "demo").iterdir()) == []


def test_missing_flite_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["sounds", str(out), "--flite", str(tmp_path / "no-such-flite")]) == 1
    err = capsys.readouterr().err
    assert "callyard sounds: flite not found" in err and "apt-get install flite" in err
    assert not out.exists()


def test_unknown_set_and_missing_folder_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sounds", str(tmp_path), "--set", "jingles"]) == 1
    assert "unknown set jingles: expected callyard, demo, queue" in capsys.readouterr().err
    assert main(["sounds"]) == 2
    assert "give OUT_DIR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_list_shows_every_file_each_engine_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sounds", "--list"]) == 0
    out = capsys.readouterr().out
    freeswitch, _, asterisk = out.partition("asterisk: <astdatadir>/sounds/en/")
    assert freeswitch.startswith("freeswitch: <sounds>/en/us/callie/")
    for engine, section in (("freeswitch", freeswitch), ("asterisk", asterisk)):
        for s in sounds.required(engine):  # type: ignore[arg-type]
            assert re.search(rf"^  {re.escape(s.file)} +{s.origin} \(", section, re.M), s
