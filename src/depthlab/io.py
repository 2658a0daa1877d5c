"""Reading and writing images and depth maps, with one-line errors and atomic writes.

Conventions: RGB images come back as float32 ``(3,H,W)`` in [0,1]; depth as float32 ``(H,W)`` in
metres with 0 = no measurement. Every writer goes through :func:`atomic_write` (temp file in the
target folder, then ``os.replace``) so nothing is left half-written.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from depthlab.errors import DataError, first_line, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Pixel cap of an image read through :func:`open_pil` when the caller sets none (Python API, CLI, datasets):
# 50 MP decodes to ~150 MB of 8-bit RGB (~600 MB as float32), while a 9500x9500 PNG "bomb" of a few hundred
# kB would cost several GB. Checked from the header, before decoding. The web app sets a smaller one.
MAX_PIXELS = 50_000_000
MAX_PIXELS_HINT = "max_pixels= in Python, --max-pixels on the command line"
_NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, APFS)


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than allowed (refused before it is decoded)."""


def check_regular_file(path) -> Path:
    """``path`` as a Path if it is an existing regular file (or a link to one); DataError naming it otherwise.

    Reading a named pipe (FIFO) blocks until a writer appears, a device may never end: refuse both."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    if not path.is_file():
        raise DataError(path, "not a regular file (a named pipe, socket or device); refusing to read it")
    return path


def make_dir(path) -> Path:
    """Create the output folder ``path`` (and parents); DataError naming it when a file is in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(path, "output folder expected, but a file of that name exists") from None
    except OSError as e:
        raise DataError(path, f"cannot create the output folder ({one_line(e)})") from None
    return path


def check_output_file(path) -> Path:
    """Fail early (DataError naming it) when the output file ``path`` cannot be written: a folder of that
    name, or a parent that is a file. Called before a long job, not after it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "output file expected, but it is a folder; give a file name (e.g. results.json)")
    parent = next((q for q in path.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(path, f"cannot write here: {parent} is a file, not a folder")
    return path


def check_pixels(path, width: int, height: int, max_pixels: int | None = None) -> None:
    """ImageTooLargeError naming ``path`` if ``width x height`` exceeds ``max_pixels`` (None: :data:`MAX_PIXELS`)."""
    cap = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if width * height > cap:
        raise ImageTooLargeError(
            path, f"image is {width}x{height} ({width * height / 1e6:.1f} MP), above the {cap / 1e6:g} MP limit; "
                  f"raise the limit ({MAX_PIXELS_HINT}) or cut the image into tiles (georeferenced GeoTIFFs "
                  "of any size take the tiled path of depthlab predict)")


def _default_file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would give a new file.

    Read from /proc where possible: toggling ``os.umask`` to read it is process-wide and would race with
    files created by other threads (web app, data loaders) in between."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished temp file normal permissions (mkstemp makes it 0600) and rename it over ``path``."""
    os.chmod(tmp, _default_file_mode())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path`` for a writer that wants a file name (safetensors, ONNX); on success
    it is published over ``path`` (normal permissions, atomic rename), on error deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def stays_inside(name: str | os.PathLike) -> bool:
    """Whether a relative path read from a file (an index.csv cell, a sample name) stays in the folder it is
    joined to: not absolute, no ``..``. Lexical on purpose: a symlinked folder inside (``rgb -> /mnt/disk2``)
    is part of the dataset, as it is when the folder is listed."""
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts


