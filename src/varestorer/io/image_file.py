"""A whole image file: every frame or page, the colour profile and EXIF, written back the same way.

``read_image`` gives the pixels of one picture; a batch command that rewrites files also needs what
surrounds them: the frames of an animated GIF/PNG/WebP and the pages of a multi-page TIFF (each is
restored, and all are written back as an animation or a multi-page file), the ICC profile (without
it a colour-managed photo changes colour in a viewer) and the EXIF block (its orientation reset to
1, since ``read_image`` already rotated the pixels).

Multi-frame output needs a format that holds frames: GIF, PNG (APNG), WebP or TIFF; asking for
JPEG or BMP is refused with one line. MPO files (a camera JPEG with an embedded preview or second
view) are read as their primary image, as every JPEG viewer shows them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from varestorer.io.atomic import atomic_path
from varestorer.io.images import (
    _FORMATS,
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    _is_16bit_colour,
    _metadata,
    no_pil_limit,
    pil_to_array,
    read_image,
    write_image,
)

MULTI_FRAME_SUFFIXES = (".gif", ".png", ".webp", ".tif", ".tiff")
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG, _GPS_IFD_TAG = 0x8769, 0x8825
# TIFF tags that describe the file's own pixel layout (size, strips, compression, colour model, ICC), not
# the photo: a TIFF keeps its EXIF fields (Make, Model, DateTime...) in the same directory as these, and a
# copy of them would contradict the output's own layout. Resolution (282, 283, 296) is the photo's: kept.
# fmt: off
_TIFF_LAYOUT_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266,  # subfile type, size, bits, compression, photometric, fill order
    273, 277, 278, 279, 280, 281, 284,  # strips, samples per pixel, min/max sample, planar configuration
    288, 289, 290, 291, 292, 293, 297,  # free offsets, gray response, T4/T6 options, page number
    317, 318, 319, 320, 321, 322, 323, 324, 325,  # predictor, white point, primaries, colour map, halftone, tiles
    332, 334, 338, 339, 340, 341, 347,  # ink set, extra samples, sample format, JPEG tables
    513, 514, 529, 530, 531, 532,  # old-style JPEG, YCbCr coefficients, subsampling, positioning, reference
    34675,  # ICC profile (carried apart)
})
# fmt: on


@dataclass(frozen=True)
class ImageFile:
    """The frames (``(H, W, C)`` uint8/uint16 arrays, see ``read_image``) and metadata of one file."""

    frames: list[np.ndarray]
    icc_profile: bytes | None = None
    exif: bytes | None = None  # EXIF block with orientation 1 (pixels are upright)
    durations: list[int] | None = None  # display time of each frame in ms (animations)
    loop: int | None = None  # animation loop count (0: forever)


def read_image_file(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Decode every frame/page of ``path`` with its ICC profile and EXIF.

    Raises:
        ImageReadError: not readable, over ``max_pixels`` (all frames together), or a multi-page
            file of 16-bit colour pages (Pillow decodes those as 8 bits; refused, not degraded).
    """
    path = Path(path)
    first = read_image(path, max_pixels=max_pixels)  # orientation, 16 bits, the one clear error
    try:
        with warnings.catch_warnings(), no_pil_limit():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # read_image checked the size
            with Image.open(path) as image:
                icc = image.info.get("icc_profile") or None
                exif = _upright_exif(image)
                count = 1 if image.format == "MPO" else int(getattr(image, "n_frames", 1))
                if count == 1:
                    return ImageFile([first], icc, exif)
                if max_pixels is not None and count * image.width * image.height > max_pixels:
                    raise ImageReadError(
                        f"{path}: {count} frames of {image.width}x{image.height} exceed the {max_pixels}-pixel limit"
                    )
                if _is_16bit_colour(image, path):
                    raise ImageReadError(f"{path}: multi-page 16-bit colour images are not supported; split the pages")
                frames, durations = [], []
                for frame in ImageSequence.Iterator(image):
                    durations.append(int(frame.info.get("duration", 0) or 0))
                    frame.load()
                    frames.append(pil_to_array(ImageOps.exif_transpose(frame) or frame))
                animated = image.format in ("GIF", "PNG", "WEBP")
                loop = image.info.get("loop") if animated else None
                return ImageFile(frames, icc, exif, durations if animated else None, loop)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ImageReadError(f"{path}: not a readable image ({reason})") from None


def _upright_exif(image: Image.Image) -> bytes | None:
    """The EXIF block to write beside upright pixels: orientation 1; from a TIFF, its photo tags only."""
    exif = image.getexif()
    if "exif" not in image.info:
        if image.format != "TIFF":
            return None
        for tag in _TIFF_LAYOUT_TAGS & set(exif):
            del exif[tag]
        if not set(exif) - {_ORIENTATION_TAG}:
            return None
    for pointer in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
        if pointer in exif:
            exif.get_ifd(pointer)  # loaded, so that tobytes writes the sub-directory, not a dangling offset
    if _ORIENTATION_TAG in exif:
        exif[_ORIENTATION_TAG] = 1
    return exif.tobytes()


def write_image_file(
    path: str | Path,
    frames: list[np.ndarray],
    like: ImageFile,
    *,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Write ``frames`` (one per frame of ``like``) atomically with ``like``'s profile, EXIF and timing.

    Raises:
        ValueError: several frames for a single-image format (JPEG, BMP); a bad array.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if len(frames) == 1:
        return write_image(
            path, frames[0], overwrite=overwrite, quality=quality, icc_profile=like.icc_profile, exif=like.exif
        )
    suffix = path.suffix.lower()
    if suffix not in MULTI_FRAME_SUFFIXES:
        raise ValueError(
            f"{len(frames)} frames do not fit in a {suffix} file; use --ext gif, png, webp or tif (or auto)"
        )
    images = [_to_pil(frame) for frame in frames]
    options: dict = {"save_all": True, "append_images": images[1:]}
    if like.durations is not None and suffix in (".gif", ".png", ".webp"):
        options["duration"] = like.durations
        options["loop"] = 0 if like.loop is None else like.loop
    if suffix == ".gif":
        options["disposal"] = 2  # each frame is a whole picture: clear before the next one
    else:
        options.update(_metadata(suffix, like.icc_profile, like.exif))
    if suffix == ".webp":
        options["quality"] = quality
    with atomic_path(path, overwrite=overwrite) as tmp:
        images[0].save(tmp, format=_FORMATS[suffix], **options)
    return path


def _to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype == np.uint16 and array.shape[2] > 1:  # Pillow holds 16-bit gray only
        array = ((array.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
