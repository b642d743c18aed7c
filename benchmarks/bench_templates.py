"""Worst-case cost of prompt templates: the costliest ones the limits of ``ivr/prompts.py``
allow (searched per filter: chains of it on the longest text a value may hold, repeated up
to MAX_WORK steps), timed to render and to compile, next to a typical template.

    .venv/bin/python benchmarks/bench_templates.py
"""

from __future__ import annotations

import time

from ivr import prompts
from ivr.calls import Prompt

TEXT = '("Ab " * 333)'  # 999 characters: the longest value a template may build
ARGS = {"replace": '("A", "b")', "join": '("")', "truncate": "(990)", "default": '("x")',
        "d": '("x")'}  # fmt: skip
TYPICAL = "tts:Hello {{ caller_name|default('caller') }}, you are number {{ queue_position }}."


def candidates() -> list[str]:
    """For each allowed filter and chain length, the unit repeated up to MAX_WORK steps."""
    out = []
    for name in sorted(prompts.SAFE_FILTERS):
        for chain in (1, 4, 8):
            unit = "{{ " + TEXT + f"|{name}{ARGS.get(name, '')}" * chain + "|length }}"
            try:
                steps = prompts.compile_template(unit)[1]
            except Exception:
                continue
            out.append(unit * max(1, prompts.MAX_WORK // steps))
    return out


def best_of(run: object, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    context = prompts.sample_context()
    rows = []
    for source in candidates():
        if prompts.check_template(Prompt("tts", source)) is not None:
            continue
        render = best_of(lambda s=source: prompts.render((Prompt("tts", s),), lambda: context))
        prompts._cache.clear()
        compile_ = best_of(lambda s=source: (prompts._cache.clear(), prompts.compile_template(s)))
        rows.append((render, compile_, source))
    rows.sort(reverse=True)
    for render, compile_, source in rows[:5]:
        print(f"render {1000 * render:6.3f} ms  compile {1000 * compile_:6.2f} ms  {source[:50]}")
    typical = (Prompt("tts", TYPICAL.removeprefix("tts:")),)
    took = best_of(lambda: prompts.render(typical, lambda: context))
    print(f"typical template: render {1e6 * took:.1f} µs")


if __name__ == "__main__":
    main()
