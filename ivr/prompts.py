"""Prompt rendering: jinja2 in a sandbox with strict undefined variables.

Any prompt value containing ``{{`` or ``{%`` is a template, rendered per call with the call
variables (:data:`CALL_VARIABLES`). Templates are compiled once and cached. Validation
(:func:`check_template`) compiles and renders every template with sample values, so a typo
or an unknown variable is reported when the menu is saved, never during a call; at call time
a prompt that still fails to render is skipped (the machine never raises).

Rendering runs inside the call's flow, on the worker's loop, so its cost is bounded by
construction rather than by a timer: templates are a small subset of jinja2 (output,
``if``, one level of ``for`` over at most :data:`MAX_LOOP` items, expressions, the filters of
:data:`SAFE_FILTERS`, ``range()``), at most :data:`MAX_WORK` steps per prompt list, and no
value or output longer than :data:`MAX_TEXT` characters. A nested ``range(8000)`` loop once
took 1.6 s to save and stalled every call of its worker; it is now refused when saved.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import do_int
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

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

MAX_TEXT = 1000  # longest text a template may build or render (characters)
MAX_LOOP = 50  # most items a {% for %}, range() or any list may have
MAX_INT_BITS = 256  # largest whole number a template may build
# Steps a template (or all templates of one prompt list) may take: expressions and
# statements it evaluates, those inside a loop counted MAX_LOOP times. Every step works on
# values of at most MAX_TEXT characters, MAX_LOOP items or MAX_INT_BITS bits, in time linear
# in their size, so this bounds the time a render takes (about a millisecond at worst,
# measured by tests/test_ivr_model.py): rendering can run in the call's own flow.
MAX_WORK = 300
MAX_DEPTH = 12  # deepest nesting of statements and expressions (compiling deep code is slow)
# Filters that work in time linear in their input and cannot build big values (int, join
# and replace are checked before they run, see below); format, center, indent, map, title
# (a regular expression per word) and the rest are refused.
SAFE_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "first", "float", "int", "join", "last",
    "length", "list", "lower", "replace", "reverse", "round", "string", "trim", "truncate",
    "upper",
})  # fmt: skip
# What a prompt template may be made of: output, {% if %}, one level of {% for %}, and
# expressions. No {% set %}, {% macro %}, {% call %}, {% filter %}, {% with %}, no includes.
_ALLOWED_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.For, nodes.Name,
    nodes.Const, nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.Compare, nodes.Operand,
    nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.Add, nodes.Sub, nodes.Mul,
    nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow, nodes.Concat, nodes.CondExpr,
    nodes.Filter, nodes.Test, nodes.Call, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair,
    nodes.Keyword,
)  # fmt: skip


def _too_long(size: int) -> None:
    if size > MAX_TEXT:
        raise SecurityError(f"a value of more than {MAX_TEXT} characters in a prompt template")


def _sized(value: Any) -> Any:
    """``value`` when it is not too big to be built in a prompt template."""
    if isinstance(value, str):
        _too_long(len(value))
    elif isinstance(value, list | tuple | dict) and len(value) > MAX_LOOP:
        raise SecurityError(f"a list of more than {MAX_LOOP} items in a prompt template")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("number too large in a prompt template")
    return value


def _int(value: Any, default: int = 0, base: int = 10) -> Any:
    """jinja2's ``int`` filter, for texts short enough to convert in linear time."""
    if isinstance(value, str) and len(value) > 32:
        return default
    return _sized(do_int(value, default, base))


def _concat(*parts: Any) -> str:
    """``a ~ b``, refused before it is built when it would be too long."""
    texts = [str(p) for p in parts]
    _too_long(sum(map(len, texts)))
    return "".join(texts)


