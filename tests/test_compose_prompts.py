"""compose/prompts/make_demo_prompts.py: the demo IVR's sound files for both engines."""

from __future__ import annotations

import importlib.util
import re
import shutil
import wave
from pathlib import Path
from types import ModuleType

import pytest

from appserver.demo import MENUS, PROMPT_TEXT

SCRIPT = Path(__file__).resolve().parents[1] / "compose" / "prompts" / "make_demo_prompts.py"
FLITE = shutil.which("flite")
needs_flite = pytest.mark.skipif(
    FLITE is None, reason="flite not installed (Debian package flite; .ci/run installs it)"
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_prompts", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_demo_prompt_has_its_words() -> None:
    played = set(re.findall(r"file:(demo/[\w-]+)", repr(MENUS)))
    assert played, "the demo menus play no demo/ files"
    assert played <= set(PROMPT_TEXT), sorted(played - set(PROMPT_TEXT))


@needs_flite
def test_renders_every_prompt_as_8khz_mono_wav(tmp_path: Path) -> None:
    assert _load().main([str(tmp_path)]) == 0
    files = {p.stem: p for p in tmp_path.glob("*.wav")}
    assert set(files) == {name.removeprefix("demo/") for name in PROMPT_TEXT}
    for name, path in files.items():
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
            seconds = w.getnframes() / w.getframerate()
        words = len(PROMPT_TEXT[f"demo/{name}"].split())
        assert seconds > 0.15 * words, (name, seconds)  # speech, not a blip
    assert not list(tmp_path.glob(".*"))  # no temporary files left


@needs_flite
def test_rerun_replaces_files_in_place(tmp_path: Path) -> None:
    module = _load()
    (tmp_path / "welcome.wav").write_bytes(b"stale")
    module.render(tmp_path, {"demo/welcome": "Hello again."}, str(FLITE))
    with wave.open(str(tmp_path / "welcome.wav")) as w:
        assert w.getnframes() > 0


@pytest.mark.parametrize("name", ["welcome", "demo/", "demo/a/b", "demo/.hidden", "ivr/x"])
def test_bad_prompt_names_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    module = _load()
    with pytest.raises(module.PromptError, match="expected demo/<name>"):
        module.render(tmp_path / "out", {"demo/ok": "Fine.", name: "Text."}, "flite")
    assert not (tmp_path / "out").exists()


def test_a_failing_synthesizer_leaves_no_partial_file(tmp_path: Path) -> None:
    module = _load()
    fake = tmp_path / "flite"
    fake.write_text("#!/bin/sh\necho 'voice not found' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    with pytest.raises(module.PromptError, match="welcome: flite failed: voice not found"):
        module.render(out, {"demo/welcome": "Hello."}, str(fake))
    assert list(out.iterdir()) == []


def test_missing_synthesizer_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load().main([str(tmp_path), "--flite", str(tmp_path / "no-such-flite")])
    assert code == 1
    assert "make_demo_prompts:" in capsys.readouterr().err
