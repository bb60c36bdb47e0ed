"""The live page in a real headless Chromium with a fake camera fed from a .y4m made from a test photo.

Needs Debian's `chromium` + `chromium-driver` and the `selenium` package (scripts/ci_browser_deps.sh installs
them); skipped with a reason when they are missing. Screenshots land in test-artifacts/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (scripts/ci_browser_deps.sh)")

import media_fixtures as media  # noqa: E402
from memeindex.server import create_app  # noqa: E402
from memeindex.settings import Settings  # noqa: E402

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.fixture(scope="module")
def browser_bins():
    chromium = _find("MEMEINDEX_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _find("MEMEINDEX_CHROMEDRIVER", "chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium/chromedriver installed (run scripts/ci_browser_deps.sh)")
    return chromium, driver


@pytest.fixture(scope="module")
def server(media_index):
    _, index_dir = media_index
    with media.LiveServer(create_app(index_dir, Settings.from_env())) as live:
        yield live


def chrome(browser_bins, camera: Path, width: int, height: int):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = Options()
    options.binary_location = browser_bins[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--mute-audio",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=browser_bins[1]), options=options)


TILES_JS = """
return [...document.querySelectorAll('#tiles .tile')].map(t => ({
  name: t.querySelector('.name').textContent, score: t.querySelector('.score').textContent,
  traits: [...t.querySelectorAll('.traits li')].map(li => li.textContent),
  variants: t.querySelector('.variants').textContent, weak: t.classList.contains('weak'),
  loaded: t.querySelector('img').complete && t.querySelector('img').naturalWidth > 0}));
"""


def wait_for(driver, predicate, timeout=90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: predicate(d))


def live_tiles(driver, min_searches=4):
    searches = int(driver.execute_script("return document.body.dataset.searches || '0'"))
    tiles = driver.execute_script(TILES_JS)
    if searches >= min_searches and len(tiles) == 3 and all(t["loaded"] and t["score"] for t in tiles):
        return tiles
    return False


@pytest.mark.parametrize("width,height,shot", [(1280, 860, "browser-live.png"), (390, 844, "browser-phone.png")])
def test_live_camera_shows_three_memes(browser_bins, server, tmp_path, width, height, shot):
    camera = media.write_y4m(tmp_path / "grace.y4m", media.grace())
    driver = chrome(browser_bins, camera, width, height)
    try:
        driver.get(server.url + "/")
        try:
            tiles = wait_for(driver, live_tiles)
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / shot))
        assert len(tiles) == 3
        assert tiles[0]["name"] in ("grace hopper", "grace close up"), tiles
        assert tiles[0]["variants"].startswith("+1 variant") and tiles[0]["traits"], tiles  # the photo and its crop
        assert int(tiles[0]["score"][:-1]) >= 90 and not tiles[0]["weak"]
        assert tiles[2]["weak"] and int(tiles[2]["score"][:-1]) < 50  # the astronaut: another expression
        for t in tiles:
            assert t["score"].endswith("%") and 0 <= int(t["score"][:-1]) <= 100
        assert driver.execute_script("return document.body.dataset.mode") == "camera"
    finally:
        driver.quit()


# HEIC: Chromium cannot draw it, the server reads it; an animation (GIF, WebP, APNG named .png): the face shows
# from its second frame on, which the page's preview (the first frame) lacks: the file goes to the server as it is
ANIMATED = ("astronaut.gif", "astronaut-animated.webp", "astronaut-animated.png")


@pytest.mark.parametrize("name", ["astronaut.jpg", "astronaut.heic", *ANIMATED])
def test_upload_fallback(browser_bins, server, tmp_path, name):
    from PIL import Image
    from selenium.webdriver.common.by import By

    pytest.importorskip("pillow_heif").register_heif_opener()
    camera = media.write_y4m(tmp_path / "grace.y4m", media.grace())
    photo = tmp_path / name
    face = Image.fromarray(media.astronaut())
    if name in ANIMATED:
        blank = Image.new("RGB", face.size, (128, 128, 128))
        blank.save(photo, save_all=True, append_images=[face, face], duration=500, loop=0)
    else:
        face.save(photo)
    driver = chrome(browser_bins, camera, 1280, 860)
    try:
        driver.get(server.url + "/")
        wait_for(driver, live_tiles)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        # the GIF's palette (WebP's lossy coding) moves its face a little: the mirrored copy may come first
        first = ("astronaut", "astronaut mirrored", "astronaut portrait") if name in ANIMATED else ("astronaut",)
        names = wait_for(driver, lambda d: d.execute_script("return document.body.dataset.mode") == "file" and
                         [t["name"] for t in d.execute_script(TILES_JS)][:1] in [[n] for n in first] and
                         d.execute_script(TILES_JS))
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"browser-upload-{photo.suffix[1:]}.png"))
        assert len(names) == 3
    finally:
        driver.quit()
