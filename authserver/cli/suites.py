"""`authserver conformance` and `authserver demo`: the bundled programs, which take their
own options.
"""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def conformance(ctx: click.Context) -> None:
    """Run the black-box conformance suite (same options as `python -m conformance`)."""
    from conformance.__main__ import main as conformance_main

    sys.exit(conformance_main(list(ctx.args)))


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Play the on-behalf-of story end to end on embedded defaults (see README)."""
    from authserver.demo import missing_extra

    missing = missing_extra()  # its agent and edge need the `demo` extra
    if missing:
        raise click.ClickException(f"the demo needs {missing}: pip install 'authserver[demo]'")
    from authserver.demo.__main__ import main as demo_main

    sys.exit(demo_main(list(ctx.args)))
