"""Screenshots of every page for a reviewer, and no page scrolling sideways at a phone's width.

Each page of the demo board (tests/browser.py `seed_demo_board`) is saved as a PNG,
the whole page when it is taller than the window, at 1400x900 in the light and the
dark theme and at 390x844 (a phone) in the light one, into artifacts/screenshots/
(README, "Screenshots"): `<page>-<width>-<theme>.png`. At 390 pixels the page itself
must not scroll sideways; wide content (the board's columns, tables) scrolls inside
its own container.
"""

from pathlib import Path

import pytest
from django.conf import settings

from .browser import PAGES, page_path, seeded_page

SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
VIEWS = {
    "1400-light": ({"width": 1400, "height": 900}, "light"),
    "1400-dark": ({"width": 1400, "height": 900}, "dark"),
    "390-light": ({"width": 390, "height": 844}, "light"),
}
PHONE_WIDTH = 390

# The seed is committed once for the module; see test_accessibility_browser.py for why the mark is needed.
pytestmark = [pytest.mark.browser, pytest.mark.django_db]

# The elements that stick out past the right edge, the widest first: what to look at when a page scrolls sideways.
OVERFLOWING = """(width) => {
    const found = [];
    for (const element of document.body.querySelectorAll("*")) {
        const box = element.getBoundingClientRect();
        if (box.right > width + 1 && box.width > 0 && getComputedStyle(element).position !== "fixed") {
            const name = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "")
                + [...element.classList].map((c) => "." + c).join("");
            found.push([Math.round(box.right), name]);
        }
    }
    found.sort((a, b) => b[0] - a[0]);
    return found.slice(0, 8).map(([right, name]) => `${name} reaches ${right}px`);
}"""


@pytest.fixture(scope="module")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("name", list(PAGES))
def test_screenshot(name, view, chromium, server, demo_seed, admin_state, screenshots, server_log):
    path = page_path(name, demo_seed)
    viewport, theme = VIEWS[view]
    with seeded_page(chromium, server, name, path, viewport=viewport, theme=theme, admin_state=admin_state) as page:
        target = screenshots / f"{name}-{view}.png"
        page.screenshot(path=target, full_page=True)
        assert target.stat().st_size > 0
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        overflowing = page.evaluate(OVERFLOWING, viewport["width"]) if scroll_width > viewport["width"] else []

    if viewport["width"] == PHONE_WIDTH:
        assert scroll_width <= PHONE_WIDTH, (
            f"{path} scrolls sideways at {PHONE_WIDTH}px: the page is {scroll_width}px wide "
            f"(see {target.name}). Past the edge: {'; '.join(overflowing)}"
        )
