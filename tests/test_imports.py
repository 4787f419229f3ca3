"""Import rules that keep start-up fast: importing the app loads neither OpenCV nor torch (the
viewer's JPEG encoder imports cv2 on its worker thread; only the engine imports torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_app_imports_neither_cv2_nor_torch() -> None:
    code = "import agenthuman_local.app, sys; print('cv2' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
