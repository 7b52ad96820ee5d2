"""Feedback on long CLI work, after tqdm's conventions: a bar on a terminal, periodic lines otherwise.

One ``Progress`` follows a batch of items (images); inside an item, ``tiles(done, total)`` (the
``progress`` callback of ``Restorer``/``tiled_apply``) follows the tiles of a large image with an
ETA. On a terminal both are tqdm bars; when stderr is a pipe or a log file every finished item is
one line, and a long item prints a tile line at most every ``interval`` seconds. ``quiet`` silences
all of it except failures and warnings, which ``write`` always prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

DEFAULT_INTERVAL = 10.0  # seconds between tile lines in logs


def format_seconds(seconds: float) -> str:
    """``75 -> '1m15s'``, ``4000 -> '1h06m'``, ``9.5 -> '9.5s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Progress of ``total`` items, each optionally made of tiles.

    Args:
        total: number of items.
        desc: what is being done ("restore", "evaluate", ...), shown in front of bars and lines.
        unit: the item unit ("img").
        quiet: print nothing but ``write`` messages.
        stream: where to print (default stderr); a bar only if it is a terminal.
        interval: minimum seconds between tile lines when not on a terminal.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "img",
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.total, self.desc, self.unit, self.quiet, self.interval = total, desc, unit, quiet, interval
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.index = 0  # items started
        self.name = ""
        self._bar: Any = None
        self._tile_bar: Any = None
        self._item_start = self._tile_start = self._last_line = 0.0
        if self.tty and not quiet and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)

    def write(self, message: str) -> None:
        """Print one line (failures, skips, warnings) without breaking a bar; printed even when quiet."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def start(self, name: str) -> None:
        """An item begins."""
        self._close_tiles()
        self.index += 1
        self.name = name
        self._item_start = time.perf_counter()

    def tiles(self, done: int, total: int) -> None:
        """The ``progress(done_tiles, total_tiles)`` callback of the current item."""
        if self.quiet or total <= 1:
            return
        now = time.perf_counter()
        if done == 0:
            self._tile_start = self._last_line = now
        if self.tty:
            if self._tile_bar is None:
                from tqdm import tqdm

                self._tile_bar = tqdm(
                    total=total, desc=f"  {self.name}", unit="tile", file=self.stream, leave=False, position=1
                )
            self._tile_bar.update(done - self._tile_bar.n)
            return
        if done == 0:
            self._line(f"{self.name}: {total} tiles")
        elif done < total and now - self._last_line >= self.interval:
            elapsed = now - self._tile_start
            eta = elapsed / done * (total - done)
            self._line(
                f"{self.name}: tile {done}/{total} ({100 * done // total}%), "
                f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}"
            )
            self._last_line = now

    def finish(self, status: str = "done") -> None:
        """The current item ended (``status``: restored, skipped, failed, ...)."""
        self._close_tiles()
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(1)
        elif self.name:
            self._line(f"{status} {self.name} ({format_seconds(time.perf_counter() - self._item_start)})")

    def close(self) -> None:
        self._close_tiles()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, text: str) -> None:
        width = len(str(self.total))
        print(f"{self.desc} [{self.index:>{width}}/{self.total}] {text}", file=self.stream, flush=True)

    def _close_tiles(self) -> None:
        if self._tile_bar is not None:
            self._tile_bar.close()
            self._tile_bar = None
