"""Which files are images: the first bytes of every format the decoder reads (Pillow + pillow-heif), and the
extensions that name them. The one owner of that fact: the scan (what a build counts as an image) and the
downloader (what a server's answer really is) both ask here. No heavy imports: the scan runs before any model.
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
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".heic", ".heif",
    ".avif", ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".psd", ".jp2", ".j2k", ".qoi", ".dds", ".icns",
    ".pcx", ".sgi", ".xbm", ".apng"})
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


def looks_like_image(head: bytes, name: str) -> bool:
    """An image signature in the first bytes, or an image extension (a broken .jpg is a failed image, not
    something to ignore)."""
    return sniff(head) is not None or os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
