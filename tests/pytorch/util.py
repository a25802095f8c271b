"""Shared helpers of the PyTorch-mirror tests (tests/pytorch/test_*.py, run by ctest).

Puts model/pytorch on sys.path, gives scratch directories under $GS_BUILD_DIR (so nothing
is written into the source tree) and runs the mirror's scripts as the user would.
"""

import os
import subprocess
import sys
import tempfile

SOURCE_DIR = os.environ.get("GS_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIRROR_DIR = os.path.join(SOURCE_DIR, "model", "pytorch")
sys.path.insert(0, MIRROR_DIR)

PYTHON = "/usr/bin/python3"


def scratch_dir():
    """Returns a TemporaryDirectory under $GS_BUILD_DIR (or the system temp dir)."""
    base = os.environ.get("GS_BUILD_DIR")
    if base and os.path.isdir(base):
        base = os.path.join(base, "pytorch-scratch")
        os.makedirs(base, exist_ok=True)
    else:
        base = None
    return tempfile.TemporaryDirectory(prefix="gs-pytorch-", dir=base)


def run_script(script, *args):
    """Runs model/pytorch/<script> with args; returns the CompletedProcess (text output)."""
    return subprocess.run([PYTHON, os.path.join(MIRROR_DIR, script)] + [str(a) for a in args],
                          capture_output=True, text=True, check=False)
