"""`e2b_code_interpreter` (sync and async) against cloche: stateful Python contexts on
the `code-interpreter-v1` template."""

from __future__ import annotations

import asyncio
import time

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from tests.e2b.conftest import E2bEnv


@pytest.fixture(scope="module")
def sbx(e2b: E2bEnv):
    sandbox = Sandbox.create(timeout=300)
    yield sandbox
    sandbox.kill()


def test_template_is_code_interpreter(sbx: Sandbox):
    assert sbx.get_info().template_id == "code-interpreter-v1"


def test_state_persists_and_last_expression_is_the_result(sbx: Sandbox):
    first = sbx.run_code("x = 41\ndef inc(v):\n    return v + 1\nprint('defined')")
    assert first.error is None and first.text is None
    assert first.logs.stdout == ["defined\n"]
    second = sbx.run_code("inc(x)")
    assert second.text == "42" and second.results[0].is_main_result
    assert second.execution_count == first.execution_count + 1
    assert sbx.run_code("import math\nmath.sqrt(16)").text == "4.0"
    assert sbx.run_code("'text'").text == "'text'"


def test_output_is_streamed(sbx: Sandbox):
    seen: list[tuple[float, str]] = []
    ex = sbx.run_code("import sys, time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')\n"
                      "print('to stderr', file=sys.stderr)\nimport os\nos.system('echo from a subprocess')",
                      on_stdout=lambda m: seen.append((time.monotonic(), m.line)))  # fmt: skip
    assert "".join(ex.logs.stdout) == "a\nb\nfrom a subprocess\n"
    assert ex.logs.stderr == ["to stderr\n"]
    # streamed: "a" arrives on its own, before the half-second sleep ends ("b" and the
    # subprocess's line may then arrive in one chunk or two)
    assert seen[0][1] == "a\n" and seen[1][1].startswith("b\n")
    assert seen[1][0] - seen[0][0] > 0.3


def test_errors_have_name_value_traceback(sbx: Sandbox):
    errors = []
    ex = sbx.run_code("y = 1\nraise ValueError('bad value')", on_error=errors.append)
    assert ex.error is not None and ex.error == errors[0]
    assert ex.error.name == "ValueError" and ex.error.value == "bad value"
    assert "line 2" in ex.error.traceback and "raise ValueError" in ex.error.traceback
    assert sbx.run_code("y").text == "1"  # state survives an error
    syntax = sbx.run_code("def broken(:")
    assert syntax.error.name == "SyntaxError"
    assert sbx.run_code("undefined_name").error.name == "NameError"


def test_envs_and_contexts(sbx: Sandbox):
    assert sbx.run_code("import os; os.environ.get('ONLY_NOW')", envs={"ONLY_NOW": "yes"}).text == "'yes'"
    assert sbx.run_code("import os; os.environ.get('ONLY_NOW')").text is None
    ctx = sbx.create_code_context(cwd="/tmp")
    assert ctx.language == "python" and ctx.cwd == "/tmp"
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
    assert sbx.run_code("x", context=ctx).error.name == "NameError"  # contexts are separate
    sbx.run_code("z = 5", context=ctx)
    assert ctx.id in {c.id for c in sbx.list_code_contexts()}
    sbx.restart_code_context(ctx)
    assert sbx.run_code("z", context=ctx).error.name == "NameError"  # a restart forgets
    sbx.remove_code_context(ctx)
    assert ctx.id not in {c.id for c in sbx.list_code_contexts()}


def test_timeout_interrupts_and_the_kernel_lives_on(sbx: Sandbox):
    sbx.run_code("kept = 'still here'")
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\ntime.sleep(30)", timeout=1)
    assert sbx.run_code("kept").text == "'still here'"


def test_async_code_interpreter(e2b: E2bEnv):
    async def main() -> None:
        s = await AsyncSandbox.create()
        try:
            out: list[str] = []
            await s.run_code("counter = 10")
            ex = await s.run_code("counter += 1\nprint(counter)\ncounter * 2", on_stdout=lambda m: out.append(m.line))
            assert ex.text == "22" and out == ["11\n"]
            ctx = await s.create_code_context()
            assert (await s.run_code("counter", context=ctx)).error.name == "NameError"
            await s.remove_code_context(ctx.id)
            bad = await s.run_code("1/0")
            assert bad.error.name == "ZeroDivisionError"
        finally:
            await s.kill()

    asyncio.run(main())
