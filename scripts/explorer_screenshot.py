"""Regenerates docs/images/explorer.png, the README's picture of the explorer page, at 1280x800.

Builds the sample index (examples/data/customer-messages.jsonl under two instructions) with the
default model in a temporary folder, serves it on 127.0.0.1 behind an API key, and drives
headless Chromium (Debian's chromium and chromium-driver) through the page as a person would:
the key, a combined search, a click on an answer, the map. Needs the test extra (selenium).

    .venv/bin/python scripts/explorer_screenshot.py [--model NAME] [--output PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the page's browser driver, shared with the browser tests

from browser import ExplorerPage, find_chromium, set_viewport, start_chromium  # noqa: E402

from inbedder_index import InstructionIndex  # noqa: E402
from inbedder_index.models import DEFAULT_MODEL  # noqa: E402
from inbedder_index.readers import read_documents  # noqa: E402
from inbedder_index.serve import Service, Settings, background  # noqa: E402

logger = logging.getLogger("explorer_screenshot")

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
QUERY = "I am so angry, give me my money back!"
KEY = "screenshot"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the model to build with (default {DEFAULT_MODEL})")
    parser.add_argument("--input", default=str(ROOT / "examples/data/customer-messages.jsonl"))
    parser.add_argument("--output", default=str(ROOT / "docs/images/explorer.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chromium = find_chromium()
    if isinstance(chromium, str):
        logger.error("cannot take the screenshot: %s", chromium)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "customer-index"
        logger.info("building %s with %s", path, args.model)
        with InstructionIndex.open(path, model=args.model) as index:
            index.add(read_documents(args.input))
            index.add_instructions([FEEL, WANT])
        service = Service.open([str(path)], settings=Settings(api_key=KEY, read_only=True))
        driver = start_chromium(chromium, Path(folder) / "profile")
        try:
            with background(service) as url:
                page = ExplorerPage(driver, url)
                set_viewport(driver, 1280, 800)
                page.open()
                page.enter_key(KEY)
                page.choose("instruction-1", FEEL)
                page.choose("instruction-2", WANT)
                page.by_id("k").clear()
                page.by_id("k").send_keys("5")
                page.search(QUERY)
                page.press_facet(page.facets(FEEL)[0])  # the most frequent answer
                page.by_id("clusters").clear()
                page.by_id("clusters").send_keys("4")
                page.draw_map(FEEL)
                if page.error():
                    raise RuntimeError(f"the page shows an error: {page.error()}")
                output = page.save_screenshot(Path(args.output))
        finally:
            driver.quit()
            service.close()
    logger.info("saved %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
