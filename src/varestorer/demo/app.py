"""The ``varestorer demo`` web page: upload a photo, restore it, compare before/after, download.

Two halves. The work is plain Python with no Gradio in it: ``load_upload`` checks and decodes an
uploaded file and ``restore_upload`` runs a ``varestorer.Restorer`` on it and writes the result
(in the input's own format, mode and bit depth) into a temporary folder; both raise
``DemoInputError`` with a one-line message for anything the user can fix. The page is
``build_app``: Gradio components wired to those two functions, every ``DemoInputError`` shown as
a ``gr.Error`` message (never a traceback), restores queued one at a time (a model in memory serves
one job; a second user waits instead of doubling the memory). ``launch`` serves it on 127.0.0.1
unless asked otherwise, with Gradio's own files kept in the same temporary folder, removed on exit.

Only the public API is used: ``varestorer.Restorer`` and the image readers/writers of
``varestorer.io.images`` (the same ones ``varestorer restore`` uses, so the download equals the
command's output for the same model and options).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from varestorer import Restorer
from varestorer.io.atomic import process_alive
from varestorer.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image, write_image

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 1_000_000  # input pixels; the CPU default model takes ~6 s per 64x64 tile
MAX_SCALE = 8.0
# Pillow modes the readers turn into gray/RGB/RGBA at 8 or 16 bits; others (F, LAB, HSV...) are refused.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "I;16", "I;16B", "I;16L"}
)
COLOR_FIX_CHOICES = ("model default", "none", "adain", "wavelet")


class DemoInputError(ValueError):
    """Something the user can fix (bad file, option out of range); the message is one line."""


class DemoStoppedError(Exception):
    """The server is stopping: the running restore ends at its next tile."""


class Jobs:
    """The restores running now, and the stop flag they check between tiles.

    A signal must not end the process while a restore runs in a worker thread: torch would be torn
    down under it (``terminate called without an active exception``, SIGABRT). So a stop sets the
    flag, the restore raises :class:`DemoStoppedError` at its next tile, and the server waits for that.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._idle = threading.Condition()
        self._running = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def check(self) -> None:
        """Raise :class:`DemoStoppedError` once a stop was asked for."""
        if self.stopping.is_set():
            raise DemoStoppedError("the demo is stopping; this restore was cancelled")

    def stop(self, timeout: float) -> bool:
        """Ask running restores to stop and wait up to ``timeout`` s for them; True when none runs."""
        self.stopping.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


@dataclass(frozen=True)
class Upload:
    """A decoded upload: ``(H, W, C)`` uint8/uint16, C in {1, 3, 4}, and its original file name."""

    array: np.ndarray
    name: str

    @property
    def description(self) -> str:
        return describe(self.array)


@dataclass(frozen=True)
class Result:
    """One restore: 8-bit previews of equal size (bicubic input, restored), the file, the time taken."""

    before: np.ndarray
    after: np.ndarray
    path: Path
    seconds: float
    summary: str


# ---------------------------------------------------------------------------------------- the work
def describe(array: np.ndarray) -> str:
    """``'112x75 RGB 8-bit'``: size, channel layout and bit depth of an ``(H, W, C)`` array."""
    height, width, channels = array.shape
    kind = {1: "gray", 3: "RGB", 4: "RGBA"}[channels]
    return f"{width}x{height} {kind} {8 * array.dtype.itemsize}-bit"


