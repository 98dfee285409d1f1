"""gallery.pages: cards and the HTML page, as pure functions of stored rows."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ASPECT_RATIOS, size_for_aspect_ratio
from engine.requests import aspect_ratio_of
from gallery.pages import (
    PER_PAGE,
    UNKNOWN_NAME,
    card_for,
    imagine_command,
    page_count,
    render_page,
    shown_indexes,
)
from lifecycle.storage import GalleryEntry, Job, Share

JOB = Job(
    id=7,
    kind="imagine",
    requester_id=111,
    channel_id=333,
    guild_id=222,
    prompt="a red fox in the snow",
    seed=1000,
    width=1024,
    height=1024,
    status="done",
    created_at=1_700_000_000.0,
    seeds=(1000, 1001, 1002, 1003),
    requester_name="Alice",
)
SHARE = Share(
    job_id=7,
    image_index=0,
    guild_id=222,
    showcase_channel_id=444,
    showcase_message_id=555,
    shared_by=666,
    shared_at=1_700_000_100.0,
    shared_by_name="Bob",
)


def entry(job: Job = JOB, share: Share = SHARE, **job_changes) -> GalleryEntry:
    return GalleryEntry(share=share, job=dataclasses.replace(job, **job_changes))


class Collect(HTMLParser):
    """The page's text, tags and attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Collect:
    parser = Collect()
    parser.feed(html)
    parser.close()
    return parser


def test_the_command_reproduces_the_set_with_every_option_it_needs() -> None:
    assert imagine_command(JOB, 1000) == "/imagine prompt:a red fox in the snow seed:1000"
    wide = dataclasses.replace(
        JOB, width=1344, height=768, negative_prompt="blurry,\n text", raw=True
    )
    assert imagine_command(wide, 5) == (
        "/imagine prompt:a red fox in the snow negative_prompt:blurry, text seed:5 "
        "aspect_ratio:16:9 raw:True"
    )


@pytest.mark.parametrize("ratio", sorted(ASPECT_RATIOS))
def test_every_aspect_ratio_comes_back_from_its_size(ratio: str) -> None:
    assert aspect_ratio_of(*size_for_aspect_ratio(ratio)) == ratio


@pytest.mark.parametrize(
    ("share_index", "flagged", "withheld", "shown", "hidden"),
    [
        (0, (), (), [1, 2, 3, 4], 0),
        (0, (2,), (), [1, 3, 4], 1),  # a spoiler in Discord: not on the web
        (0, (), (3,), [1, 2, 4], 0),  # never stored: nothing to hide
        (2, (), (), [2], 0),
        (2, (2,), (), [], 1),
    ],
)
def test_flagged_images_never_reach_the_page(share_index, flagged, withheld, shown, hidden) -> None:
    share = dataclasses.replace(SHARE, image_index=share_index)
    assert shown_indexes(entry(share=share, flagged=flagged, withheld=withheld)) == (shown, hidden)


def test_a_card_credits_author_and_sharer_by_name_and_links_its_pictures() -> None:
    card = card_for(entry(), discord_url="https://discord.com/channels/222/444/555")
    assert (card.made_by, card.shared_by) == ("Alice", "Bob")
    assert card.seeds == "1000, 1001, 1002, 1003"
    assert card.size == "1024×1024"
    assert card.reproduces
    assert [p.thumbnail for p in card.pictures] == [f"thumb/7-{i}.webp" for i in range(1, 5)]
    assert [p.full for p in card.pictures] == [f"image/7-{i}" for i in range(1, 5)]
    assert {(p.width, p.height) for p in card.pictures} == {(384, 384)}
    nameless = card_for(
        entry(share=dataclasses.replace(SHARE, shared_by_name=None), requester_name=None),
        discord_url="x",
    )
    assert (nameless.made_by, nameless.shared_by) == (UNKNOWN_NAME, UNKNOWN_NAME)


def test_a_single_shared_image_shows_its_own_seed_and_command() -> None:
    card = card_for(entry(share=dataclasses.replace(SHARE, image_index=3)), discord_url="x")
    assert card.seeds == "1002"
    assert card.command.endswith("seed:1002")
    assert [p.index for p in card.pictures] == [3]


def test_a_variation_says_its_command_only_reuses_the_prompt() -> None:
    card = card_for(entry(kind="variation"), discord_url="x")
    assert not card.reproduces
    html = render_page([card], page=1, pages=1, total=1)
    assert "so yours will differ" in html


def test_the_page_shows_cards_and_navigation() -> None:
    cards = [card_for(entry(id=n), discord_url=f"https://d/{n}") for n in range(3)]
    html = render_page(cards, page=2, pages=3, total=3 * PER_PAGE)
    page = parse(html)
    articles = [attrs for tag, attrs in page.tags if tag == "article"]
    assert len(articles) == 3
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 12 and all(a["loading"] == "lazy" for a in images)
    links = {attrs["href"] for tag, attrs in page.tags if tag == "a"}
    assert {"?page=1", "?page=3", "https://d/0", "image/0-1"} <= links
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe")]
    assert "Made by Alice · shared by Bob" in "".join(page.text)


def test_an_empty_gallery_says_how_to_fill_it() -> None:
    html = render_page([], page=1, pages=page_count(0), total=0)
    assert "Nothing has been shared yet" in html
    assert "<nav>" not in html


@pytest.mark.parametrize(
    ("total", "pages"), [(0, 1), (1, 1), (PER_PAGE, 1), (PER_PAGE + 1, 2), (10_000, 417)]
)
def test_page_count(total: int, pages: int) -> None:
    assert page_count(total) == pages


TYPED = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None)
@given(prompt=TYPED, negative=TYPED, made_by=TYPED, shared_by=TYPED)
def test_whatever_users_typed_is_text_on_the_page_never_markup(
    prompt: str, negative: str, made_by: str, shared_by: str
) -> None:
    share = dataclasses.replace(SHARE, shared_by_name=shared_by)
    card = card_for(
        entry(share=share, prompt=prompt, negative_prompt=negative, requester_name=made_by),
        discord_url="https://discord.com/channels/222/444/555",
    )
    page = parse(render_page([card], page=1, pages=1, total=1))
    # The only elements are the template's own; what was typed comes back as text.
    assert {tag for tag, _ in page.tags} <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "h1",
        "p",
        "main",
        "article",
        "div",
        "a",
        "img",
        "code",
    }
    assert len([tag for tag, _ in page.tags if tag == "article"]) == 1
    text = "".join(page.text)
    for typed in (prompt, made_by, shared_by):
        assert typed in text
    code = [attrs for tag, attrs in page.tags if tag == "code"]
    assert len(code) == 1
    alts = [attrs["alt"] for tag, attrs in page.tags if tag == "img"]
    assert alts and all(alt.endswith(prompt) for alt in alts)


def test_a_prompt_with_html_in_it_is_escaped() -> None:
    hostile = 'fox <script>alert(1)</script> <img src=x onerror="alert(2)"> & "quotes"'
    card = card_for(entry(prompt=hostile, requester_name="<b>Eve</b>"), discord_url="x")
    html = render_page([card], page=1, pages=1, total=1)
    assert "<script>" not in html and "<b>Eve</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html
