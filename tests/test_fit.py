"""Post fitting: twitter-text conformance for X, then limits, links and cuts on every network."""

from __future__ import annotations

import string
import time
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import regex
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.render.fit import (
    BLUESKY,
    GENERIC,
    MASTODON,
    FittedPost,
    NetworkRules,
    X,
    add_utm,
    bluesky_length,
    display_url,
    fit_post,
    grapheme_length,
    mastodon_length,
    mastodon_rules,
    x_parse,
    x_weighted_length,
)

CONFORMANCE = Path(__file__).parent / "data" / "twitter-text-validate.yml"
SECTIONS = {  # section -> twitter-text config its runners use (see tests/data/README.md)
    "WeightedTweetsCounterTest": "v2",
    "WeightedTweetsWithDiscountedEmojiCounterTest": "v3",
    "UnicodeDirectionalMarkerCounterTest": "v3",
}
URL = "https://example.org/briefs/solar-cells"
FAMILY = "👨\u200d👩\u200d👧\u200d👦"
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def conformance_cases() -> list[Any]:
    tests = yaml.safe_load(CONFORMANCE.read_text(encoding="utf-8"))["tests"]
    return [
        pytest.param(case["text"], config, case["expected"], id=f"{section}: {case['description']}")
        for section, config in SECTIONS.items()
        for case in tests[section]
    ]


@pytest.mark.parametrize(("text", "config", "expected"), conformance_cases())
def test_x_counts_like_twitter_text(text: str, config: str, expected: dict[str, Any]) -> None:
    parsed = x_parse(text, config)
    assert parsed.weighted_length == expected["weightedLength"]
    assert x_weighted_length(text, config) == expected["weightedLength"]
    assert parsed.valid == expected["valid"]
    assert parsed.permillage == expected["permillage"]


def test_conformance_sections_are_all_there() -> None:
    """A truncated copy of the vectors would make the parametrized test pass vacuously."""
    assert len(conformance_cases()) == 44


def test_x_counter_stays_linear_on_dotted_runs() -> None:
    """twitter-text's regex backtracks quadratically here (minutes); ours must not."""
    text = "x." * 20_000 + " example.com"
    started = time.perf_counter()
    assert x_weighted_length(text) == 40_000 + 1 + 23
    assert time.perf_counter() - started < 5


def test_x_counts_links_in_titles_and_emoji_sequences() -> None:
    assert x_weighted_length("What's new in ASP.NET") == len("What's new in ") + 23
    assert x_weighted_length(f"{FAMILY} 🇫🇷 1\ufe0f\u20e3") == 2 + 1 + 2 + 1 + 2
    assert x_weighted_length(f"{FAMILY}", "v2") == 4 * 2 + 3  # v2: per code point
    assert x_weighted_length("©") == 1 and x_weighted_length("©\ufe0f") == 2


# Emoji newer than twitter-text's list (bot/render/x_emoji.py, Emoji 12): X counts the parts
# its list knows as 2 each and every other code point by its weight range (ZWJ U+200D is in
# 0x2000-0x200D, weight 1). Each expected sum is written out part by part.
NEWER_EMOJI = [
    ("heart on fire (13.1)", "\u2764\ufe0f\u200d\U0001f525", 2 + 1 + 2),
    ("mending heart (13.1)", "\u2764\ufe0f\u200d\U0001fa79", 2 + 1 + 2),
    ("face exhaling (13.1)", "\U0001f62e\u200d\U0001f4a8", 2 + 1 + 2),
    ("woman: beard (13.1)", "\U0001f9d4\u200d\u2640\ufe0f", 2 + 1 + 2),
    ("black bird (15.0)", "\U0001f426\u200d\u2b1b", 2 + 1 + 2),
    ("head shaking horizontally (15.1)", "\U0001f642\u200d\u2194\ufe0f", 2 + 1 + 2),
    ("family: adult, adult, child (15.1)", "\U0001f9d1\u200d\U0001f9d1\u200d\U0001f9d2",
     2 + 1 + 2 + 1 + 2),
    ("kiss: person, person, skin tones (13.1)",
     "\U0001f9d1\U0001f3fb\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f9d1\U0001f3fc",
     2 + 1 + 2 + 1 + 2 + 1 + 2),
    ("melting face (14.0), one code point", "\U0001fae0", 2),
    ("known ZWJ sequence: transgender flag (listed)", "\U0001f3f3\ufe0f\u200d\u26a7\ufe0f", 2),
    ("known ZWJ sequence: family (listed)", FAMILY, 2),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, n, id=name)
                                                for name, t, n in NEWER_EMOJI])
