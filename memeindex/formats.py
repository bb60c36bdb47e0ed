"""Which files are images: the first bytes of every format the decoder reads (Pillow + pillow-heif), and the
extensions that name them; and which are videos, by the same two rules. The one owner of that fact: the scan (what
a build counts as an image), the downloader (what a server's answer really is) and a query (photo or video) ask here.
No heavy imports: the scan runs before any model.
"""
from __future__ import annotations

import os

# (first bytes, the extension a file of that format gets)
_SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"II*\x00", "tif"), (b"MM\x00*", "tif"), (b"BM", "bmp"), (b"\x00\x00\x01\x00", "ico"),
               (b"8BPS", "psd"), (b"\x00\x00\x00\x0cjP  ", "jp2"), (b"\xff\x4f\xff\x51", "j2k"), (b"qoif", "qoi"),
               (b"DDS ", "dds"), (b"icns", "icns"), (b"\x76\x2f\x31\x01", "exr"),
               (b"P1", "pbm"), (b"P4", "pbm"), (b"P2", "pgm"), (b"P5", "pgm"), (b"P3", "ppm"), (b"P6", "ppm"))
# ISO-BMFF brands after "ftyp" (bytes 8..12): HEIC/HEIF (what iPhones save) and AVIF.
_FTYP_BRANDS = {b"heic": "heic", b"heix": "heic", b"hevc": "heic", b"hevx": "heic", b"heim": "heic",
                b"heis": "heic", b"mif1": "heic", b"msf1": "heic", b"avif": "avif", b"avis": "avif"}
# Video containers (what OpenCV's FFmpeg reads for a video query): ISO-BMFF brands of MP4/QuickTime/3GP, then
# Matroska/WebM's EBML magic and AVI's RIFF form type, checked in sniff_video.
_VIDEO_FTYP_BRANDS = {b"isom": "mp4", b"iso2": "mp4", b"iso4": "mp4", b"iso5": "mp4", b"iso6": "mp4", b"mp41": "mp4",
                      b"mp42": "mp4", b"avc1": "mp4", b"mmp4": "mp4", b"dash": "mp4", b"MSNV": "mp4", b"f4v ": "mp4",
                      b"M4V ": "m4v", b"M4VH": "m4v", b"M4VP": "m4v", b"qt  ": "mov", b"3gp4": "3gp", b"3gp5": "3gp",
                      b"3gp6": "3gp", b"3g2a": "3g2"}
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".heic", ".heif",
    ".avif", ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".psd", ".jp2", ".j2k", ".qoi", ".dds", ".icns",
    ".pcx", ".sgi", ".xbm", ".apng"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v"})
HEAD_BYTES = 32  # enough of a file's start for every signature above


def sniff(head: bytes) -> str | None:
    """The extension of the image format whose signature `head` starts with, or None."""
    for magic, ext in _SIGNATURES:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    return None


def sniff_video(head: bytes) -> str | None:
    """The extension of the video container whose signature `head` starts with, or None."""
    if head[4:8] == b"ftyp":
        return _VIDEO_FTYP_BRANDS.get(head[8:12])
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "mkv"  # WebM is Matroska too
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def looks_like_image(head: bytes, name: str) -> bool:
    """An image signature in the first bytes, or an image extension (a broken .jpg is a failed image, not
    something to ignore) unless the first bytes are a video's (an MP4 named .jpg is not an image)."""
    if sniff(head) is not None:
        return True
    return sniff_video(head) is None and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def looks_like_video(head: bytes, name: str) -> bool:
    """A video signature in the first bytes (an MP4 named .jpg is one), or a video extension unless the first bytes
    are an image's (a PNG named .mp4 is not one)."""
    if sniff_video(head) is not None:
        return True
    return sniff(head) is None and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def read_head(path: str | os.PathLike) -> bytes:
    """The first HEAD_BYTES of the file at `path`, for the sniffers above; empty when it cannot be read or is not a
    regular file (opening a FIFO nobody writes to waits for ever)."""
    if not os.path.isfile(path):
        return b""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return b""


def is_video(path: str | os.PathLike) -> bool:
    """Whether the file at `path` is a video (looks_like_video of its first bytes); one that cannot be read, or is
    not a regular file, is judged by its extension alone (the query then says why it cannot read it)."""
    return looks_like_video(read_head(path), os.fspath(path))
