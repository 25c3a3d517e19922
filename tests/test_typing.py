"""xprop's types, as a user's IDE and type checker see them (issue 26).

The package ships ``py.typed``; every public function and method is annotated, arrays as
:data:`xprop.Array`; and ``mypy --strict`` accepts a user's script on the public API
(tests/typing_user_script.py: a TwoLayerNet, an optimizer, ``compile_step``, a Trainer,
checkpoints) while refusing the mistakes marked in it, which shows it reads xprop's own
types rather than ``Any``.  The script also runs, so what is type-checked is code that
works.  The mypy test is skipped where mypy is not installed (the ``test`` extra has it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import xprop

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("typing_user_script.py")
PACKAGE = Path(xprop.__file__).resolve().parent

#: The modules docs/api.md documents: the public API.
PUBLIC_MODULES = [
    "xprop",
    "xprop.typing",
    "xprop.checks",
    "xprop.backend",
    "xprop.libraries",
    "xprop.libraries.numpy",
    "xprop.libraries.cupy",
    "xprop.libraries.torch",
    "xprop.libraries.jax",
    "xprop.libraries.array_api_strict",
    "xprop.auto",
    "xprop.nn",
    "xprop.nn.layer",
    "xprop.nn.functions",
    "xprop.nn.layers",
    "xprop.nn.batch_norm",
    "xprop.nn.dropout",
    "xprop.nn.im2col",
    "xprop.nn.conv",
    "xprop.nn.pooling",
    "xprop.nets",
    "xprop.nets.network",
    "xprop.nets.two_layer_net",
    "xprop.nets.multi_layer_net",
    "xprop.nets.simple_conv_net",
    "xprop.nets.deep_conv_net",
    "xprop.optimizers",
    "xprop.training",
    "xprop.training.step",
    "xprop.training.compile",
    "xprop.training.compiled",
    "xprop.training.jit",
    "xprop.training.cuda_graph",
    "xprop.training.trainer",
    "xprop.distributed",
    "xprop.distributed.collectives",
    "xprop.distributed.errors",
    "xprop.distributed.abort",
    "xprop.distributed.layout",
    "xprop.distributed.mpi",
    "xprop.distributed.placement",
    "xprop.checkpoint",
    "xprop.files",
    "xprop.gradient",
    "xprop.gradcheck",
    "xprop.datasets",
    "xprop.info",
]

#: Arguments that hold arrays wherever they appear: their annotation names xprop.Array.
ARRAY_ARGUMENTS = {"x", "t", "y", "dout", "x_train", "t_train", "x_test", "t_test"}

#: Mypy's settings for the user's script: strict; xprop read as a library (its own
#: errors are ``nox -s lint``'s business: mypy never reports an installed package's);
#: the optional array libraries unread (as in pyproject.toml), so the answer is the same
#: wherever they are installed.
MYPY_INI = """\
[mypy]
strict = True
follow_imports = silent
[mypy-array_api_strict.*,cupy.*,cupyx.*,jax.*,jaxlib.*,mpi4py.*,pooch.*,threadpoolctl.*,\
torch.*,tqdm.*]
follow_imports = skip
ignore_missing_imports = True
"""


def test_the_package_ships_py_typed() -> None:
    """PEP 561: without the marker a type checker ignores an installed package's hints."""
    assert (PACKAGE / "py.typed").is_file(), f"{PACKAGE / 'py.typed'} is missing"


def test_the_public_modules_are_the_documented_ones() -> None:
    api = ROOT / "docs" / "api.md"
    if not api.is_file():
        pytest.skip("docs/api.md is not here (an sdist without the docs)")
    documented = set(re.findall(r"automodule:: (xprop[\w.]*)", api.read_text()))
    assert documented == set(PUBLIC_MODULES), (
        f"docs/api.md documents {sorted(documented - set(PUBLIC_MODULES))} that "
        f"PUBLIC_MODULES lacks, and not {sorted(set(PUBLIC_MODULES) - documented)}"
    )


def _public_callables() -> Iterator[tuple[str, Callable[..., Any], bool]]:
    """``(qualified name, function, is a method)`` of every public function and method of
    the public modules: their ``__all__`` (else the public names they define), and the
    public methods, ``__init__`` and ``__call__`` of their classes."""
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items() if getattr(v, "__module__", None) == module_name
        ]
        for name in names:
            obj = getattr(module, name)
            if id(obj) in seen or not str(getattr(obj, "__module__", "")).startswith("xprop"):
                continue
            seen.add(id(obj))
            if inspect.isfunction(obj):
                yield f"{obj.__module__}.{obj.__qualname__}", obj, False
            elif inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr not in ("__init__", "__call__"):
                        continue
                    if isinstance(value, property):
                        value = value.fget
                    method = not isinstance(value, staticmethod)
                    value = getattr(value, "__func__", value)  # staticmethod, classmethod
                    if inspect.isfunction(value) and value.__module__.startswith("xprop"):
                        yield f"{obj.__module__}.{value.__qualname__}", value, method


def test_every_public_function_and_method_is_annotated() -> None:
    missing = []
    count = 0
    for name, function, method in _public_callables():
        count += 1
        signature = inspect.signature(function)
        parameters = list(signature.parameters.values())[1 if method else 0 :]
        bare = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
        if signature.return_annotation is inspect.Signature.empty:
            bare.append("return")
        if bare:
            missing.append(f"{name}: {', '.join(bare)}")
    assert count > 250, f"only {count} public functions and methods found"
    assert not missing, "public functions without annotations:\n" + "\n".join(missing)


def test_array_arguments_are_annotated_as_arrays() -> None:
    """``x``, ``t``, ``dout``, ... say ``Array`` (the documented alias), not ``Any``."""
    wrong = [
        f"{name}({p.name}: {p.annotation})"
        for name, function, _ in _public_callables()
        for p in inspect.signature(function).parameters.values()
        if p.name in ARRAY_ARGUMENTS and "Array" not in str(p.annotation)
    ]
    assert not wrong, "array arguments not annotated as xprop.Array:\n" + "\n".join(wrong)


def test_the_alias_is_exported() -> None:
    assert xprop.Array is xprop.typing.Array
    assert "Array" in xprop.__all__


def _environment() -> dict[str, str]:
    """This checkout's xprop first; no XPROP_* setting of the session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent), env.get("PYTHONPATH")]))
    return env


def test_the_user_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_environment(), "OPENBLAS_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accuracy" in result.stdout


def test_mypy_strict_accepts_the_user_script_and_refuses_its_mistakes(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed: pip install mypy (it is in the test extra)")
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_INI)
    env = _environment()
    del env["PYTHONPATH"]
    if "site-packages" not in PACKAGE.parts:
        # A source checkout: mypy reads it from here.  An installed xprop (nox) is found
        # where it is installed, which only works with its py.typed marker.
        env["MYPYPATH"] = str(PACKAGE.parent)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(tmp_path / "cache"), "--no-error-summary", "--show-error-codes", str(SCRIPT)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    expected = {
        (number, code)
        for number, line in enumerate(SCRIPT.read_text().splitlines(), start=1)
        for code in re.findall(r"# E: ([\w-]+)", line)
    }
    reported = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^.*?:(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.MULTILINE)
    }
    output = result.stdout + result.stderr
    assert len(expected) == 6
    assert reported == expected, (
        f"mypy --strict should report exactly the marked mistakes; unexpected: "
        f"{sorted(reported - expected)}, missing: {sorted(expected - reported)}\n{output}"
    )
    assert result.returncode == 1, output
