"""Reports on a console: what a terminal shows and what a redirected output (a file, a pipe) receives.

* :func:`print_markdown`: a Markdown report rendered by rich (tables, bold) on a terminal; the Markdown text
  itself when the output is not a terminal, so ``depthlab eval ... > results.md`` writes a Markdown file.
* :func:`print_table`: a rich table at its natural width when the output is not a terminal (rich would
  otherwise assume 80 columns and fold or cut it).
"""
from __future__ import annotations

from rich.console import Console
from rich.markdown import Markdown



def print_markdown(console: Console, text: str) -> None:
    """``text`` (Markdown) rendered on a terminal, verbatim otherwise."""
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        console.print(text, highlight=False, soft_wrap=True, markup=False)


def print_table(console: Console, table) -> None:
    """``table`` at the console's width on a terminal; at its natural width otherwise (a file or a pipe has no
    width of its own: each row stays one line)."""
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(1 << 20)).maximum
    saved = console.width  # print(width=) can only narrow the console: widen it for this table
    console.width = max(saved, natural)
    try:
        console.print(table)
    finally:
        console.width = saved


__all__ = ["print_markdown", "print_table"]
