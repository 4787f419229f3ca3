"""The examples in client/examples compile, and the Pipecat one imports with the framework."""

from __future__ import annotations

import importlib.util
import py_compile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["pipecat_bot.py", "livekit_worker.py"])
def test_example_compiles(name: str) -> None:
    py_compile.compile(str(EXAMPLES / name), doraise=True)


def test_pipecat_example_imports() -> None:
    pytest.importorskip("pipecat.services.cartesia.tts")
    spec = importlib.util.spec_from_file_location("pipecat_bot", EXAMPLES / "pipecat_bot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.bot) and module.params().video_out_is_live