def temp_beside(path: str | os.PathLike) -> Path:
    """A new empty temp file ``.<name>.<8 chars>.tmp`` beside ``path`` (the folder exists): the name
    :func:`remove_orphan_temps` recognises, for a writer's scratch files as for :func:`atomic_path`'s."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _temp_prefix(name: str) -> str:
    """``.<name>.`` cut so that prefix + mkstemp's 8 random characters + ``.tmp`` fit in one file name:
    a 250-byte name is valid, its temp file must be too."""
    room = _NAME_MAX - 8 - len(".tmp") - 2
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        name = raw[:room].decode("utf-8", "ignore")
    return f".{name}."


#: a temp file of :func:`atomic_path` untouched this long belongs to a killed writer (a live one writes it
#: within milliseconds of creating it, and renames or deletes it when done)
ORPHAN_TEMP_AGE_S = 600.0
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_orphan_temps(folder: str | os.PathLike, min_age_s: float = ORPHAN_TEMP_AGE_S,
                        of: Iterable[str] | None = None) -> list[Path]:
    """Delete the temp files that a killed writer left in ``folder`` (``.<name>.<8 chars>.tmp``, as
    :func:`atomic_path` names them, not modified for ``min_age_s``); returns what was removed. ``of``: only the
    temp files of these file names (outputs the caller has just finished, so no live writer has them open).

    SIGTERM and Ctrl-C already clean up; SIGKILL cannot, so the next run in the same folder does."""
    now, removed = time.time(), []
    prefixes = None if of is None else tuple(_temp_prefix(name) for name in of)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if not _TEMP_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            if prefixes is not None and not entry.name.startswith(prefixes):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temp file beside ``path``; on success rename it over ``path``, on error delete it."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_json(path, obj, indent: int = 2) -> Path:
    with atomic_write(path, "w") as f:
        f.write(json_text(obj, indent) + "\n")
    return Path(path)


def json_text(obj, indent: int = 2) -> str:
    """``obj`` as JSON text; numpy / torch numbers and arrays, paths and tuples converted as ``write_json`` does."""
    return json.dumps(obj, indent=indent, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def open_pil(path, data: bytes | None = None, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file (or its bytes ``data``, named ``path`` in errors), honouring EXIF
    orientation. Raises DataError naming ``path``; ImageTooLargeError (read from the header, before decoding)
    above ``max_pixels`` (None: :data:`MAX_PIXELS`)."""
    import io as _pyio
    import warnings

    if data is None:
        path = check_regular_file(path)
    elif not data:
        raise DataError(path, "empty file")
    try:
        with warnings.catch_warnings():  # our own cap decides, not PIL's DecompressionBombWarning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path if data is None else _pyio.BytesIO(data))
        check_pixels(path, *img.size, max_pixels=max_pixels)
        img.load()
    except UnidentifiedImageError:
        raise DataError(path, "cannot decode image (not a recognised image format)") from None
    except Image.DecompressionBombError as e:  # PIL's hard limit (2 x Image.MAX_IMAGE_PIXELS), before ours
        raise ImageTooLargeError(path, f"image too large to decode ({first_line(e)}); cut it into tiles") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"cannot decode image ({one_line(e)})") from None
    return upright(img)


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF blocks must not make a readable image unreadable
        return img


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8/float HxWx3 RGB (grayscale replicated, alpha dropped, 16-bit scaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def to_float_chw(rgb: np.ndarray, keep_uint8: bool = False) -> torch.Tensor:
    """HxWx3 array (uint8, uint16 or float in [0,1]) -> float32 (3,H,W) in [0,1]; uint8 (3,H,W) with ``keep_uint8``."""
    if rgb.dtype == np.uint8 and keep_uint8:
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    if rgb.dtype == np.uint8:
        arr = rgb.astype(np.float32) / 255.0
    elif rgb.dtype == np.uint16:
        arr = rgb.astype(np.float32) / 65535.0
    else:
        arr = rgb.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_rgb(path, keep_uint8: bool = False, max_pixels: int | None = None) -> torch.Tensor:
    """An image file -> float32 (3,H,W) in [0,1] (8-bit files: uint8 with ``keep_uint8``). Raises DataError
    naming the file (ImageTooLargeError above ``max_pixels``, see :func:`open_pil`).

    GeoTIFF orthophotos PIL cannot decode (16-bit or 4-band rasters, as the aerial dataset reads them) are
    read with rasterio when the ``[geo]`` extra is installed."""
    try:
        return to_float_chw(pil_to_rgb_array(open_pil(path, max_pixels=max_pixels)), keep_uint8)
    except DataError as e:
        if isinstance(e, ImageTooLargeError) or Path(path).suffix.lower() not in (".tif", ".tiff"):
            raise
        try:
            from depthlab.geo import read_rgb_raster

            return read_rgb_raster(path, max_pixels=max_pixels if max_pixels is not None else MAX_PIXELS)
        except ImportError:
            pass
        raise


def check_depth_dtype(path, dtype) -> None:
    """DataError naming ``path`` unless ``dtype`` is real-valued numbers (ints or floats): booleans, complex
    numbers, strings or objects read as metres would be scored as if they were depth."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise DataError(path, f"depth must hold real numbers (integers or floats), got dtype {dtype}")


def load_npy(path, max_pixels: int | None = None) -> np.ndarray:
    """A ``.npy`` depth/prediction array (no pickles): its header is checked first -- real-valued dtype
    (:func:`check_depth_dtype`), not empty, at most ``max_pixels`` values (None: :data:`MAX_PIXELS`) -- so a
    bad file is a DataError naming it, not a huge allocation or a later crash."""
    path = check_regular_file(path)
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(f)
    except Exception as e:
        raise DataError(path, f"cannot read .npy header ({one_line(e)})") from None
    check_depth_dtype(path, dtype)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n == 0:
        raise DataError(path, f"empty array (shape {tuple(shape)})")
    cap = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if n > cap:
        raise ImageTooLargeError(path, f"array of shape {tuple(shape)} ({n / 1e6:.1f} M values) is above the "
                                       f"{cap / 1e6:g} M limit ({MAX_PIXELS_HINT})")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(path, f"cannot read .npy ({one_line(e)})") from None


def read_depth(path, scale: float | None = None) -> np.ndarray:
    """A depth file -> float32 (H,W) in metres (0 = missing).

    * ``.png`` (16-bit or 8-bit grayscale): ``value * scale`` (``scale`` = metres per unit, required);
    * ``.npy``: float values already in metres (times ``scale`` if given); (H,W,1) squeezed;
    * ``.tif``/``.tiff``: float TIFF in metres (times ``scale`` if given).
    Non-finite values become 0 (invalid). Boolean, complex and palette-indexed data are refused (DataError):
    they are not depth.
    """
    path = check_regular_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = load_npy(path)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            arr = _read_png_depth(path, scale)
        check_depth_dtype(path, arr.dtype)
        arr = arr.astype(np.float32)
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"cannot read depth ({one_line(e)})") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(path, f"depth must be a non-empty 2-D array, got shape {arr.shape}")
    if scale is not None:
        arr = arr * np.float32(scale)
    arr[~np.isfinite(arr)] = 0.0
    arr[arr < 0] = 0.0
    return arr


def _read_png_depth(path: Path, scale: float | None) -> np.ndarray:
    """A single-channel (8/16/32-bit grayscale) depth image -> its raw values; palette and 1-bit images refused."""
    import warnings

    with warnings.catch_warnings():  # check_pixels decides, not PIL's DecompressionBombWarning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        check_pixels(path, *img.size)
        if img.mode in ("P", "PA", "1"):
            raise DataError(path, f"depth image has mode {img.mode!r} (palette indices or 1-bit), not depth values; "
                                  "save depth as 16-bit grayscale")
        img.load()
        arr = np.asarray(img)
    if arr.ndim == 3:
        raise DataError(path, f"depth PNG must be single-channel, got {arr.shape[2]} channels")
    if scale is None:
        raise DataError(path, "PNG depth needs a scale (metres per unit, e.g. 0.001 for mm)")
    return arr


def write_npy(path, array: np.ndarray) -> Path:
    with atomic_write(path) as f:
        np.save(f, np.asarray(array, dtype=np.float32))
    return Path(path)


def write_png16(path, depth: np.ndarray, scale: float, text: dict | None = None, **options) -> Path:
    """Write metres as 16-bit PNG with ``value = round(depth / scale)`` (0 stays 0 = invalid).

    ``scale`` is metres per unit: 0.001 = millimetres (max 65.535 m), 1/256 = KITTI convention.
    Values beyond the 16-bit range are clipped to 65535. ``text``, ``options``: see :func:`write_png`.
    """
    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    v = np.clip(np.round(d / scale), 0, 65535).astype(np.uint16)
    return write_png(path, v, text, **options)


def write_png(path, array: np.ndarray, text: dict | None = None, **options) -> Path:
    """An image array (uint8 RGB, uint16 grayscale, ...) -> PNG, atomically.

    ``text``: key -> value pairs stored as PNG tEXt chunks (``PIL.Image.open(path).text`` reads them back);
    ``options``: PIL's PNG options (``compress_level`` 0-9, default 6; ``compress_type``, the zlib strategy)."""
    with atomic_write(path) as f:
        Image.fromarray(array).save(f, format="PNG", pnginfo=png_info(text), **options)
    return Path(path)


def png_info(text: dict | None):
    """PIL's ``pnginfo`` for ``text`` (key -> value tEXt chunks), None for no text."""
    from PIL.PngImagePlugin import PngInfo

    if not text:
        return None
    info = PngInfo()
    for k, v in text.items():
        info.add_text(str(k), str(v))
    return info


def to_uint8(a) -> np.ndarray:
    """An 8-bit image array: uint8 as is, float in [0,1] -> ``round(clip(a) * 255)``."""
    a = np.asarray(a)
    return a if a.dtype == np.uint8 else (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_rgb_png(path, rgb: np.ndarray, text: dict | None = None, **options) -> Path:
    """HxWx3 uint8 (or float [0,1]) -> PNG, atomically (``text``, ``options``: see :func:`write_png`)."""
    return write_png(path, to_uint8(rgb), text, **options)


def list_images(inputs, exts=IMAGE_EXTS) -> list[Path]:
    """Expand files, folders (non-recursive, sorted; files ending in one of ``exts``) and globs into paths;
    order kept, duplicates dropped -- also one file under several spellings (``a.png``, ``./a.png``,
    ``d/../a.png``, a link to it): the first spelling is kept.

    Folders and globs list regular files only: a named pipe called ``x.png`` would block its reader forever.
    A path named explicitly is kept as given, so reading it reports what is wrong with it
    (:func:`check_regular_file`)."""
    import glob

    out: list[Path] = []
    seen = set()
    for item in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
        s = str(item)
        if any(ch in s for ch in "*?["):
            cands = [Path(p) for p in sorted(glob.glob(s, recursive=True)) if Path(p).is_file()]
        elif Path(s).is_dir():
            cands = sorted(p for p in Path(s).iterdir()
                           if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file())
        else:
            cands = [Path(s)]
        for p in cands:
            key = _same_file_key(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _same_file_key(p: Path):
    """What makes two paths the same file: (device, inode) when it exists, else the normalised absolute path."""
    try:
        st = p.stat()
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.normpath(os.path.abspath(p))