def load_upload(path: str | Path | None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Upload:
    """Check and decode an uploaded file (EXIF orientation applied; alpha, gray and 16 bits kept).

    Raises:
        DemoInputError: no file, not an image, more than ``max_pixels`` pixels, unsupported mode.
    """
    if path is None or str(path) == "":
        raise DemoInputError("upload an image first")
    path = Path(path)
    name = path.name  # Gradio keeps the uploaded file's own name inside its temporary folder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(path) as probe:  # reads the header only
                width, height, mode = probe.width, probe.height, probe.mode
    except Image.DecompressionBombError:
        raise DemoInputError(f"{name} is far too large to decode (above {max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError):
        raise DemoInputError(f"{name} is not an image (upload a PNG, JPEG, WebP, TIFF or BMP file)") from None
    if width * height > max_pixels:
        raise DemoInputError(
            f"{name} is {width}x{height} = {width * height:,} pixels, above this demo's limit of {max_pixels:,} "
            "(crop it, or start the demo with a larger --max-pixels)"
        )
    if mode not in SUPPORTED_MODES:
        raise DemoInputError(
            f"{name} has the unsupported colour mode {mode!r}; upload a gray, RGB or RGBA image of 8 or 16 bits"
        )
    try:
        array = read_image(path, max_pixels=max_pixels)
    except ImageReadError as error:
        raise DemoInputError(str(error).replace(str(path), name).splitlines()[0]) from None
    return Upload(array=array, name=name)


def output_name(name: str, scale: float) -> str:
    """``chelsea.png`` at x4 -> ``chelsea_x4.png``: the input's format; PNG for ones we cannot write and
    for GIF (the page restores one frame, and a 256-colour palette would throw the restoration away)."""
    suffix = Path(name).suffix.lower()
    return f"{Path(name).stem}_x{scale:g}{suffix if suffix in IMAGE_EXTENSIONS and suffix != '.gif' else '.png'}"


def to_preview(array: np.ndarray) -> np.ndarray:
    """An 8-bit RGB or RGBA copy of ``(H, W, C)`` uint8/uint16 for the browser."""
    if array.dtype == np.uint16:
        array = ((array.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def restore_upload(
    restorer: Restorer,
    upload: Upload,
    folder: str | Path,
    *,
    scale: float | None = None,
    tile: int | None = None,
    color_fix: str | None = None,
    prompt: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Restore ``upload`` and write it into a fresh sub-folder of ``folder`` (never anywhere else).

    Args:
        scale: output/input size ratio, any float in (0, ``MAX_SCALE``]; None: the model's own.
        tile: LQ tile size in pixels; None or 0: the model's default.
        color_fix: "none", "adain", "wavelet", or None / "model default" for the model's choice.
        prompt: text for models that read it (None or blank: no prompt).
        progress: ``progress(done_tiles, total_tiles)`` (the ``Restorer`` calls it per tile batch).

    Raises:
        DemoInputError: an option out of range, a prompt for a model without text, a failed restore.
    """
    scale = float(restorer.scale if scale is None else scale)
    if not (math.isfinite(scale) and 0 < scale <= MAX_SCALE):
        raise DemoInputError(f"scale must be a number above 0 and at most {MAX_SCALE:g}, got {scale:g}")
    if tile is not None and (tile != int(tile) or tile < 0):
        raise DemoInputError(f"tile size must be a whole number of pixels (0: model default), got {tile}")
    tile = int(tile) if tile else None
    if tile is not None and tile < 8:
        raise DemoInputError(f"tile size must be at least 8 pixels (0: model default), got {tile}")
    if color_fix in (None, "model default"):
        color_fix = None
    elif color_fix not in COLOR_FIX_CHOICES:
        raise DemoInputError(f"colour fix must be one of {', '.join(COLOR_FIX_CHOICES)}, got {color_fix!r}")
    prompt = prompt.strip() if prompt else None
    if prompt and not restorer.spec.reads_prompts:  # the model's declared contract (restore_spec.py)
        raise DemoInputError(f"{type(restorer.model).__name__} takes no text prompt; leave the prompt empty")
    start = time.perf_counter()
    try:
        restored = restorer(
            upload.array, scale=scale, tile=tile, color_fix=color_fix, prompt=prompt or None, progress=progress
        )
    except ValueError as error:
        raise DemoInputError(str(error).splitlines()[0]) from None
    except RuntimeError as error:  # out of memory and the like: the page says so, the server lives on
        raise DemoInputError(f"the restore failed: {str(error).splitlines()[0] if str(error) else error}") from None
    seconds = time.perf_counter() - start
    job = Path(tempfile.mkdtemp(prefix="job-", dir=folder))
    path = write_image(job / output_name(upload.name, scale), restored)
    after = to_preview(restored)
    before = np.asarray(Image.fromarray(to_preview(upload.array)).resize(after.shape[1::-1], Image.Resampling.BICUBIC))
    summary = f"{upload.description} -> {describe(restored)} in {seconds:.1f} s"
    return Result(before=before, after=after, path=path, seconds=seconds, summary=summary)


# ---------------------------------------------------------------------------------------- the page
def model_label(restorer: Restorer) -> str:
    return f"{type(restorer.model).__name__} x{restorer.scale} on {restorer.device} ({str(restorer.dtype)[6:]})"


def build_app(
    restorer: Restorer, folder: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, jobs: Jobs | None = None
) -> Any:
    """The Gradio ``Blocks`` page over ``restorer``; results go to ``folder``. Needs the ``demo`` extra.

    Gradio keeps its own files under ``$GRADIO_TEMP_DIR``, read when it is first imported: ``launch``
    sets it to its temporary folder first. ``jobs`` counts the running restores and stops them.
    """
    import gradio as gr

    reads_text = restorer.spec.reads_prompts
    jobs = jobs or Jobs()

    def refuse(message: str) -> gr.Error:
        # The page shows the line; the console gets the same line, not Gradio's traceback of it.
        logger.warning("refused: %s", message)
        return gr.Error(message, print_exception=False)

    def show_input(path: str | None) -> tuple[Any, str]:
        if path is None:
            return None, ""
        try:
            upload = load_upload(path, max_pixels=max_pixels)
        except DemoInputError as error:
            raise refuse(str(error)) from None
        return to_preview(upload.array), f"**{upload.name}**: {upload.description}"

    tracker = gr.Progress()  # one object, as a default argument would be: Gradio fills it in per event

    def run(
        path: str | None,
        scale: float | None,
        tile: float | None,
        color_fix: str,
        prompt: str,
        progress: Any = tracker,
    ) -> tuple[Any, str, str]:
        def tiles(done: int, total: int) -> None:
            jobs.check()
            progress((done, total), desc="restoring tiles", unit="tiles")

        try:
            with jobs.running():
                jobs.check()
                upload = load_upload(path, max_pixels=max_pixels)
                result = restore_upload(
                    restorer,
                    upload,
                    folder,
                    scale=scale,
                    tile=None if tile is None else int(tile),
                    color_fix=color_fix,
                    prompt=prompt,
                    progress=tiles,
                )
        except (DemoInputError, DemoStoppedError) as error:
            raise refuse(str(error)) from None
        return (result.before, result.after), f"**{result.path.name}**: {result.summary}", str(result.path)

    with gr.Blocks(title="varestorer demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"## varestorer: one-step photo restoration\nModel: {model_label(restorer)}. Upload a photo (PNG, JPEG, "
            f"WebP, TIFF or BMP; gray, RGBA and 16-bit are kept) of at most {max_pixels:,} pixels, restore it, "
            "compare, and download the result in the photo's own format."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Photo", type="filepath", elem_id="upload")
                preview = gr.Image(label="Input", interactive=False, format="png", elem_id="input-preview")
                scale = gr.Number(
                    value=restorer.scale, label=f"Scale (any number up to {MAX_SCALE:g})", elem_id="scale"
                )
                tile = gr.Number(value=0, precision=0, label="Tile size in input pixels (0: model default)")
                color_fix = gr.Dropdown(list(COLOR_FIX_CHOICES), value="model default", label="Colour fix")
                prompt = gr.Textbox(label="Prompt", visible=reads_text, interactive=reads_text, elem_id="prompt")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column(scale=2):
                compare = gr.ImageSlider(
                    label="Before (bicubic) / after", format="png", interactive=False, elem_id="compare"
                )
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="Restored file", interactive=False, elem_id="download")
        upload.change(show_input, inputs=upload, outputs=[preview, status])
        button.click(
            run,
            inputs=[upload, scale, tile, color_fix, prompt],
            outputs=[compare, status, download],
            concurrency_limit=1,
            concurrency_id="restore",
        )
    app.queue(default_concurrency_limit=1, max_size=32)
    return app


def _theme() -> Any:
    import gradio as gr

    # Local fonts only: the page must render on a machine with no internet.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


_FOLDER_PREFIX = "varestorer-demo-"
_FOLDER = re.compile(re.escape(_FOLDER_PREFIX) + r"(\d+)-")


def remove_orphan_folders(parent: str | Path | None = None) -> list[Path]:
    """Delete the temporary folders of demos that were killed (SIGKILL, power loss) before they could
    remove their own: ``varestorer-demo-PID-*`` whose process no longer runs. Returns what was removed."""
    removed = []
    parent = Path(parent or tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _FOLDER.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not process_alive(int(match[1])):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def launch(
    restorer: Restorer,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_ready: Callable[[str], None] | None = None,
    stop_timeout: float = 60.0,
) -> int:
    """Serve the page until SIGINT/SIGTERM; uploads and results live in one temporary folder, removed after.

    A stop during a restore cancels it at its next tile (waiting up to ``stop_timeout`` s for that tile).

    Returns:
        The number of the signal that stopped the server (0: it stopped by itself).
    """
    remove_orphan_folders()
    jobs = Jobs()
    stopped_by: list[int] = []
    wake = threading.Event()

    def on_signal(number: int, _frame: Any) -> None:
        stopped_by.append(number)
        jobs.stopping.set()
        wake.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = (
        {number: signal.signal(number, on_signal) for number in handled}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        with tempfile.TemporaryDirectory(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-") as folder:
            # Gradio reads these when imported (the examples cache when serving): its uploads and caches go
            # to our folder, never the working folder (it serves what is in its caches); no analytics calls.
            os.environ["GRADIO_TEMP_DIR"] = folder
            os.environ["GRADIO_EXAMPLES_CACHE"] = str(Path(folder) / "examples")
            os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
            app = build_app(restorer, folder, max_pixels=max_pixels, jobs=jobs)
            try:
                app.launch(
                    server_name=host,
                    server_port=port,
                    share=share,
                    inbrowser=False,
                    quiet=True,
                    show_error=True,
                    prevent_thread_lock=True,
                    allowed_paths=[folder],
                    max_file_size=max(8 * max_pixels, 2**24) + 2**20,  # 16-bit RGBA, uncompressed, plus headers
                    theme=_theme(),
                )
                if on_ready is not None:
                    on_ready(app.share_url or app.local_url)
                while not wake.wait(0.2) and app.is_running:
                    pass
            finally:
                if not jobs.stop(stop_timeout):
                    logger.warning("a restore did not stop within %.0f s; closing anyway", stop_timeout)
                app.close()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return stopped_by[0] if stopped_by else 0
