"""Markdown for text people and agents write (descriptions, comments, prompts), rendered and then sanitised.

Raw HTML in the text is shown as the text it is, not passed through: prompts
and descriptions say things like `docs/design/<ticket-id>.md`, and a
`<script>` someone pastes is worth reading, not running. The HTML the
renderer makes is then sanitised by an allow-list as a second wall, whatever
a Markdown extension might emit. Links keep only http(s) and mailto targets and get
`rel="noopener noreferrer nofollow"`. It lives in the lowest app so that the
admin's phase preview and the board's pages share one renderer.
"""

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe

EXTENSIONS = ["fenced_code", "tables", "sane_lists", "nl2br"]
# Column alignment as the `align` attribute the allow-list keeps; the default, a style attribute, is stripped.
EXTENSION_CONFIGS = {"tables": {"use_align_attribute": True}}
TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
# A description may be long; rendering past this would only slow the page for text nobody reads in one go.
MAX_SOURCE_CHARS = 200_000


def _renderer():
    renderer = markdown_lib.Markdown(extensions=EXTENSIONS, extension_configs=EXTENSION_CONFIGS, output_format="html")
    # Without these two, `<tag>` in the text is taken as markup (and then stripped, text and all).
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    return renderer


def render_markdown(text: str) -> SafeString:
    """The text as sanitised HTML; an empty text gives an empty string."""
    if not text:
        return mark_safe("")
    html = _renderer().convert(text[:MAX_SOURCE_CHARS])
    clean = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)  # safe: sanitised by the allow-list just above
