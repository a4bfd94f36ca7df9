"""Command-line interface: ``azopg train``, ``azopg problems``.

Bad input of any kind ends with one line on stderr and exit code 2. SIGINT and SIGTERM stop
a run the same way (workers stopped, result.json written with ``"status": "interrupted"``)
and exit with 130 and 143.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from ..errors import AzopgError, SettingsError
from . import tools, train  # noqa: F401 -- the commands register themselves on the group
from ._group import cli, interrupted_code, on_sigterm, option_message, signals_received

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every input error into one line and exit 2."""
    signals_received.clear()
    main_thread = threading.current_thread() is threading.main_thread()  # handlers only go there
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        code = cli.main(args=argv, prog_name="azopg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("azopg: interrupted", err=True)
        return interrupted_code()
    except click.UsageError as exc:
        msg = exc.format_message()
        click.echo(f"azopg: error: {msg}", err=True)
        return 2
    except SettingsError as exc:
        click.echo(f"azopg: error: {option_message(exc)}", err=True)
        return 2
    except AzopgError as exc:
        click.echo(f"azopg: error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"azopg: error: {exc.format_message()}", err=True)
        return exc.exit_code
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
