"""Every module of the package imported on its own (into an interpreter holding no other module
of the package) with pyproject's warning filters as errors, as aiohttp's
tests/test_circular_imports.py does; and the session layer loads neither torch nor aiohttp."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import tomllib

import pytest

import agenthuman_local
from tests.import_graph import PACKAGE, ROOT, module_name, runtime_imports


def _warning_filters() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["pytest"]["ini_options"]["filterwarnings"])


# Optional extras: a module that needs one of these is skipped when it is not installed.
OPTIONAL = ("daily",)
# Third-party libraries loaded once before the forks, so that each module's own import (a few
# ms) is what is timed, not torch's (seconds, once per module). The package itself is never
# imported before a fork: each child imports its one module into an interpreter that holds no
# agenthuman_local module, which is what finds cycles and missing imports.
PRELOAD = ("numpy", "torch", "cv2", "av", "aiohttp.web", "aiosqlite", "prometheus_client", "yaml")

_ALONE = r"""
import importlib, json, os, sys, traceback, warnings
preload, modules, filters = json.loads(sys.argv[1])
for name in preload:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not [m for m in sys.modules if m.startswith("agenthuman_local")]
failed = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        warnings.resetwarnings()
        for spec in reversed(filters):  # as pytest applies them: the last one wins
            action, _, rest = spec.partition("::")
            category, _, where = rest.partition(":")
            cls = {"": Warning}.get(category) or getattr(__import__("builtins"), category)
            warnings.filterwarnings(action, category=cls, module=where)
        code = 0
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc()[-1500:].encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        err = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[module] = err or f"exit status {status}"
print(json.dumps(failed))
"""


def _modules() -> list[str]:
    found = pkgutil.walk_packages(agenthuman_local.__path__, "agenthuman_local.")
    # `__main__` runs the server when imported: it is `cli.main()`, and cli is imported.
    return sorted(m.name for m in found if not m.name.endswith(".__main__"))


def _installed(lib: str) -> bool:
    return importlib.util.find_spec(lib) is not None


def _needs(module: str, lib: str) -> bool:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    return f"!{lib}" in runtime_imports(ast.parse(file.read_text()), module_name(file))


def import_each_alone(modules: list[str]) -> dict[str, str]:
    """{module: traceback} for every module that fails to import on its own."""
    arg = json.dumps([list(PRELOAD), modules, _warning_filters()])
    proc = subprocess.run(
        [sys.executable, "-c", _ALONE, arg],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(300)
def test_every_module_imports_on_its_own_without_warnings() -> None:
    modules = _modules()
    assert "agenthuman_local.sessions.runner" in modules and len(modules) > 50
    missing = [lib for lib in OPTIONAL if not _installed(lib)]
    wanted = [m for m in modules if not any(_needs(m, lib) for lib in missing)]
    assert import_each_alone(wanted) == {}
    if missing:
        pytest.skip(f"imported all but the modules that need {missing} (not installed)")


def test_the_session_layer_loads_neither_torch_nor_aiohttp() -> None:
    code = (
        "import sys, agenthuman_local.sessions.runner, agenthuman_local.sessions.live;"
        "print(sorted(m for m in ('torch', 'aiohttp', 'cv2', 'av') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
