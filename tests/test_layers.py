"""The package's layers, checked: the import graph (read with `ast`, tests/import_graph.py)
against the layer table. Each module importing on its own is test_import_alone.py.

The table, by what each module imports at run
time, module level or inside a function; imports under `if TYPE_CHECKING:` are type hints only
and are not edges. There is no allowlist: a module that breaks its row fails the test.

- L0, pure (config config_sources errors ids jsonsafe protocol records migrations avatars paths
  audio clock engine.base sessions.state transports.base): no aiohttp, torch, cv2, av, daily,
  aiosqlite; only L0 modules.
- engine.*: no aiohttp, daily, av; none of api, app, cli, sessions, store, transports.
- sessions.*: no aiohttp, torch, cv2, av, daily; none of api, app, cli; of transports only base;
  of engine only base (the Renderer/FrameDriver protocols and the worker's WorkerFull /
  WorkerClosed); the render worker and pool it is handed are type hints only.
- store.*: no torch, daily, aiohttp; none of api, app, cli, transports, engine; of sessions only
  state.
- transports.*: no aiohttp.web; none of api, app, cli, store; of sessions only state, of engine
  only base.
- api.*: no torch, daily, av; none of app, cli; of transports only base, viewer (the hub it
  serves) and socket (the socket it serves); of sessions only state, manager and live (the
  typed interface: `SessionManager[LiveSession]`), never the runner or its parts; of engine only
  faces (the upload-face check, imported on its worker thread) and the package itself.
- daily is imported by transports.daily only, PyAV by transports.recording only.
- aiohttp.web (the HTTP server) is imported by api.*, app, keys and cli only: no other module can
  define a cleanup context or an AppKey, so `app.py` is the one composition root (the engine's
  slot, the re-rig, the outputs and Daily are opened there).

And every `web.AppKey` / `web.RequestKey` is made in `keys.py`.
"""

from __future__ import annotations

import ast

from tests.import_graph import PACKAGE, graph, module_name, runtime_imports

L0 = {
    "config",
    "config_sources",
    "errors",
    "ids",
    "jsonsafe",
    "protocol",
    "records",
    "migrations",
    "avatars",
    "paths",
    "audio",
    "clock",
    "engine.base",
    "sessions.state",
    "transports.base",
}
API_TRANSPORTS = ("transports.base", "transports.viewer", "transports.socket")
API_SESSIONS = ("sessions.state", "sessions.manager", "sessions.live")
API_ENGINE = ("engine", "engine.faces")
SESSIONS_ENGINE = ("engine.base",)
WEB = ("app", "keys", "cli")  # besides api.*: the modules that may import aiohttp.web
HEAVY = ("aiohttp", "torch", "cv2", "av", "daily", "aiosqlite")


