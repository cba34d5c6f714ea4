"""The explorer page in a real browser: headless Chromium against a real server on 127.0.0.1.

The server serves a real FAISS index built with a tiny random model, behind an API key. Each
test types into the page as a person would and checks what it shows against the API routes the
page calls (asked directly over HTTP), at 1280x800 and at a phone's 390x844. Screenshots are
kept in tests/artifacts/ (git-ignored); their paths are printed. Skipped, with the reason, where
no Chromium is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from corpora import FEEL, WANT, feedback_documents, tiny_encoder
from serving import running, tiny_server_encoder

from inbedder_index import InstructionIndex
from inbedder_index.search import normalise_answer
from inbedder_index.serve import Settings

KEY = "browser-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARTIFACTS = Path(__file__).parent / "artifacts"
QUERY = "I am furious and I want my money back"

try:
    from browser import Chromium, ExplorerPage, find_chromium, set_viewport, start_chromium
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    FOUND: Chromium | str = find_chromium()
except ImportError as error:  # selenium missing: the test extra is not installed
    FOUND = f"selenium is not installed ({error}); pip install -e '.[test]'"


@pytest.fixture(scope="module")
def chromium() -> Chromium:
    if isinstance(FOUND, str):
        print(f"skipping the browser tests: {FOUND}")
        pytest.skip(FOUND)
    return FOUND


@pytest.fixture(scope="module")
def url(chromium, tmp_path_factory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("browser") / "reviews"
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        index.add(feedback_documents())
        index.add_instructions([FEEL, WANT])
    encoder = tiny_server_encoder()
    with running(encoder, {"reviews": InstructionIndex.open(path, model=encoder, read_only=True)},
                 Settings(api_key=KEY, read_only=True)) as (base, _):
        yield base


@pytest.fixture
def page(chromium, url, tmp_path) -> Iterator[ExplorerPage]:
    driver = start_chromium(chromium, tmp_path / "profile")
    try:
        yield ExplorerPage(driver, url)
        # no script error, no failed load, nothing blocked by the page's policy; only the 401s of the
        # page's first call, made before the key was typed, are expected
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  and not (entry["source"] == "network" and "status of 401" in entry["message"])]
        assert not severe, severe
    finally:
        driver.quit()


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{url}{path}", headers=AUTH, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def shown(hit: dict[str, Any], instructions: list[str]) -> dict[str, Any]:
    """An API hit as the page must show it: answers as text, scores with three decimals."""
    return {"id": hit["id"], "text": hit["text"],
            "answers": {i: hit["answers"][i] or "(no answer)" for i in instructions},
            "scores": {i: f"{hit['scores'][i]:.3f}" for i in instructions},
            "total": f"{hit['score']:.3f}" if len(instructions) > 1 else None}


def facet_counts(page: ExplorerPage, instruction: str) -> list[tuple[str, int]]:
    return [(button.get_attribute("data-answer"), int(button.find_element("css selector", ".count").text))
            for button in page.facets(instruction)]


def screenshot(page: ExplorerPage, name: str) -> Path:
    path = page.save_screenshot(ARTIFACTS / name, full_page=True)
    print(f"screenshot: {path}")
    return path


def test_a_two_instruction_search_a_facet_and_the_map_at_1280x800(page, url) -> None:
    set_viewport(page.driver, 1280, 800)
    page.open()
    assert "needs an API key" in page.error()  # the page holds nothing; the API refused it without the key
    assert page.driver.switch_to.active_element.get_attribute("id") == "key"
    page.enter_key(KEY)
    assert page.driver.execute_script("return sessionStorage.getItem('inbedder-index-api-key')") == KEY
    assert [o.get_attribute("value") for o in page.by_id("index").find_elements("css selector", "option")] == ["reviews"]
    page.choose("instruction-1", FEEL)
    page.choose("instruction-2", WANT)

    # the same query under both instructions: the combined ranking, each instruction's answer and score
    page.search(QUERY)
    both = [FEEL, WANT]
    expected = api(url, "POST", "/indexes/reviews/search", json={"queries": {FEEL: QUERY, WANT: QUERY}, "k": 10})
    assert page.hits() == [shown(hit, both) for hit in expected["hits"]]
    assert len(expected["hits"]) == len(feedback_documents())
    assert "10 hits under 2 instructions" in page.status()

    # each instruction's answers with their counts, as the facets route counts them
    for instruction in both:
        counted = api(url, "GET", "/indexes/reviews/facets", params={"instruction": instruction, "k": 12})
        assert facet_counts(page, instruction) == [(f["answer"], f["count"]) for f in counted["facets"]]

    # click the rarest answer: the hits are those documents only, and the other facets count within them
    rarest = min(page.facets(FEEL), key=lambda b: int(b.find_element("css selector", ".count").text))
    answer, count = rarest.get_attribute("data-answer"), int(rarest.find_element("css selector", ".count").text)
    page.press_facet(rarest)
    only = {"$answer": {FEEL: [answer]}}
    expected = api(url, "POST", "/indexes/reviews/search",
                   json={"queries": {FEEL: QUERY, WANT: QUERY}, "k": 10, "filter": only})
    rows = page.hits()
    assert rows == [shown(hit, both) for hit in expected["hits"]] and len(rows) == count
    assert {normalise_answer(row["answers"][FEEL]) for row in rows} == {normalise_answer(answer)}
    assert "filtered by answer" in page.status()
    assert f"{FEEL} = {answer}" in page.by_id("filter-list").text
    within = api(url, "GET", "/indexes/reviews/facets",
                 params={"instruction": WANT, "k": 12, "filter": '{"$answer": {"%s": ["%s"]}}' % (FEEL, answer)})
    assert facet_counts(page, WANT) == [(f["answer"], f["count"]) for f in within["facets"]]

    # the map: every point drawn, each cluster in the legend and labelled, the hits ringed
    page.draw_map(FEEL)
    mapped = api(url, "GET", "/indexes/reviews/map", params={"instruction": FEEL, "limit": 2000, "clusters": 8})
    drawn = page.driver.execute_script("""
        return {points: [...document.querySelectorAll('#map circle')].map((c) => c.dataset.id),
                ringed: [...document.querySelectorAll('#map circle.hit')].map((c) => c.dataset.id),
                labels: [...document.querySelectorAll('#map text.map-label')].map((t) => t.textContent),
                legend: [...document.querySelectorAll('#legend .legend-label')].map((t) => t.textContent)};""")
    assert sorted(drawn["points"]) == sorted(p["id"] for p in mapped["points"])
    assert drawn["legend"] == [c["label"] or "(no answers)" for c in mapped["clusters"]]
    assert len(drawn["labels"]) == len(mapped["clusters"])
    assert sorted(drawn["ringed"]) == sorted(row["id"] for row in rows)
    assert f"{len(mapped['points'])} of {mapped['total']} documents" in page.by_id("map-caption").text

    # readable at this size: nothing wider than the window; everything came from this server
    assert page.driver.execute_script("return document.documentElement.scrollWidth") <= 1280
    origins = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).origin)")
    assert set(origins) <= {url}
    screenshot(page, "explorer-1280x800.png")


def test_one_query_per_instruction_on_a_phone_sized_window(page, url) -> None:
    set_viewport(page.driver, 390, 844, mobile=True)
    page.open()
    page.enter_key(KEY)
    page.choose("instruction-1", WANT)
    page.choose("instruction-2", FEEL)
    page.search("a refund", second_query="furious")
    expected = api(url, "POST", "/indexes/reviews/search", json={"queries": {WANT: "a refund", FEEL: "furious"},
                                                                 "k": 10})
    assert page.hits() == [shown(hit, [WANT, FEEL]) for hit in expected["hits"]]
    layout = page.driver.execute_script("""
        const box = (el) => el.getBoundingClientRect();
        return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                head: box(document.querySelector('#hits thead')).width,
                row: box(document.querySelector('#hits-body tr')).width,
                search: box(document.querySelector('#search-form button[type=submit]')).right};""")
    assert layout["width"] == 390 and layout["scroll"] <= 390  # no sideways scrolling
    assert layout["head"] <= 1 and layout["row"] <= 390  # hits are cards: no table header, each within the width
    assert layout["search"] <= 390
    page.press_facet(page.facets(FEEL)[0], keyboard=True)
    assert page.driver.execute_script("return document.documentElement.scrollWidth") <= 390
    screenshot(page, "explorer-390x844.png")


def test_the_page_is_usable_by_keyboard_with_named_controls(page) -> None:
    set_viewport(page.driver, 1280, 800)
    page.open()
    page.enter_key(KEY)
    unnamed = page.driver.execute_script("""
        const name = (el) => (el.labels && el.labels.length ? el.labels[0].textContent
                              : el.getAttribute('aria-label') || el.textContent).trim();
        return [...document.querySelectorAll('input, select, button')].filter((el) => !name(el))
               .map((el) => el.outerHTML);""")
    assert not unnamed
    assert not page.driver.find_elements("css selector", "[onclick], div[tabindex='0'], span[tabindex='0']")
    # reloaded, the page keeps the key (this tab's sessionStorage) and lists the indexes at once
    page.open()
    assert "1 index on this server" in page.status() and not page.error()
    # Tab walks the controls in reading order from the top; the focused one is outlined
    reached, outlines = [], set()
    for _ in range(14):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        focused = page.driver.switch_to.active_element
        reached.append(focused.get_attribute("id") or focused.text)
        outlines.add(focused.value_of_css_property("outline-style"))
    for expected in ("key", "index", "instruction-1", "instruction-2", "query-1", "Search"):
        assert expected in reached, reached
    assert reached.index("index") < reached.index("query-1") < reached.index("Search")
    assert "none" not in outlines
    # Enter in the query field searches
    page.driver.find_element("id", "query-1").send_keys("thank you", Keys.ENTER)
    page.wait_for_hits()
    assert page.hits() and not page.error()