def test_x_counts_emoji_newer_than_its_list_as_twitter_text_does(text: str,
                                                                  expected: int) -> None:
    assert x_weighted_length(text) == expected
    assert x_weighted_length(f"Solar cells {text} {URL}") == len("Solar cells ") + expected + 24


def test_mastodon_counts_graphemes_and_links_as_23() -> None:
    assert mastodon_length("a https://example.com/" + "p" * 100) == 2 + 23
    assert mastodon_length("a https://example.com/x", url_length=30) == 2 + 30
    assert mastodon_length("see example.com") == len("see example.com")  # no scheme: in full
    assert mastodon_length(f"{FAMILY}e\u0301") == 2


def test_bluesky_counts_graphemes_and_bytes_with_links_in_full() -> None:
    assert bluesky_length(f"{FAMILY} é") == (3, 25 + 1 + 2)
    link = "https://example.com/" + "p" * 100
    assert bluesky_length(link) == (len(link), len(link))


# -- fitting: properties --------------------------------------------------------------------

LABELS = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)
SEGMENTS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=30)


@st.composite
def urls(draw: st.DrawFn) -> str:
    host = ".".join(draw(st.lists(LABELS, min_size=1, max_size=3)))
    tld = draw(st.sampled_from(["com", "org", "net", "io", "dev", "de", "co.uk", "app"]))
    path = "/".join(draw(st.lists(SEGMENTS, max_size=6)))
    query = urlencode(draw(st.lists(st.tuples(LABELS, LABELS), max_size=3)))
    return f"https://{host}.{tld}/{path}" + (f"?{query}" if query else "")


TITLES = st.one_of(
    st.text(max_size=400),
    st.text(max_size=4000),
    # huge titles: a short piece repeated, e.g. emoji runs, CJK runs, "x.x.x." runs
    st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=8),
              st.integers(min_value=1, max_value=700)),
)
TAGS = st.lists(st.text(string.ascii_letters, min_size=1, max_size=12).map("#".__add__),
                max_size=4)


def check_cuts(post: FittedPost, tags: list[str]) -> None:
    """Hashtags go first, last one first, all of them before the title is touched."""
    ranks = [0 if note.startswith("dropped hashtag ") else 1 if note == "dropped extra text"
             else 2 for note in post.cut]
    assert ranks == sorted(ranks) and ranks.count(2) <= 1
    distinct: list[str] = []
    for tag in tags:  # repeats (any case) count once, first spelling wins
        if tag.casefold() not in {seen.casefold() for seen in distinct}:
            distinct.append(tag)
    dropped = [note.removeprefix("dropped hashtag ") for note in post.cut if not ranks.pop(0)]
    assert dropped == distinct[::-1][: len(dropped)]
    kept = distinct[: len(distinct) - len(dropped)]
    assert post.text.endswith(" ".join(["", *kept]) if kept else "")
    if any(note.endswith("characters") or note.startswith("dropped title") for note in post.cut):
        assert not kept


@PROPERTY
@given(title=TITLES, url=urls(), tags=TAGS)
def test_x_posts_fit_and_keep_the_link(title: str, url: str, tags: list[str]) -> None:
    post = fit_post(X, title=title, url=url, hashtags=tags)
    assert x_weighted_length(post.text) <= 280
    assert post.length == x_weighted_length(post.text) and post.limit == 280
    assert url in post.text and post.url == url
    assert post.facets == ()
    check_cuts(post, tags)


@PROPERTY
@given(title=TITLES, url=urls(), tags=TAGS)
def test_mastodon_posts_fit_and_keep_the_link(title: str, url: str, tags: list[str]) -> None:
    post = fit_post(MASTODON, title=title, url=url, hashtags=tags)
    assert mastodon_length(post.text) <= 500
    assert post.length == mastodon_length(post.text) and post.limit == 500
    assert url in post.text
    check_cuts(post, tags)


@PROPERTY
@given(title=TITLES, url=urls(), tags=TAGS)
def test_bluesky_posts_fit_with_a_facet_on_the_shown_link(title: str, url: str,
                                                          tags: list[str]) -> None:
    post = fit_post(BLUESKY, title=title, url=url, hashtags=tags)
    graphemes, size = bluesky_length(post.text)
    assert graphemes <= 300 and size <= 3000
    assert post.length == graphemes and post.limit == 300
    [facet] = _links(post)
    assert facet["features"] == [{"$type": "app.bsky.richtext.facet#link", "uri": url}]
    index = facet["index"]
    shown = post.text.encode("utf-8")[index["byteStart"]:index["byteEnd"]].decode("utf-8")
    assert shown == display_url(url)
    assert url.removeprefix("https://").startswith(shown.removesuffix("…"))
    assert grapheme_length(shown) <= 30
    check_cuts(post, tags)


