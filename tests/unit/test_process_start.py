"""What an odradek process imports before it does anything: each broker and CLI command pays it on
start (bench/process_start.py), and the test suite starts hundreds of them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("hypothesis", "kio", "pydantic", "cryptography", "scramp", "confluent_kafka")
BLOCKED = "import sys\nsys.modules['hypothesis'] = None\n"


def loaded_after(code: str) -> list[str]:
    """Which of HEAVY a fresh interpreter holds as a module after running `code`."""
    probe = f"{code}\nimport sys, types\nprint(' '.join(m for m in {HEAVY!r} if isinstance(sys.modules.get(m), types.ModuleType)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.splitlines()[-1].split()  # the probe's line, after whatever `code` printed


def test_the_cli_loads_no_protocol_config_or_crypto_library_before_a_command_needs_it() -> None:
    assert loaded_after(BLOCKED + "import odradek.cli.main") == []


def test_a_broker_without_tls_or_scram_listeners_loads_neither_cryptography_nor_scramp() -> None:
    assert loaded_after(BLOCKED + "import odradek.cli.main, odradek.server.app") == ["kio", "pydantic"]


def test_the_odradek_command_keeps_hypothesis_out_of_kio_where_the_test_extras_installed_it() -> None:
    started = ("import sys\nsys.argv = ['odradek', '--help']\nfrom odradek.__main__ import main\n"
               "try:\n    main()\nexcept SystemExit:\n    pass\nimport odradek.server.app")
    assert "hypothesis" in loaded_after("import kio.schema.errors")  # what kio does when left alone
    assert loaded_after(started) == ["kio", "pydantic"]
