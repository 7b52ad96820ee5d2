"""Image files: discovery, decoding to arrays (EXIF orientation, any mode) and atomic encoding.

Arrays are ``(H, W, C)`` numpy arrays, ``uint8`` or ``uint16``, C in {1, 3, 4}. Conversion to
float tensors happens in the callers; this module never imports torch.
"""

from __future__ import annotations

import contextlib
import glob
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from varestorer.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_MAX_PIXELS = 16384 * 16384  # decompression-bomb guard: ~268 MP


class ImageReadError(ValueError):
    """An input file is not a readable image (corrupt, truncated, empty, too large, not an image)."""


class MetadataDroppedWarning(UserWarning):
    """An output was written without metadata its format cannot hold (e.g. an EXIF block over 64 KB in JPEG)."""


JPEG_EXIF_LIMIT = 65533  # bytes: one APP1 segment (65535) less its length field


@contextlib.contextmanager
def no_pil_limit() -> Iterator[None]:
    """Turn off Pillow's own bomb check (a fixed 89.5 MP warning and 179 MP error) while opening: the
    caller checks ``max_pixels`` against the header right after ``Image.open`` (before decoding), so
    its limit is the one that counts, above or below Pillow's."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def list_images(inputs: Iterable[str | Path], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of image files.

    Raises:
        FileNotFoundError: an input matches nothing.
    """
    found: list[Path] = []
    for item in inputs:
        item_path = Path(item)
        if item_path.is_dir():
            found += (
                _walk(item_path)
                if recursive
                else sorted(p for p in item_path.iterdir() if p.is_file() and _is_image_name(p))
            )
        elif item_path.is_file():
            found.append(item_path)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=recursive))
            files = [m for m in matches if m.is_file() and _is_image_name(m)]
            if not files:
                raise FileNotFoundError(f"no such file, folder or matching images: {item}")
            found += files
    unique: dict[Path, Path] = {}  # real file -> first path naming it (links and ./a.png name it again)
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _walk(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth, following symlinked folders (data sets are often linked).

    Each real folder is entered once, so a link back to a parent (a loop) ends the descent there.
    """
    out = []
    visited: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        info = os.stat(root)
        if (info.st_dev, info.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if _is_image_name(Path(f))]
    return out


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file with its EXIF orientation applied, keeping alpha, gray and 16 bits.

    Returns:
        ``(H, W, C)`` array: ``uint8`` (8-bit files) or ``uint16`` (16-bit PNG/TIFF, gray or
        colour), with C = 1 (gray), 3 (RGB) or 4 (RGBA). Palette, CMYK, LA and other modes are
        converted. Multi-frame files give their first frame.

    Raises:
        ImageReadError: the file cannot be decoded or exceeds ``max_pixels``, or its pixels lie outside
            what is read: 32-bit float outside 0..1, 32-bit integer outside 0..65535 (refused, not clipped).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(), no_pil_limit():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below names the limit
            with Image.open(path) as image:
                if max_pixels is not None and image.width * image.height > max_pixels:
                    raise ImageReadError(f"{path}: {image.width}x{image.height} exceeds the {max_pixels}-pixel limit")
                if _is_16bit_colour(image, path):
                    # Pillow decodes 16-bit RGB(A) as 8 bits; OpenCV keeps all 16 (but ignores EXIF).
                    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
                    return _apply_orientation(_read_16bit_colour(path), orientation)
                image.load()
                upright: Image.Image = ImageOps.exif_transpose(image) or image
                return pil_to_array(upright)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{path}: not a readable image ({reason})") from None


_ORIENTATION_TAG = 0x0112


def _is_16bit_colour(image: Image.Image, path: Path) -> bool:
    if image.format == "PNG":
        with open(path, "rb") as file:
            header = file.read(26)
        # IHDR: bit depth at byte 24, colour type at 25 (0 = gray, which Pillow keeps as I;16).
        return len(header) == 26 and header[24] == 16 and header[25] != 0
    if image.format == "TIFF":
        bits = image.tag_v2.get(258) if hasattr(image, "tag_v2") else None
        bits = bits if isinstance(bits, tuple) else (bits,)
        return len(bits) > 1 and max(b or 0 for b in bits) > 8
    return False


def _read_16bit_colour(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise ImageReadError(f"{path}: not a readable image (16-bit decoder failed)")
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 2:  # gray + alpha
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
        return np.ascontiguousarray(array.astype(np.uint16))
    order = [2, 1, 0, 3][: array.shape[2]] if array.shape[2] in (3, 4) else list(range(array.shape[2]))
    return np.ascontiguousarray(array[..., order].astype(np.uint16))


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, C)`` array, as ``ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, k=1),
    }
    transform = transforms.get(int(orientation))
    return np.ascontiguousarray(transform(array)) if transform else array


_FLOAT_SLACK = 1 / 255  # float pixels this far outside 0..1 (rounding in an editor) are clipped, not refused


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as ``(H, W, C)`` ``uint8``/``uint16``, C in {1, 3, 4} (see ``read_image``)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        low, high = (int(array.min()), int(array.max())) if mode == "I" and array.size else (0, 0)
        if low < 0 or high > 65535:  # clipping would flatten every pixel above 16 bits: refused instead
            raise ValueError(
                f"32-bit integer pixels from {low} to {high} do not fit in 16 bits (0..65535); "
                "refused rather than clipped: save it with 8 or 16 bits"
            )
        if mode == "I" and high <= 255:
            array = array.astype(np.uint8)
        else:
            array = array.astype(np.uint16)
        return array[..., None]
    if mode == "F":
        array = np.asarray(image)
        lowest, highest = (float(np.nanmin(array)), float(np.nanmax(array))) if array.size else (0.0, 0.0)
        finite = bool(np.isfinite(array).all())
        if not (finite and lowest >= -_FLOAT_SLACK and highest <= 1 + _FLOAT_SLACK):
            raise ValueError(
                f"32-bit float pixels from {lowest:g} to {highest:g}{'' if finite else ' and NaN/infinite ones'}; "
                "float images are read as 0..1, so this one is refused rather than clipped: save it with 8 or 16 "
                "bits, or scaled to 0..1"
            )
        return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None]
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"))[..., None]
    if mode == "LA" or (mode == "P" and "transparency" in image.info) or mode == "PA":
        return np.asarray(image.convert("RGBA"))
    if mode == "RGBA":
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))  # RGB, RGBX, CMYK, YCbCr, P without transparency, ...


def read_rgb(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode as 8-bit RGB ``(H, W, 3)`` ``uint8``: alpha dropped, gray expanded, 16 bits rounded."""
    array = read_image(path, max_pixels=max_pixels)
    if array.dtype == np.uint16:
        array = ((array.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def write_image(
    path: str | Path,
    array: np.ndarray,
    *,
    overwrite: bool = False,
    quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Encode ``(H, W, C)`` ``uint8``/``uint16`` atomically; the format follows the suffix.

    16-bit arrays are kept as 16-bit PNG/TIFF (RGB/RGBA 16-bit is written as TIFF-compatible PNG
    through numpy-to-PNG encoding) and reduced to 8 bits for formats without 16-bit support.
    ``icc_profile`` and ``exif`` are embedded where the format holds them (PNG, JPEG, WebP, TIFF;
    not BMP/GIF, and not in 16-bit colour TIFF, which OpenCV writes).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: unsupported array shape or dtype.
    """
    path = Path(path)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, C) array with C in 1, 3, 4; got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 pixels, got {array.dtype}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported output format {path.suffix!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if exif and suffix in (".jpg", ".jpeg") and len(exif) > JPEG_EXIF_LIMIT:
        # The photo matters more than its metadata: write it without the block, and say so.
        warnings.warn(
            MetadataDroppedWarning(
                f"EXIF of {len(exif):,} bytes does not fit in JPEG (at most {JPEG_EXIF_LIMIT:,}); written without it"
            ),
            stacklevel=2,
        )
        exif = None
    with atomic_path(path, overwrite=overwrite) as tmp:
        if array.dtype == np.uint16 and suffix in (".png", ".tif", ".tiff") and array.shape[2] > 1:
            _write_16bit(tmp, array, suffix)
            if suffix == ".png" and (icc_profile or exif):
                tmp.write_bytes(_png_with_metadata(tmp.read_bytes(), icc_profile, exif))
        elif array.dtype == np.uint16 and suffix in (".png", ".tif", ".tiff"):
            Image.fromarray(array[..., 0]).save(tmp, format=_FORMATS[suffix], **_metadata(suffix, icc_profile, exif))
        else:
            if array.dtype == np.uint16:
                array = ((array.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
            if suffix in (".jpg", ".jpeg") and array.shape[2] == 4:
                array = array[..., :3]  # JPEG has no alpha
            image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
            kwargs = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else {}
            image.save(tmp, format=_FORMATS[suffix], **kwargs, **_metadata(suffix, icc_profile, exif))
    return path


_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
}


def _metadata(suffix: str, icc_profile: bytes | None, exif: bytes | None) -> dict:
    """Pillow save options carrying the profile and EXIF, for the formats that hold them."""
    out: dict = {}
    if icc_profile and suffix in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"):
        out["icc_profile"] = icc_profile
    if exif and suffix in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"):
        out["exif"] = exif
    return out


def _png_with_metadata(data: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks after IHDR of PNG bytes (OpenCV writes neither)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    extra = b""
    if icc_profile:
        extra += chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc_profile))
    if exif:
        extra += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:end_of_ihdr] + extra + data[end_of_ihdr:]


def _write_16bit(tmp: Path, array: np.ndarray, suffix: str) -> None:
    if array.shape[2] == 1:
        Image.fromarray(array[..., 0].astype(np.uint16)).save(tmp, format=_FORMATS[suffix])
        return
    # Pillow cannot encode multi-channel 16-bit images; OpenCV can (PNG and TIFF, BGR order).
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised when opencv is absent
        raise ValueError("writing 16-bit colour images needs opencv-python-headless (pip install it)") from e
    bgr = array[..., [2, 1, 0, 3][: array.shape[2]]]
    ext = ".png" if suffix == ".png" else ".tiff"
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(bgr))
    if not ok:
        raise ValueError("OpenCV failed to encode the 16-bit image")
    tmp.write_bytes(buffer.tobytes())
