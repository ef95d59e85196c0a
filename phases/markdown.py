"""Markdown for text people and agents write (descriptions, comments, prompts), rendered and then sanitised.

Rendering first and sanitising the HTML afterwards is what makes it safe:
Markdown passes raw HTML through, so a `<script>` or an `onerror=` in a
ticket's description is removed by the allow-list, whatever the renderer
made of it. Links keep only http(s) and mailto targets and get
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


def render_markdown(text: str) -> SafeString:
    """The text as sanitised HTML; an empty text gives an empty string."""
    if not text:
        return mark_safe("")
    html = markdown_lib.markdown(
        text[:MAX_SOURCE_CHARS], extensions=EXTENSIONS, extension_configs=EXTENSION_CONFIGS, output_format="html"
    )
    clean = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)  # safe: sanitised by the allow-list just above
