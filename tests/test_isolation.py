"""run_isolated (tests/conftest.py): a native crash in a check fails that test, naming the library and the CPU."""

from __future__ import annotations

import pytest
from conftest import cpu_description, run_isolated


def doubled(x: int) -> int:
    return 2 * x


def raises() -> None:
    raise ValueError("bad input 7")


def crashes_inside_openvino() -> None:
    """A segfault from a frame whose file sits in an openvino package, as an int8 kernel crash would show."""
    source = "import ctypes\ndef infer():\n    return ctypes.string_at(0)\n"
    namespace: dict = {}
    exec(compile(source, "/site-packages/openvino/runtime/fake_infer.py", "exec"), namespace)
    namespace["infer"]()


def test_a_result_comes_back() -> None:
    assert run_isolated(doubled, 21, what="doubling") == 42


def test_an_exception_is_a_failure_with_its_traceback() -> None:
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)raising check raised in its subprocess: ValueError: bad input 7.*raises"
    ):
        run_isolated(raises, what="raising check")


def test_a_segfault_is_a_failure_naming_the_library_and_the_cpu() -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        run_isolated(crashes_inside_openvino, what="OpenVINO int8 inference (simulated)")
    message = str(failure.value)
    assert "OpenVINO int8 inference (simulated): native crash (signal SIGSEGV)" in message
    assert "in OpenVINO (in fake_infer.py:infer)" in message
    assert f"on CPU {cpu_description()}" in message


def test_only_module_level_functions_are_accepted() -> None:
    with pytest.raises(TypeError, match="module-level"):
        run_isolated(lambda: 1, what="lambda")
