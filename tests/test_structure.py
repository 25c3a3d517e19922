"""The package's structure: importing xprop has no side effects beyond defining things.

Importing a library must not change the process it is imported into: not its umask, its
environment, its hooks, signal handlers, logging or warning filters, and it must not start
threads or import the heavy array libraries (they load when a backend asks for them).  The
one effect allowed is registering things with xprop itself (the built-in array libraries,
the backend name ``"auto"``, the former module paths).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imports every module of the package in a fresh interpreter and reports what changed.
_IMPORT_EVERYTHING = """
import importlib, json, logging, os, pkgutil, signal, sys, threading, warnings
import array_api_compat, numpy  # xprop's dependencies: their own effects are not xprop's

umask_calls = []
real_umask = os.umask
os.umask = lambda mask: umask_calls.append(mask) or real_umask(mask)
signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
before = {
    "environ": dict(os.environ),
    "cwd": os.getcwd(),
    "excepthook": id(sys.excepthook),
    "displayhook": id(sys.displayhook),
    "threads": threading.active_count(),
    "signals": [id(signal.getsignal(s)) for s in signals],
    "root logging handlers": len(logging.getLogger().handlers),
    "warning filters": len(warnings.filters),
}

import xprop
for module in pkgutil.walk_packages(xprop.__path__, "xprop."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

after = {
    "environ": dict(os.environ),
    "cwd": os.getcwd(),
    "excepthook": id(sys.excepthook),
    "displayhook": id(sys.displayhook),
    "threads": threading.active_count(),
    "signals": [id(signal.getsignal(s)) for s in signals],
    "root logging handlers": len(logging.getLogger().handlers),
    "warning filters": len(warnings.filters),
}
heavy = ("jax", "torch", "cupy", "mpi4py", "array_api_strict", "matplotlib", "pooch", "tqdm")
print(json.dumps({
    "umask calls": umask_calls,
    "changed": sorted(k for k in before if before[k] != after[k]),
    "heavy imports": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
}))
"""


def test_importing_xprop_leaves_the_process_alone() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["umask calls"] == [], "importing xprop set the umask (read it, don't set it)"
    assert report["changed"] == [], f"importing xprop changed the process: {report['changed']}"
    assert report["heavy imports"] == [], (
        f"importing xprop imported {report['heavy imports']}: import them where they are used"
    )
