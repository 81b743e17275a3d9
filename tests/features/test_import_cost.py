"""``import features`` stays cheap: every gateway worker and CLI process starts with it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.signal
from support import REPO_ROOT

from features.spectral import _analysis_window


def test_import_features_does_not_import_scipy() -> None:
    probe = (
        "import sys, features; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_the_hann_window_is_scipys() -> None:
    expected = scipy.signal.get_window("hann", 400, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(_analysis_window(), expected)
