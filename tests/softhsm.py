"""SoftHSM2, the software PKCS#11 token standing in for an HSM: the module path and
every token the test session uses (created by the `softhsm` fixture in conftest)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.tools import require_file, require_tool

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN = "12345678"
# Every token the test session uses. SoftHSM2 only sees the tokens that exist
# when a process first loads it, so they are all created before that.
TOKENS = {
    "signflow-test": "482916",  # tests/test_pkcs11.py
    "svc-main": "731902",
    "svc-fresh": "731903",
    "svc-other": "731904",
    "svc-empty": "731905",
    "svc-pin": "731906",
    "svc-cli": "731907",
}


def require_module() -> str:
    return require_file(MODULE, "package softhsm2")


def make_tokens(folder: Path) -> Path:
    """A SoftHSM2 configuration in `folder` holding all of TOKENS, made the one this
    process loads (SOFTHSM2_CONF). Under xdist every worker is its own process with
    its own temporary folder, hence its own tokens."""
    softhsm_util = require_tool("softhsm2-util")
    require_module()
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label, pin in TOKENS.items():
        subprocess.run(
            [softhsm_util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN,
             "--pin", pin],
            check=True, capture_output=True,
        )
    return conf