def _join(value: Any, separator: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        raise SecurityError("join(attribute=...) is not allowed in a prompt template")
    texts = [str(v) for v in _sized(list(value))]
    separator = str(separator)
    _too_long(sum(map(len, texts)) + len(separator) * max(len(texts) - 1, 0))
    return separator.join(texts)


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    limit = -1 if count is None else max(count, 0)
    times = text.count(old) if limit < 0 else min(limit, text.count(old))
    _too_long(len(text) + times * (len(new) - len(old)))
    return text.replace(old, new, limit)


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_LOOP:
        raise SecurityError(f"range() makes at most {MAX_LOOP} numbers in a prompt template")
    return numbers


def _loop_items(iterable: Any) -> list[Any]:
    items = list(itertools.islice(iter(iterable), MAX_LOOP + 1))
    if len(items) > MAX_LOOP:
        raise SecurityError(f"a loop runs over at most {MAX_LOOP} items in a prompt template")
    return items


class _PromptSandbox(SandboxedEnvironment):
    """The jinja2 sandbox, limited so that a template's work and size are bounded: only the
    constructs of :data:`_ALLOWED_NODES` and :data:`SAFE_FILTERS` (checked when compiled,
    with the step count of :func:`template_work`), and no operator builds a big value."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("'%' formatting is not allowed in a prompt template")
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent too large in a prompt template")
        ints = isinstance(left, int) and isinstance(right, int)
        if ints and operator == "**" and left.bit_length() * abs(right) > MAX_INT_BITS:
            raise SecurityError("number too large in a prompt template")
        if ints and operator == "*" and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError("number too large in a prompt template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                too_long = (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_TEXT
                )
                if too_long:
                    raise SecurityError("value too long in a prompt template")
        return _sized(super().call_binop(context, operator, left, right))


class _Bounded(NodeTransformer):
    """Rewrites a checked template so that its loops and values stay bounded at run time:
    loops run over :func:`_loop_items` and ``~`` is :func:`_concat` (filter results are
    :func:`_sized` by :func:`_sized_filter`)."""

    def __init__(self, env: SandboxedEnvironment) -> None:
        self.env = env

    def _call(self, name: str, node: nodes.Node, args: list[nodes.Expr]) -> nodes.Call:
        call = nodes.Call(nodes.Name(name, "load"), args, [], None, None)
        call.set_lineno(node.lineno).set_environment(self.env)
        return call

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._call("_loop_items", node, [cast(nodes.Expr, node.iter)])
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:
        self.generic_visit(node)
        return self._call("_concat", node, node.nodes)


def _refusal(node: nodes.Node, in_loop: bool) -> str | None:
    """Why ``node`` may not appear in a prompt template (None: it may)."""
    if not isinstance(node, _ALLOWED_NODES):
        return f"{type(node).__name__.lower()} is not allowed in a prompt template"
    if isinstance(node, nodes.For) and (in_loop or node.recursive):
        return "loops may not be nested (nor recursive) in a prompt template"
    if isinstance(node, nodes.Filter) and node.name not in SAFE_FILTERS:
        allowed = ", ".join(sorted(SAFE_FILTERS))
        return f"filter {node.name!r} is not allowed in a prompt template ({allowed})"
    callee = getattr(node, "node", None)
    if isinstance(node, nodes.Call) and not (isinstance(callee, nodes.Name)
                                             and callee.name == "range"):
        return "the only call allowed in a prompt template is range()"
    return None


def template_work(tree: nodes.Node, in_loop: bool = False, depth: int = 0) -> int:
    """Steps ``tree`` may take (nodes evaluated, loop bodies counted MAX_LOOP times); raises
    :class:`SecurityError` for a construct prompt templates may not use."""
    if (why := _refusal(tree, in_loop)) is not None:
        raise SecurityError(why)
    if depth > MAX_DEPTH:
        raise SecurityError(f"nested more than {MAX_DEPTH} deep in a prompt template")
    depth += 1
    if isinstance(tree, nodes.For):
        head = template_work(tree.iter, in_loop, depth)
        head += sum(template_work(n, in_loop, depth) for n in tree.else_)
        body = [tree.target, *tree.body, *([tree.test] if tree.test else [])]
        return 1 + head + MAX_LOOP * sum(template_work(n, True, depth) for n in body)
    return 1 + sum(template_work(child, in_loop, depth) for child in tree.iter_child_nodes())


def _sized_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a jinja2 filter) with its result checked by :func:`_sized`."""

    @functools.wraps(function)  # keeps jinja2's pass_context/... marks
    def sized(*args: Any, **kwargs: Any) -> Any:
        return _sized(function(*args, **kwargs))

    return sized


_env = _PromptSandbox(undefined=StrictUndefined, autoescape=False)
_env.globals.update(range=_range, _loop_items=_loop_items, _concat=_concat)
_env.filters.update(int=_int, join=_join, replace=_replace)
_env.filters = {name: _sized_filter(_env.filters[name]) for name in SAFE_FILTERS}
_cache: dict[str, tuple[Template, int]] = {}


def compile_template(source: str) -> tuple[Template, int]:
    """The template of ``source`` and its step count; raises :class:`TemplateError`
    (:class:`SecurityError` for what prompts may not use, or more than MAX_WORK steps)."""
    found = _cache.get(source)
    if found is None:
        tree = _env.parse(source)
        work = template_work(tree)
        if work > MAX_WORK:
            raise SecurityError(f"does too much work: {work} steps (at most {MAX_WORK})")
        if len(_cache) > 4096:
            _cache.clear()
        found = _cache[source] = (_env.from_string(_Bounded(_env).visit(tree)), work)
    return found


def _render(source: str, ctx: Mapping[str, Any]) -> str:
    """Render ``source``; more than MAX_TEXT characters of output is a SecurityError."""
    out: list[str] = []
    size = 0
    for piece in compile_template(source)[0].generate(ctx):
        size += len(piece)
        if size > MAX_TEXT:
            raise SecurityError(f"renders to more than {MAX_TEXT} characters")
        out.append(piece)
    return "".join(out)


def sample_context(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    ctx = dict(CALL_VARIABLES)
    ctx["vars"] = dict(variables or {})
    return ctx


def check_template(prompt: Prompt, set_variables: Mapping[str, str] | None = None) -> str | None:
    """Why ``prompt`` cannot be rendered (None when it renders with sample values)."""
    if not is_template(prompt.value):
        return None
    try:
        text = _render(prompt.value, sample_context(set_variables))
    except TemplateError as exc:
        return f"template error: {exc.message or exc}"
    except Exception as exc:  # arithmetic on strings, ...
        return f"template error: {exc}"
    if not text.strip():
        return "renders to an empty text"
    return None


def prompts_work(prompts: Iterable[Prompt]) -> int:
    """Steps the templates among ``prompts`` take together (0 for plain prompts, or for
    templates that do not compile: :func:`check_template` reports those)."""
    total = 0
    for p in prompts:
        if is_template(p.value):
            with contextlib.suppress(TemplateError):
                total += compile_template(p.value)[1]
    return total


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
            value = _render(p.value, ctx)
            if p.kind != "tts":
                value = value.strip()
            check_prompt_value(p.kind, value, f"{p.kind}:{value}")
        except Exception:  # TemplateError, PromptSpecError, sandbox errors: skip it
            continue
        if value.strip():
            out.append(Prompt(p.kind, value))
    return tuple(out)