def _top(name: str) -> str:
    return name.removeprefix("!").split(".")[0]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the table, as 'module -> imported (rule)'."""
    bad: list[str] = []

    def forbid(module: str, imported: str, why: str) -> None:
        bad.append(f"{module} -> {imported.removeprefix('!')} ({why})")

    for module, imports in sorted(edges.items()):
        libs = {i for i in imports if i.startswith("!")}
        local = imports - libs
        for lib in libs:
            top = _top(lib)
            if top == "daily" and module != "transports.daily":
                forbid(module, lib, "only transports.daily imports daily")
            if top == "av" and module != "transports.recording":
                forbid(module, lib, "only transports.recording imports PyAV")
            if _under(lib.removeprefix("!"), "aiohttp.web") and not (
                _under(module, "api") or module in WEB
            ):
                forbid(module, lib, "only the API, app, keys and cli import aiohttp.web")
        if module in L0:
            for lib in libs:
                if _top(lib) in HEAVY:
                    forbid(module, lib, "L0 is pure")
            for name in local:
                if name not in L0:
                    forbid(module, name, "L0 imports only L0")
        if _under(module, "engine"):
            for lib in libs:
                if _top(lib) in ("aiohttp", "daily", "av"):
                    forbid(module, lib, "engine has no I/O")
            for name in local:
                if any(_under(name, p) for p in ("api", "app", "cli", "sessions", "store")) or (
                    _under(name, "transports")
                ):
                    forbid(module, name, "engine imports only L0 and engine")
        if _under(module, "sessions"):
            for lib in libs:
                if _top(lib) in ("aiohttp", "torch", "cv2", "av", "daily"):
                    forbid(module, lib, "sessions imports neither torch nor aiohttp")
            for name in local:
                if any(_under(name, p) for p in ("api", "app", "cli")) or (
                    _under(name, "transports") and name != "transports.base"
                ):
                    forbid(module, name, "sessions sees outputs only as transports.base.Sink")
                if _under(name, "engine") and name not in SESSIONS_ENGINE:
                    forbid(module, name, "sessions sees the engine through engine.base only")
        if _under(module, "store"):
            for lib in libs:
                if _top(lib) in ("torch", "daily", "aiohttp"):
                    forbid(module, lib, "the store is SQL only")
            for name in local:
                if any(_under(name, p) for p in ("api", "app", "cli", "transports", "engine")) or (
                    _under(name, "sessions") and name != "sessions.state"
                ):
                    forbid(module, name, "the store does not import the layers above it")
        if _under(module, "transports"):
            for lib in libs:
                if _under(lib.removeprefix("!"), "aiohttp.web"):
                    forbid(module, lib, "transports serve no HTTP")
            for name in local:
                if (
                    any(_under(name, p) for p in ("api", "app", "cli", "store"))
                    or (_under(name, "sessions") and name != "sessions.state")
                    or (_under(name, "engine") and name != "engine.base")
                ):
                    forbid(module, name, "an output knows frames, not who made them")
        if _under(module, "api"):
            for lib in libs:
                if _top(lib) in ("torch", "daily", "av"):
                    forbid(module, lib, "the API imports no media library")
            for name in local:
                if any(_under(name, p) for p in ("app", "cli")) or (
                    _under(name, "transports") and name not in API_TRANSPORTS
                ):
                    forbid(module, name, "the API reaches outputs only through the app")
                if _under(name, "sessions") and name not in API_SESSIONS:
                    forbid(module, name, "the API reaches sessions through the manager")
                if _under(name, "engine") and name not in API_ENGINE:
                    forbid(module, name, "the API renders nothing itself")
    return bad


def keys_made_outside(sources: dict[str, str]) -> list[str]:
    """'module: line' for every `AppKey(...)` / `RequestKey(...)` made outside keys.py."""
    found = []
    for module, text in sorted(sources.items()):
        if module == "keys":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("AppKey", "RequestKey"):
                    found.append(f"{module}: {node.lineno}")
    return found


def _sources() -> dict[str, str]:
    return {
        module_name(p): p.read_text(encoding="utf-8")
        for p in PACKAGE.rglob("*.py")
        if module_name(p)
    }


def test_every_app_key_is_made_in_keys() -> None:
    sources = _sources()
    assert "web.AppKey(" in sources["keys"]  # the scan reads the real registry
    assert keys_made_outside(sources) == []


def test_the_app_key_check_and_the_web_row_can_fail() -> None:
    sources = {"keys": "k = web.AppKey('k')", "rerig": "x = 1\nt: T = web.AppKey('t')"}
    sources["api.ws"] = "from aiohttp.web import AppKey\nk = AppKey('k')"
    assert keys_made_outside(sources) == ["api.ws: 2", "rerig: 2"]
    edges = graph()
    before = set(violations(edges))
    fake = "from aiohttp import web"
    for module in ("engine.slot", "rerig", "transports.local", "api.sessions", "app"):
        edges[module] = edges[module] | runtime_imports(ast.parse(fake), module)
    added = sorted(set(violations(edges)) - before)
    web_row = "(only the API, app, keys and cli import aiohttp.web)"
    assert added == [
        "engine.slot -> aiohttp (engine has no I/O)",
        "engine.slot -> aiohttp.web (engine has no I/O)",
        f"engine.slot -> aiohttp.web {web_row}",
        f"rerig -> aiohttp.web {web_row}",
        f"transports.local -> aiohttp.web {web_row}",
        # Before `from aiohttp import web` was read as an edge to aiohttp.web, this row missed it.
        "transports.local -> aiohttp.web (transports serve no HTTP)",
    ]


def test_the_import_graph_follows_the_layer_table() -> None:
    edges = graph()
    assert "sessions.runner" in edges and "transports.base" in edges  # the walk found the package
    assert violations(edges) == []


def test_the_layer_check_can_fail() -> None:
    edges = graph()
    before = set(violations(edges))
    edges["sessions.runner"] = edges["sessions.runner"] | {"!torch", "api.ws"}
    added = sorted(set(violations(edges)) - before)
    assert [v.split(" (")[0] for v in added] == [
        "sessions.runner -> api.ws",
        "sessions.runner -> torch",
    ]


def test_the_api_and_session_rows_can_fail() -> None:
    edges = graph()
    before = set(violations(edges))
    edges["api.sessions"] = edges["api.sessions"] | {"sessions.runner", "engine.procedural"}
    edges["sessions.live"] = edges["sessions.live"] | {"engine.engine"}
    edges["sessions.runner"] = edges["sessions.runner"] | {"engine.worker"}
    added = sorted(set(violations(edges)) - before)
    assert [v.split(" (")[0] for v in added] == [
        "api.sessions -> engine.procedural",
        "api.sessions -> sessions.runner",
        "sessions.live -> engine.engine",
        "sessions.runner -> engine.worker",
    ]
