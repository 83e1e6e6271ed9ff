"""Pixel evidence that the browser draws Chinese text with real glyphs, not the missing-glyph box ("tofu").

Without a CJK font every Chinese character is drawn as the same .notdef box, so two different characters
give identical pixels, and both match a code point no font has (U+10FFFD, private use). The check
screenshots one element three times — with a Chinese string, the same characters reversed and the
no-font code point — and needs all three to differ. Screenshots are compared as PNG bytes (Chromium
encodes identical pixels identically), so no image library is needed.
"""

from __future__ import annotations

from selenium import webdriver
from selenium.webdriver.remote.webelement import WebElement

NO_GLYPH = "\U0010fffd"


def _shot(driver: webdriver.Chrome, element: WebElement, text: str) -> bytes:
    driver.execute_script("arguments[0].textContent = arguments[1];", element, text)
    return bytes(element.screenshot_as_png)


def assert_draws_chinese(driver: webdriver.Chrome, element: WebElement, sample: str = "快检") -> None:
    """Fail unless `element` renders the two-or-more-character `sample` with distinct, non-box glyphs.

    The element's text is restored afterwards."""
    assert len(set(sample)) >= 2, "the sample needs two different characters"
    # in view first: Chromium's element screenshot of an element outside the viewport of a tall page can
    # capture the wrong rows (seen with the dashboard once its lists grew)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    original = driver.execute_script("return arguments[0].textContent;", element)
    try:
        chinese = _shot(driver, element, sample)
        reversed_ = _shot(driver, element, sample[::-1])
        boxes = _shot(driver, element, NO_GLYPH * len(sample))
    finally:
        driver.execute_script("arguments[0].textContent = arguments[1];", element, original)
    assert chinese != boxes, f"{sample!r} is drawn as missing-glyph boxes: is a CJK font installed?"
    assert chinese != reversed_, f"{sample!r} and its reverse look the same: every character is one box"
