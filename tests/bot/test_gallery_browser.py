"""The gallery page in a real browser: headless Chromium (Debian's chromium + chromium-driver).

Two sets are made and shared through the stand-in with the real bot; Chromium then opens the
server's gallery page, and the test checks what a visitor sees: every thumbnail loaded, the
copy line there, nothing wider than a phone's screen, and a screenshot saved.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.bot.test_conversation_e2e import imagine
from tests.bot.test_gallery_e2e import share, turn_gallery_on
from tests.bot.test_imagine_e2e import job_for_message

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: Set to a path to keep the desktop screenshot there too (how docs/gallery.png is made).
SCREENSHOT_COPY = os.environ.get("IMAGINE_GALLERY_SCREENSHOT")


@pytest.fixture
def browser_paths() -> tuple[str, str]:
    if CHROMIUM and CHROMEDRIVER:
        return CHROMIUM, CHROMEDRIVER
    reason = (
        "Chromium is not installed: `apt-get install chromium chromium-driver` "
        "(README's test command, .ci/run, installs them when it may)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


def look(chromium: str, chromedriver: str, url: str, out: Path) -> dict:
    """Open ``url`` in headless Chromium at desktop and phone sizes; what the page shows."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={out / 'profile'}",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(url)
        WebDriverWait(driver, 15).until(
            lambda d: d.execute_script(
                "return [...document.images].every(i => i.complete) && document.images.length > 0"
            )
        )
        seen = {
            "title": driver.title,
            "images": driver.execute_script(
                "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth,"
                " i.naturalHeight, i.getBoundingClientRect().width])"
            ),
            "commands": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "code.copy")],
            "scripts": len(driver.find_elements(By.TAG_NAME, "script")),
        }
        driver.save_screenshot(str(out / "gallery.png"))
        driver.set_window_size(390, 844)  # a phone
        seen["phone_overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        driver.save_screenshot(str(out / "gallery-phone.png"))
        return seen
    finally:
        driver.quit()


async def test_chromium_shows_the_thumbnails_and_the_copy_line(
    bot_process, standin, world, gallery_settings, browser_paths, tmp_path
):
    bot = await bot_process.start(gallery_settings)
    path = await turn_gallery_on(standin, world)
    prompts = ["a lighthouse at dusk, oil painting", "一只戴礼帽的柴犬"]
    for seed, prompt in enumerate(prompts, start=11):
        _, result = await imagine(standin, world.alice, world.general, prompt=prompt, seed=seed)
        job = await job_for_message(bot, result.id)
        await share(standin, world.alice, result, job, world.showcase)

    url = f"http://127.0.0.1:{bot.gallery_server.port}{path}"
    # Selenium blocks: it runs in a thread so the bot's loop keeps serving the page.
    seen = await asyncio.to_thread(look, *browser_paths, url, tmp_path)

    assert seen["title"] == "Shared images"
    assert seen["scripts"] == 0
    assert len(seen["images"]) == 8
    for src, width, height, shown_width in seen["images"]:
        assert src.startswith("thumb/") and src.endswith(".webp")
        assert width > 0 and height > 0, f"{src} did not load"
        assert shown_width > 100, f"{src} is drawn {shown_width}px wide"
    assert seen["commands"] == [
        f"/imagine prompt:{prompts[1]} seed:12",
        f"/imagine prompt:{prompts[0]} seed:11",
    ]
    assert seen["phone_overflow"] <= 0, "the page scrolls sideways on a phone"
    for name in ("gallery.png", "gallery-phone.png"):
        with Image.open(tmp_path / name) as shot:
            assert shot.format == "PNG" and shot.width > 300
    if SCREENSHOT_COPY:
        shutil.copyfile(tmp_path / "gallery.png", SCREENSHOT_COPY)
