"""The explorer page in headless Chromium, driven by selenium, with nothing fetched from the network.

Chromium and its driver are found on this machine (Debian's ``chromium`` and ``chromium-driver``);
selenium is told both paths, so it never looks for (or downloads) a driver. ``ExplorerPage`` does
what a person does on the page, and waits for what the page says when it is done; it is shared
by tests/test_explorer_browser.py and scripts/explorer_screenshot.py.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-color-profile=srgb")
WAIT_S = 30


@dataclass(frozen=True)
class Chromium:
    """Where the browser and its driver are."""

    browser: str
    driver: str


def find_chromium() -> Chromium | str:
    """The installed Chromium and driver, or why there is none (a skip reason)."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = next((path for name in DRIVERS if (path := shutil.which(name))), None)
    if browser and driver:
        return Chromium(browser, driver)
    missing = " and ".join(what for what, path in (("chromium", browser), ("chromium-driver", driver)) if not path)
    return f"no {missing} on PATH (install Debian's chromium and chromium-driver to run the browser tests)"


def start_chromium(chromium: Chromium, user_data_dir: Path) -> webdriver.Chrome:
    """A fresh headless Chromium (its own profile folder) that logs the page's console."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium.browser
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}", "--window-size=1280,800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(executable_path=chromium.driver))


def set_viewport(driver: webdriver.Chrome, width: int, height: int, *, mobile: bool = False) -> None:
    """The page's viewport in CSS pixels, exactly (a window size would include the browser's frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


class ExplorerPage:
    """The explorer page at ``url`` (the server's base URL) as a person uses it."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver, self.url = driver, url.rstrip("/")

    def by_id(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def wait(self, condition: Any, what: str) -> Any:
        return WebDriverWait(self.driver, WAIT_S).until(lambda driver: condition(), message=f"waiting for {what}")

    def status(self) -> str:
        return self.by_id("status").text

    def error(self) -> str:
        box = self.by_id("error")
        return box.text if box.is_displayed() else ""

    def open(self) -> None:
        self.driver.get(f"{self.url}/ui/")
        self.wait(lambda: self.status() and "\u2026" not in self.status() or self.error(), "the page to load")

    def enter_key(self, key: str) -> None:
        """Types the API key and presses Enter; waits for the index list."""
        field = self.by_id("key")
        field.clear()
        field.send_keys(key, Keys.ENTER)
        self.wait(lambda: "on this server" in self.status() or self.error(), "the index list")

    def choose(self, select_id: str, value: str) -> None:
        Select(self.by_id(select_id)).select_by_value(value)

    def search(self, query: str, second_query: str | None = None) -> None:
        """Types the query (and the second instruction's own, if given) and presses Enter."""
        same = self.by_id("same-query")
        if same.is_selected() == (second_query is not None):
            same.click()
        if second_query is not None:
            self.by_id("query-2").clear()
            self.by_id("query-2").send_keys(second_query)
        field = self.by_id("query-1")
        field.clear()
        field.send_keys(query, Keys.ENTER)
        self.wait_for_hits()

    def wait_for_hits(self) -> None:
        self.wait(lambda: " hit" in self.status() or self.error(), "the hits")

    def hits(self) -> list[dict[str, Any]]:
        """Each shown hit: its id, text, per-instruction answer and score, and combined score (as shown)."""
        return self.driver.execute_script("""
            return [...document.querySelectorAll('#hits-body tr')].map((row) => ({
              id: row.dataset.id,
              text: row.querySelector('td.doc .text').textContent,
              answers: Object.fromEntries([...row.querySelectorAll('td.answer-cell')].map(
                (cell) => [cell.dataset.label, cell.querySelector('.answer').textContent])),
              scores: Object.fromEntries([...row.querySelectorAll('td.answer-cell')].map(
                (cell) => [cell.dataset.label, cell.querySelector('.score').textContent])),
              total: (row.querySelector('td.total') || {}).textContent || null,
            }));""")

    def facets(self, instruction: str) -> list[WebElement]:
        """The answer buttons under ``instruction`` once they are loaded."""
        selector = f'button.facet[data-instruction="{_css_string(instruction)}"]'
        return self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, selector), f"the answers to {instruction}")

    def press_facet(self, button: WebElement, *, keyboard: bool = False) -> None:
        """Chooses an answer (a click, or Enter on the focused button) and waits for the filtered hits."""
        instruction, answer = button.get_attribute("data-instruction"), button.get_attribute("data-answer")
        if keyboard:
            self.driver.execute_script("arguments[0].focus()", button)
            self.driver.switch_to.active_element.send_keys(Keys.ENTER)
        else:
            button.click()
        selector = (f'button.facet[aria-pressed="true"][data-instruction="{_css_string(instruction)}"]'
                    f'[data-answer="{_css_string(answer)}"]')
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, selector), "the chosen answer")
        self.wait_for_hits()

    def draw_map(self, instruction: str) -> None:
        self.choose("map-instruction", instruction)
        self.by_id("map-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: "Map drawn" in self.status() or self.error(), "the map")

    def save_screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the window scrolled to the top, or of the whole page (``full_page``)."""
        self.driver.execute_script("window.scrollTo(0, 0)")
        options: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            options.update(captureBeyondViewport=True,
                           clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.driver.execute_cdp_cmd("Page.captureScreenshot", options)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _css_string(text: str) -> str:
    """``text`` inside a double-quoted CSS attribute selector."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