UNLIMITED = NetworkRules("unlimited", 10**9, grapheme_length)


@PROPERTY
@given(title=TITLES)
def test_titles_lose_controls_and_are_cut_at_grapheme_boundaries(title: str) -> None:
    post = fit_post(BLUESKY, title=title, url=URL)
    head = post.text.rpartition("\n\n")[0]
    assert not regex.search(r"[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\u202a-\u202e\u2066-\u2069]", head)
    cleaned = fit_post(UNLIMITED, title=title, url=URL).text.rpartition("\n\n")[0]
    if any(note.startswith("shortened title") for note in post.cut):
        kept = regex.findall(r"\X", head.removesuffix("…"))
        assert head.endswith("…") and 0 < len(kept) < grapheme_length(cleaned)
        assert kept == regex.findall(r"\X", cleaned)[: len(kept)]  # whole clusters, a prefix
    elif not post.cut:
        assert head == cleaned


# -- fitting: examples ----------------------------------------------------------------------


def test_a_short_post_is_left_as_it_is() -> None:
    post = fit_post(X, title="Solar cells pass a record", url=URL,
                    hashtags=["#Energy", "Research"])
    assert post.text == f"Solar cells pass a record\n\n{URL} #Energy #Research"
    assert post.cut == ()
    assert post.length == len("Solar cells pass a record") + 2 + 23 + len(" #Energy #Research")


def test_hashtags_are_dropped_from_the_end_before_the_title_is_touched() -> None:
    title = "t" * 243  # 243 + 2 + 23 = 268: room for " #Alpha" (275) but not " #Beta" too
    post = fit_post(X, title=title, url=URL, hashtags=["#Alpha", "#Beta"])
    assert post.text == f"{title}\n\n{URL} #Alpha"
    assert post.cut == ("dropped hashtag #Beta",)


def test_cut_records_each_hashtag_then_the_shortened_title() -> None:
    title = " ".join(["word"] * 100)  # 499 characters
    post = fit_post(X, title=title, url=URL, hashtags=["#Alpha", "#Beta"])
    # 280 - 25 for the link leaves 255; "…" weighs 2 on X, so 50 words (249) + "…" is the most
    assert post.text == " ".join(["word"] * 50) + f"…\n\n{URL}"
    assert post.cut == ("dropped hashtag #Beta", "dropped hashtag #Alpha",
                        "shortened title from 499 to 250 characters")
    assert post.length == 276


def test_a_word_too_long_for_the_room_is_cut_by_graphemes() -> None:
    post = fit_post(BLUESKY, title=FAMILY * 400, url=URL)
    head, _, tail = post.text.partition("\n\n")
    assert tail == display_url(URL)
    clusters = regex.findall(r"\X", head)
    assert clusters[-1] == "…" and set(clusters[:-1]) == {FAMILY}  # no broken ZWJ sequence
    size = len(post.text.encode("utf-8"))
    assert size <= 3000 < size + len(FAMILY.encode("utf-8"))  # bytes bind, not graphemes
    assert post.cut == (f"shortened title from 400 to {len(clusters)} characters",)


def test_no_dangling_punctuation_before_the_ellipsis() -> None:
    tiny = NetworkRules("tiny", 40, grapheme_length)  # 40 - 16 for the link: 24 for the title
    post = fit_post(tiny, title="Solar cells: a record, and more words", url="https://e.org/")
    assert post.text == "Solar cells: a record…\n\nhttps://e.org/"


def test_a_title_with_no_room_at_all_is_dropped() -> None:
    tiny = NetworkRules("tiny", 17, grapheme_length)  # "H…" + 16 would be 18
    post = fit_post(tiny, title="Hello", url="https://e.org/", hashtags=["#A"])
    assert post.text == "https://e.org/"
    assert post.cut == ("dropped hashtag #A", "dropped title (5 characters)")


def test_cjk_titles_without_spaces_are_cut_by_graphemes() -> None:
    post = fit_post(X, title="故" * 300, url=URL)
    head = post.text.partition("\n\n")[0]
    assert head == "故" * 126 + "…"  # (280 - 25 - 2) // 2
    assert post.length == 279


