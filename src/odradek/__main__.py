"""`python -m odradek` is the `odradek` command."""

import sys


def main() -> None:
    # kio's phantom types import Hypothesis whenever it is installed, to register test strategies
    # that no odradek command uses: a third of every start's CPU in an environment with the test
    # extras (0.3-0.5 of 1.0-1.5 s), paid by each broker and CLI process the test suite runs.
    if "hypothesis" not in sys.modules:
        sys.modules["hypothesis"] = None  # type: ignore[assignment]  # `import hypothesis` raises ImportError
    from odradek.cli.main import app

    app(prog_name="odradek")


if __name__ == "__main__":
    main()
