"""Prompt rendering: jinja2 in a sandbox with strict undefined variables.

Any prompt value containing ``{{`` or ``{%`` is a template, rendered per call with the call
variables (:data:`CALL_VARIABLES`). Templates are compiled once and cached. Validation
(:func:`check_template`) compiles and renders every template with sample values, so a typo
or an unknown variable is reported when the menu is saved, never during a call; at call time
a prompt that still fails to render is skipped (the machine never raises).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from ivr.calls import Prompt
from ivr.model import check_prompt_value, is_template

# Variables a prompt template may use, with the sample values validation renders with.
CALL_VARIABLES: Mapping[str, Any] = {
    "caller": "+15550100",  # caller id number
    "caller_name": "Alice",
    "called": "9999",  # dialled number
    "call_id": "sample-call-id",
    "engine": "test",
    "menu": "main",  # current menu name
    "menu_path": "main/sales",  # menus entered, joined with "/"
    "language": "en",
    "digits": "1",  # the last digits the caller entered in this call
    "queue": "sales",  # last queue entered ("" before)
    "queue_position": 1,  # 0 until a queue runtime reports it
    "vars": {},  # call variables: the engine's channel variables and ``set`` actions
}

MAX_TEXT = 4000  # longest text a template may build (characters)


class _PromptSandbox(SandboxedEnvironment):
    """The jinja2 sandbox, plus limits on ``*`` and ``**`` so a template cannot build huge
    values (rendered at validation time too)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent too large in a prompt template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                too_long = (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_TEXT
                )
                if too_long:
                    raise SecurityError("value too long in a prompt template")
        return super().call_binop(context, operator, left, right)


_env = _PromptSandbox(undefined=StrictUndefined, autoescape=False)
_cache: dict[str, Template] = {}


def compile_template(source: str) -> Template:
    tpl = _cache.get(source)
    if tpl is None:
        if len(_cache) > 4096:
            _cache.clear()
        tpl = _cache[source] = _env.from_string(source)
    return tpl


def sample_context(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    ctx = dict(CALL_VARIABLES)
    ctx["vars"] = dict(variables or {})
    return ctx


def check_template(prompt: Prompt, set_variables: Mapping[str, str] | None = None) -> str | None:
    """Why ``prompt`` cannot be rendered (None when it renders with sample values)."""
    if not is_template(prompt.value):
        return None
    try:
        text = compile_template(prompt.value).render(sample_context(set_variables))
    except TemplateError as exc:
        return f"template error: {exc.message or exc}"
    except Exception as exc:  # sandbox security errors, arithmetic on strings, ...
        return f"template error: {exc}"
    if not text.strip():
        return "renders to an empty text"
    if len(text) > MAX_TEXT:
        return f"renders to more than {MAX_TEXT} characters"
    return None


def render(
    prompts: tuple[Prompt, ...], context: Callable[[], Mapping[str, Any]]
) -> tuple[Prompt, ...]:
    """Render templated prompts; a prompt that fails to render or to parse is skipped.

    ``context`` is called only when some prompt is a template.
    """
    for p in prompts:
        if "{" in p.value and is_template(p.value):
            break
    else:
        return prompts  # fast path: nothing to render
    ctx = context()
    out: list[Prompt] = []
    for p in prompts:
        if not is_template(p.value):
            out.append(p)
            continue
        try:
            value = compile_template(p.value).render(ctx)
            if p.kind != "tts":
                value = value.strip()
            check_prompt_value(p.kind, value, f"{p.kind}:{value}")
        except Exception:  # TemplateError, PromptSpecError, sandbox errors: skip it
            continue
        if value.strip():
            out.append(Prompt(p.kind, value))
    return tuple(out)
