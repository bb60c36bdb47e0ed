"""Decoding real-world files: every mode to RGB, EXIF rotation, animated frames, pixel caps, broken bytes."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from memeindex.errors import ImageTooLarge, NotAnImage
from memeindex import images
from memeindex.images import decode


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("LA", "PNG"),
                                      ("RGBA", "PNG"), ("1", "PNG"), ("I", "TIFF"), ("F", "TIFF")])
def test_every_mode_becomes_rgb_uint8(grace_rgb, mode, fmt):
    frames = decode(_encode(Image.fromarray(grace_rgb).convert(mode), fmt))
    assert len(frames) == 1
    rgb = frames[0].rgb
    assert rgb.shape == grace_rgb.shape and rgb.dtype == np.uint8
    # Same picture, not a black or white page: the luminance follows the original's.
    # Compared at 1/20 scale, where a dithered 1-bit picture is grey levels again.
    def small(a):
        return np.asarray(Image.fromarray(a).convert("L").resize((25, 30), Image.BOX), float).ravel()
    assert np.corrcoef(small(rgb), small(grace_rgb))[0, 1] > 0.8


def test_16_bit_png_keeps_its_contrast(grace_rgb):
    deep = np.asarray(Image.fromarray(grace_rgb).convert("L")).astype(np.uint16) * 257
    data = _encode(Image.fromarray(deep), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = decode(data)[0].rgb
    assert 20 < rgb.mean() < 235 and rgb.std() > 20  # naive conversion clips it to white


def test_palette_with_alpha_is_flattened_on_white():
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 20, 40))
    rgb = decode(_encode(img.convert("P"), "PNG"))[0].rgb
    assert tuple(rgb[20, 5]) == (255, 0, 0)
    assert tuple(rgb[20, 35]) == (255, 255, 255)


def test_exif_orientation_is_applied(grace_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    stored = Image.fromarray(grace_rgb).rotate(90, expand=True)
    rgb = decode(_encode(stored, "JPEG", exif=exif, quality=95))[0].rgb
    assert rgb.shape == grace_rgb.shape
    assert np.abs(rgb.astype(int) - grace_rgb.astype(int)).mean() < 12


def test_animated_gif_samples_frames(grace_rgb):
    frames = [Image.fromarray(grace_rgb).convert("P").rotate(a) for a in (0, 5, 10, 15, 20)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode(buf.getvalue(), max_frames=3)
    assert [f.index for f in out] == [0, 2, 4]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])  # PNG: an APNG
def test_an_animation_is_sampled_in_time_as_a_video_query_samples_a_clip(grace_rgb, fmt):
    mode = "P" if fmt == "GIF" else "RGB"
    frames = [Image.fromarray(grace_rgb).convert(mode).rotate(a) for a in range(0, 55, 5)]  # 11 distinct frames
    buf = io.BytesIO()
    # WebP knows a frame's duration only once the frame is decoded (Pillow 13): it was read as 100 ms each
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=[200] * 10 + [0],
                   **({"lossless": True} if fmt == "WEBP" else {}))
    gif = buf.getvalue()
    # 200 ms a frame at 4 samples a second: a frame starting at 0.2 s or 1.2 s falls in a quarter already taken
    assert [f.index for f in images.frames(gif, fps=4.0, max_frames=40)] == [0, 2, 3, 4, 5, 7, 8, 9, 10]
    assert [f.index for f in images.frames(gif, fps=4.0, max_frames=3)] == [0, 2, 3]
    assert [f.index for f in images.frames(gif, only=7)] == [7] and [f.index for f in images.frames(gif, only=99)] == [0]
    assert np.array_equal(next(images.frames(gif, only=4)).rgb, decode(gif, max_frames=11)[4].rgb)


def test_pixel_cap_downscales_and_hard_cap_refuses():
    big = _encode(Image.new("RGB", (4000, 3000), (10, 20, 30)), "JPEG")
    frame = decode(big, max_pixels=1_000_000)[0]
    assert frame.rgb.shape[0] * frame.rgb.shape[1] <= 1_000_000
    assert frame.scale == pytest.approx(frame.rgb.shape[1] / 4000)
    with pytest.raises(ImageTooLarge):
        decode(big, hard_max_pixels=5_000_000)


def test_a_header_claiming_900_megapixels_is_refused_unread_naming_the_cap():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)  # 30000 x 30000 RGB, a few bytes of pixels
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + chunk(b"IEND", b"")
    with pytest.raises(ImageTooLarge,
                       match=r"^900,000,000 pixels is over the 250,000,000-pixel cap \(MEMEINDEX_HARD_MAX_PIXELS\)$"):
        decode(png)  # Pillow's own error quoted twice its limit ("exceeds limit of 500000000 pixels")


@pytest.mark.parametrize("data", [b"", b"just some text, not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_not_an_image(data):
    with pytest.raises(NotAnImage):
        decode(data)


def test_tiff_whose_second_page_has_no_size_is_not_an_image():
    # found by test_properties: Pillow's n_frames reads every page's header and raised TypeError("Missing dimensions")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    data = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for entry in range(second + 2, second + 2 + 12 * struct.unpack_from("<H", data, second)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 256:  # ImageWidth
            struct.pack_into("<H", data, entry, 0x7FFF)  # an unknown tag instead
    with pytest.raises(NotAnImage):
        decode(bytes(data))


def test_truncated_jpeg(grace_rgb):
    data = _encode(Image.fromarray(grace_rgb), "JPEG")
    with pytest.raises(NotAnImage, match="corrupt|truncated"):
        decode(data[: len(data) // 3])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_100_megapixel_image_is_shrunk_to_the_working_cap_not_refused(fmt):
    # Pillow's own bomb limit (89.5 MP) used to refuse this although the hard cap is 250 MP.
    data = _encode(Image.new("L", (10_000, 10_000), 128), fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    frame = decode(data, max_pixels=4_000_000)[0]
    assert frame.rgb.shape == (2000, 2000, 3) and frame.scale == pytest.approx(0.2)
    assert int(frame.rgb[1000, 1000, 0]) == 128


def test_hard_cap_follows_the_setting_both_ways(monkeypatch):
    from memeindex.pipeline import FaceAnalyzer
    from memeindex.settings import Settings

    data = _encode(Image.new("L", (10_000, 10_000), 128), "JPEG")
    monkeypatch.setenv("MEMEINDEX_HARD_MAX_PIXELS", "50000000")
    analyzer = FaceAnalyzer.__new__(FaceAnalyzer)  # the decoding half only: no models needed
    analyzer.settings = Settings.from_env()
    with pytest.raises(ImageTooLarge, match="50,000,000"):
        analyzer.frames(data)
    analyzer.settings = Settings.from_env(hard_max_pixels=300_000_000)
    big = _encode(Image.new("L", (10_000, 27_000), 128), "JPEG")  # 270 MP: over Pillow's 2 x 89.5 MP error line
    assert analyzer.frames(big)[0].rgb.shape[0] * analyzer.frames(big)[0].rgb.shape[1] <= 4_000_000


def test_reduced_decode_keeps_exif_orientation(grace_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.fromarray(grace_rgb).rotate(90, expand=True).resize((1800, 1536))  # 600x512 turned, x3
    frame = decode(_encode(stored, "PNG", exif=exif), max_pixels=600 * 512)[0]
    assert frame.rgb.shape[:2] == (600, 512)
    assert frame.scale == pytest.approx(1 / 3, abs=0.01)
    assert np.abs(frame.rgb.astype(int) - grace_rgb.astype(int)).mean() < 12


def test_heic_photo_decodes(grace_rgb):
    pillow_heif = pytest.importorskip("pillow_heif")
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(grace_rgb)).save(buf, quality=90)
    assert buf.getvalue()[4:12] == b"ftypheic"
    rgb = decode(buf.getvalue())[0].rgb
    assert rgb.shape == grace_rgb.shape
    assert np.abs(rgb.astype(int) - grace_rgb.astype(int)).mean() < 12


def test_missing_file_and_folder_are_file_missing(tmp_path):
    from memeindex.errors import FileMissing

    with pytest.raises(FileMissing, match="no such file"):
        decode(tmp_path / "nope.jpg")
    with pytest.raises(FileMissing, match="folder"):
        decode(tmp_path)


def test_sliver_jpeg_over_a_tiny_cap_decodes():
    # Found by hypothesis: JPEG draft to a zero-pixel side divided by zero inside Pillow (a 500 in the API).
    frame = decode(_encode(Image.new("RGB", (1, 40), (9, 9, 9)), "JPEG"), max_pixels=20)[0]
    assert frame.rgb.shape[0] * frame.rgb.shape[1] <= 20
