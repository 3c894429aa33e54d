"""The `voicetrain` command: a thin shell that parses arguments and calls one library function each.

Heavy imports happen inside each command so `voicetrain --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn your own voice recordings into a working text-to-speech voice, on a CPU.",
)


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------- data (demo-data, prepare, check)
# (commands are registered below by the data section)

# ---------------------------------------------------------------- training (train, synth, align)

# ---------------------------------------------------------------- evaluation (eval, eval-audio)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point; ``argv`` makes the CLI testable in-process."""
    app(args=argv, prog_name="voicetrain")


if __name__ == "__main__":
    main()
