"""What a newcomer sees on a laptop screen (1280 x 800): table headers whose words stay whole, and Cancel buttons that
are grey and dead while nothing runs, red and live while something does."""

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import start_generation

pytestmark = pytest.mark.browser

# Every word of every header cell of the table under `root` lies on one line: a word broken inside ("Mode l") gives
# its text range two boxes. Returns the broken words.
BROKEN_WORDS = """(root) => {
  const broken = [];
  for (const cell of root.querySelectorAll("th")) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.textContent.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set([...range.getClientRects()].map((box) => Math.round(box.top)));
        if (lines.size > 1) broken.push(match[0]);
      }
    }
  }
  return broken;
}"""

TABLES = {
    "Generate": ["#gen-table"],
    "Train": ["#train-jobs", "#train-report"],
    "Evaluate": ["#ev-results", "#ev-scores"],
}


def test_headers_keep_their_words_whole_and_cancel_is_live_only_while_running(app_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(60_000)
    page.goto(app_server["url"])
    for tab, tables in TABLES.items():
        page.get_by_role("tab", name=tab, exact=True).click()
        for table in tables:
            found = page.locator(table)
            expect(found.locator("th").first).to_be_visible()
            assert found.evaluate(BROKEN_WORDS) == [], f"{tab} {table}"
    # Nothing runs: every Cancel (and Compare's Stop) is disabled.
    for tab, button in (("Generate", "#gen-cancel"), ("Evaluate", "#ev-cancel"), ("Compare", "#cmp-stop")):
        page.get_by_role("tab", name=tab, exact=True).click()
        expect(page.locator(button)).to_be_disabled()
    # A generation runs: its Cancel is live, and goes dead again when the generation ends.
    page.get_by_role("tab", name="Generate", exact=True).click()
    start_generation(page, limit=2, k=2, max_new_tokens=64)
    expect(page.locator("#gen-cancel")).to_be_enabled()
    expect(page.locator("#gen-status")).to_contain_text("Saved 4 candidates", timeout=180_000)
    expect(page.locator("#gen-cancel")).to_be_disabled()
    page.close()