def test_extra_goes_after_hashtags_and_before_the_title() -> None:
    short = fit_post(X, title="Title", url=URL, extra="A one-line summary.")
    assert short.text == f"Title\n\nA one-line summary.\n\n{URL}"
    post = fit_post(X, title="t" * 250, url=URL, hashtags=["#Tag"], extra="A summary.")
    assert post.text == f"{'t' * 250}\n\n{URL}"
    assert post.cut == ("dropped hashtag #Tag", "dropped extra text")


def test_title_is_cleaned_of_controls_newlines_and_bidi_overrides() -> None:
    post = fit_post(GENERIC, title="Line one\nLine two\t\x00end\u202e!\ufeff ", url=URL)
    assert post.text == f"Line one Line two end!\n\n{URL}"


def test_bluesky_shows_a_short_link_and_points_the_facet_at_the_full_url() -> None:
    url = "https://example.org/research/2026/11/solar-cells-pass-a-new-efficiency-record"
    post = fit_post(BLUESKY, title=f"Ünïcödé 日本語 {FAMILY}", url=url, hashtags=["#Énergie"])
    shown = "example.org/research/2026/11/…"
    assert display_url(url) == shown
    assert post.text == f"Ünïcödé 日本語 {FAMILY}\n\n{shown} #Énergie"
    [facet] = _links(post)
    start = len(f"Ünïcödé 日本語 {FAMILY}\n\n".encode())
    assert facet["index"] == {"byteStart": start, "byteEnd": start + len(shown.encode())}
    assert facet["features"][0]["uri"] == url


def test_render_decides_the_layout_and_facets_follow_it() -> None:
    def render(title: str, url: str, tags: list[str]) -> str:
        return f"{' '.join(tags)} | {title} → {url}"

    post = fit_post(BLUESKY, title="Grüße", url="https://example.org/", hashtags=["A"],
                    render=render)
    assert post.text == "#A | Grüße → example.org"
    [facet] = _links(post)
    data = post.text.encode()
    assert data[facet["index"]["byteStart"]:facet["index"]["byteEnd"]] == b"example.org"


def test_a_layout_that_drops_the_link_is_refused() -> None:
    with pytest.raises(ValueError, match="dropped the URL"):
        fit_post(X, title="Title", url=URL, render=lambda title, url, tags: title)


def test_a_link_that_cannot_fit_is_an_error_not_a_cut() -> None:
    with pytest.raises(ValueError, match="limit"):  # no known TLD: X counts all 418 characters
        fit_post(X, title="Title", url="https://localhost/" + "a" * 400)
    with pytest.raises(ValueError, match="limit"):
        fit_post(GENERIC, title="Title", url="https://example.org/" + "a" * 600)
    with pytest.raises(ValueError, match="http"):
        fit_post(X, title="Title", url="javascript:alert(1)")


def test_a_post_without_a_link() -> None:
    post = fit_post(BLUESKY, title="Just words", url="", hashtags=["#Tag"])
    assert (post.text, _links(post), post.url) == ("Just words\n\n#Tag", [], "")


def test_network_rules() -> None:
    assert (X.max_length, MASTODON.max_length, BLUESKY.max_length, GENERIC.max_length) == (
        280, 500, 300, 500)
    assert BLUESKY.max_bytes == 3000 and BLUESKY.shorten_links_for_display
    assert not X.url_counts_full and BLUESKY.url_counts_full
    big = mastodon_rules(1000)
    assert isinstance(big, NetworkRules) and big.max_length == 1000
    post = fit_post(big, title="word " * 150, url=URL)
    assert post.cut == () and post.limit == 1000


def test_add_utm_adds_missing_parameters_and_keeps_the_fragment() -> None:
    assert add_utm("https://example.org/a?x=1#part", {"utm_source": "x", "medium": "social"}) \
        == "https://example.org/a?x=1&utm_source=x&utm_medium=social#part"
    assert add_utm("https://example.org/?utm_source=news", {"utm_source": "x", "campaign": "w"}) \
        == "https://example.org/?utm_source=news&utm_campaign=w"
    assert add_utm("https://example.org/p", {"utm_source": ""}) == "https://example.org/p"


# -- the URL scanner against the reference port, where twitter-text-parser is importable -----

