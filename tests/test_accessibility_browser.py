"""Every page passes axe-core with no serious or critical violation, in the light theme and the dark one.

axe-core is vendored (static/vendor/axe-core) for these tests only: each page is
opened in Chromium as the admin would see it, on a demo board with real content
(tests/browser.py `seed_demo_board`), and the test injects axe into it. A failure
lists each violation with its rule, what it asks for, and the selectors of the
elements at fault.
"""

from pathlib import Path

import pytest
from django.conf import settings

from .browser import PAGES, page_path, seeded_page

AXE = Path(settings.BASE_DIR) / "static" / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}
THEMES = ["light", "dark"]
NODES_SHOWN = 8  # elements listed per violation; the count says how many more

# The seed is committed once for the module (conftest.py `demo_seed`); the tests only read it through the
# server. The mark still matters: pytest-django creates the test database only for a session with such tests.
pytestmark = pytest.mark.django_db

RUN_AXE = """async () => {
    const results = await axe.run(document, {resultTypes: ["violations"]});
    return results.violations.map((violation) => ({
        id: violation.id,
        impact: violation.impact,
        help: violation.help,
        helpUrl: violation.helpUrl,
        nodes: violation.nodes.map((node) => ({target: node.target.join(" "), summary: node.failureSummary})),
    }));
}"""


def describe(violations):
    lines = []
    for violation in violations:
        lines.append(f"{violation['impact']}: {violation['id']}: {violation['help']} ({violation['helpUrl']})")
        for node in violation["nodes"][:NODES_SHOWN]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}  -- {summary}")
        if len(violation["nodes"]) > NODES_SHOWN:
            lines.append(f"    … and {len(violation['nodes']) - NODES_SHOWN} more elements")
    return "\n".join(lines)


@pytest.mark.browser
@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("name", list(PAGES))
def test_the_page_has_no_serious_accessibility_violation(
    name, theme, chromium, server, demo_seed, admin_state, server_log
):
    path = page_path(name, demo_seed)
    viewport = {"width": 1400, "height": 900}
    with seeded_page(chromium, server, name, path, viewport=viewport, theme=theme, admin_state=admin_state) as page:
        page.add_script_tag(path=AXE)
        violations = page.evaluate(RUN_AXE)

    blocking = [violation for violation in violations if violation["impact"] in BLOCKING]
    others = [violation for violation in violations if violation["impact"] not in BLOCKING]
    if others:
        print(f"Minor and moderate findings on {path} ({theme}):\n{describe(others)}")
    assert not blocking, f"{path} in the {theme} theme:\n{describe(blocking)}"


def test_no_page_loads_axe():
    """axe-core is the tests' tool: no template or page script refers to it."""
    base = Path(settings.BASE_DIR)
    sources = [*base.joinpath("templates").rglob("*.html"), *base.joinpath("static", "js").rglob("*.js")]
    assert sources
    assert [str(source) for source in sources if "axe" in source.read_text().lower()] == []
