"""What long or wide output looks like: progress bars and tables, terminal or not.

Procedures report progress through a plain `(done, total)` callback and know
nothing of rich; the bar goes to stderr and is shown only on a terminal, so a
pipe or a log file never fills with bar redraws. Tables print at full width on
a terminal and as CSV when piped, so no column is cut at 80 characters.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

ProgressFn = Callable[[int, int], None]


@contextlib.contextmanager
def progress_bar(console: Console, description: str) -> Iterator[ProgressFn]:
    """Yield a `(done, total)` callback drawing one bar; a no-op when not a terminal."""
    if not console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_table(
    console: Console, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """A rich table on a terminal; when piped, CSV after one `# title` comment line."""
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for i, col in enumerate(headers):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    buf = io.StringIO()
    buf.write(f"# {title}\n")
    csv.writer(buf, lineterminator="\n").writerows([headers, *rows])
    console.print(buf.getvalue().rstrip("\n"), highlight=False, soft_wrap=True, markup=False)