URLISH = st.lists(st.sampled_from([
    "http://", "https://", "HTTPS://", "www", "example", "com", "co", "uk", "jp", ".", ".", "/",
    "?", "=", "&", "#", "-", "_", ":", "8080", " ", "\n", "(", ")", "a", "é", "日本", "рф",
    "xn--abc", "t.co/", "abcdefghij" * 7, "@", "$", "!", ",", "'", "\u202a", "پاکستان", "ASP.NET",
]), max_size=30).map("".join)


def reference_port() -> Any:
    try:
        import twitter_text  # needs pkg_resources: absent on setuptools >= 82
    except ImportError:
        return None
    return twitter_text


REFERENCE = reference_port()


@pytest.mark.skipif(REFERENCE is None, reason="twitter-text-parser not importable")
@PROPERTY
@given(text=URLISH)
def test_links_are_found_where_twitter_text_parser_finds_them(text: str) -> None:
    found = REFERENCE.extract_urls_with_indices(unicodedata.normalize("NFC", text))
    # its `str.replace` rewrites every copy of the domain in the URL (JS: the first only)
    if all(len(u["url"]) == u["indices"][1] - u["indices"][0] for u in found):
        v2 = dict(REFERENCE.config.config["version2"], emoji_parsing_enabled=False)
        assert x_weighted_length(text, "v2") == REFERENCE.parse_tweet(text, v2).weightedLength


def test_mastodon_counts_a_remote_mention_by_its_user_part() -> None:
    """StatusLengthValidator rewrites `@user@domain` to `@user` before counting."""
    assert mastodon_length("hi @alice@example.social") == len("hi @alice")
    assert mastodon_length("mail me at a@b.example") == len("mail me at a@b.example")


def test_bluesky_hashtags_get_tag_facets_at_utf8_byte_offsets() -> None:
    post = fit_post(BLUESKY, title="Grid storage", url="https://example.org/a",
                    hashtags=["#हिन्दी", "#Energy"])
    tags = [f for f in post.facets
            if f["features"][0]["$type"] == "app.bsky.richtext.facet#tag"]
    raw = post.text.encode("utf-8")
    assert [(raw[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode(),
             f["features"][0]["tag"]) for f in tags] == [("#हिन्दी", "हिन्दी"),
                                                         ("#Energy", "Energy")]


def _links(post) -> list[dict]:
    """The link facets of a post (hashtags have facets of their own)."""
    return [f for f in post.facets if f["features"][0]["$type"].endswith("#link")]


def test_a_link_inside_a_title_gets_its_own_bluesky_facet():
    from bot.render import fit

    post = fit.fit_post(fit.BLUESKY, title="Read https://example.com/report first",
                        url="https://news.example.org/x")
    links = [(f["index"]["byteStart"], f["index"]["byteEnd"], f["features"][0]["uri"])
             for f in post.facets if f["features"][0]["$type"].endswith("#link")]
    data = post.text.encode("utf-8")
    assert [data[s:e].decode() for s, e, _ in links] == ["https://example.com/report",
                                                         "news.example.org/x"]
    assert [uri for _, _, uri in links] == ["https://example.com/report",
                                            "https://news.example.org/x"]


@pytest.mark.parametrize(("text", "expected"), [
    # Mastodon's own path rules (config/initializers/twitter_regex.rb): any character in a
    # path, none of `=` `.` `,` ... at its end; non-ASCII in a query.
    ("see https://example.org/パス/記事 now", 4 + 23 + 4),
    ("see https://example.org/a?q=日本 now", 4 + 23 + 4),
    ("see https://example.org/p= now", 4 + 23 + 1 + 4),  # the `=` is text, not link
    ("see https://example.org/story. now", 4 + 23 + 1 + 4),
])
def test_mastodon_charges_a_link_for_what_mastodon_links(text, expected):
    from bot.render.counting import mastodon_length

    assert mastodon_length(text) == expected


def test_mastodon_counts_indic_conjuncts_as_ruby_3_does():
    """Mastodon's Ruby 3.x uses Unicode 15.0 graphemes, which break after a virama; the
    `regex` module (15.1, rule GB9c) joins the conjunct. The larger count is the safe one."""
    from bot.render.counting import grapheme_length, mastodon_length

    assert grapheme_length("क्षत्रिय") == 3 and mastodon_length("क्षत्रिय") == 5
    assert mastodon_length("नमस्ते दुनिया") == grapheme_length("नमस्ते दुनिया") + 1  # स्ते
    assert mastodon_length("👨‍👩‍👧 family") == 8  # emoji sequences are unchanged
