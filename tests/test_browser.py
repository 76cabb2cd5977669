"""The web page in a real browser: headless system Chromium, driven by Playwright, on `mmsearch serve`.

Assertions are about what a person sees: cards with pictures that loaded, the right picture
first, a video that plays from its moment, filters and "more like this" changing the cards, and
errors written on the page. Screenshots of the
main states go to test-artifacts/browser/ (kept by CI as artifacts).
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
WAIT_MS = 30_000  # a first search on a cold 2-core machine loads the model


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh tab (own cookies and cache) at a desktop size."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def search_text(page, url: str, query: str, *, types: tuple[str, ...] = (), k: str = "10") -> dict:
    """Type a query as a person would: tick the types, choose k, press Enter; wait for the answer.

    Returns the JSON the page received, to compare what it shows with what the API said.
    """
    page.goto(url)
    for kind in types:
        page.get_by_role("checkbox", name=re.compile(kind)).check()
    page.select_option("#k", k)
    page.fill("#q", query)
    with page.expect_response(re.compile(r"/api/search\?")) as answer:
        page.press("#q", "Enter")
    wait_for_answer(page)
    return answer.value.json()


def wait_for_answer(page) -> None:
    """Until the page shows results, "No results", or an error."""
    page.wait_for_function(
        """() => document.querySelector('#results li')
                 || /No results/.test(document.querySelector('#summary').textContent)
                 || !document.querySelector('#message').hidden"""
    )


def cards(page) -> list[dict]:
    """Each result card as the person reads it: file name, kind label, time span."""
    return page.eval_on_selector_all(
        "#results li.card",
        """cards => cards.map(c => ({
            name: c.querySelector('.name').textContent,
            kind: c.querySelector('.kind').textContent,
            span: c.querySelector('.span').textContent,
        }))""",
    )


def thumbnail_widths(page) -> list[int]:
    """The natural width of every card's picture, each scrolled into view so lazy ones load."""
    widths = []
    for img in page.locator("#results li.card img").all():
        img.scroll_into_view_if_needed()
        img.evaluate(
            """img => img.complete && img.naturalWidth > 0 ? null
                : new Promise((ok, fail) => {
                    img.addEventListener('load', ok, {once: true});
                    img.addEventListener('error', () => fail(new Error('broken ' + img.src)), {once: true});
                })"""
        )
        widths.append(img.evaluate("img => img.naturalWidth"))
    page.evaluate("window.scrollTo(0, 0)")
    return widths


def error_message(page) -> str:
    """The error the page shows the person (waits for it to appear)."""
    page.locator("#message").wait_for(state="visible")
    return page.inner_text("#message")


def drop_file(page, target: str, path: Path, mime: str) -> None:
    """Drag a file from the desktop onto `target`: a real `drop` event carrying a DataTransfer."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, type]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type}));
            return dt;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event(target, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


# ---- search by text -----------------------------------------------------------------------------


def test_text_search_shows_loaded_pictures_and_the_right_one_first(
    page, library_url, indexed_library
):
    search_text(page, library_url, "a red circle", types=("images",))
    shown = cards(page)
    assert len(shown) == 10, shown
    assert {c["kind"] for c in shown} == {"image"}  # the type box was ticked
    red_circles = indexed_library.photos_with("red", "circle")
    assert shown[0]["name"] in red_circles, (shown[0], red_circles)
    assert all(w > 0 for w in thumbnail_widths(page))
    assert re.match(r"10 results for “a red circle” in \d+ ms", page.inner_text("#summary"))
    assert "q=a+red+circle" in page.url  # the search can be linked and reloaded
    screenshot(page, "text-search")


def test_a_linked_search_runs_when_the_page_opens(page, library_url, indexed_library):
    page.goto(f"{library_url}?q=a+red+circle&type=image&k=10")
    wait_for_answer(page)
    assert page.input_value("#q") == "a red circle"
    assert page.is_checked("input[value=image]")
    assert cards(page)[0]["name"] in indexed_library.photos_with("red", "circle")


def test_the_header_says_what_the_collection_holds(page, library_url):
    page.goto(library_url)
    page.wait_for_function("() => /vectors/.test(document.querySelector('#status').textContent)")
    status = page.inner_text("#status")
    assert "16 image" in status and "1 video" in status and "model tiny" in status, status


# ---- search by picture --------------------------------------------------------------------------


def test_a_chosen_picture_finds_itself_first(page, library_url, indexed_library):
    photo = sorted(indexed_library.photos.glob("*.png"))[0]
    page.goto(library_url)
    page.set_input_files("#file", str(photo))
    wait_for_answer(page)
    shown = cards(page)
    assert shown[0]["name"] == photo.name, shown[:3]
    assert page.is_visible("#query-image")  # the person sees which picture they searched with
    assert page.evaluate("document.querySelector('#query-image').naturalWidth") > 0
    assert all(w > 0 for w in thumbnail_widths(page)[:4])
    assert f"for picture {photo.name}" in page.inner_text("#summary")
    screenshot(page, "picture-search")


def test_a_dropped_picture_finds_itself_first(page, library_url, indexed_library):
    photo = sorted(indexed_library.photos.glob("*.jpg"))[0]
    search_text(page, library_url, "a blue square")  # a text search first, then a picture
    drop_file(page, "#drop", photo, "image/jpeg")
    page.wait_for_function(
        "() => /for picture/.test(document.querySelector('#summary').textContent)"
    )
    assert cards(page)[0]["name"] == photo.name
    # what is on screen is a picture search: no leftover text query, in the box or the address
    assert page.input_value("#q") == "" and "q=" not in page.url


def test_a_picture_dropped_anywhere_on_the_page_searches_too(page, library_url, indexed_library):
    photo = sorted(indexed_library.photos.glob("*.jpg"))[1]
    page.goto(library_url)
    drop_file(page, "header", photo, "image/jpeg")
    wait_for_answer(page)
    assert cards(page)[0]["name"] == photo.name
    assert page.url.startswith(library_url)  # the browser did not navigate away to the file


# ---- video -------------------------------------------------------------------------------------


def test_a_video_hit_plays_from_its_moment(page, library_url, indexed_library):
    start, end = indexed_library.video_spans["red circle"]
    hit = search_text(page, library_url, "a red circle", types=("video",))["results"][0]
    first = cards(page)[0]
    assert first["name"] == indexed_library.video.name and "keyframe" in first["kind"], first
    assert re.fullmatch(r"00:00:0\d–00:00:\d\d", first["span"]), first
    assert thumbnail_widths(page)[0] > 0  # the keyframe is shown on the card

    page.locator("#results li.card .thumb").first.click()
    video = page.locator("#viewer video")
    video.wait_for()
    assert page.is_visible("#viewer")
    state = video.evaluate(
        """v => new Promise((ok, fail) => {
            // where playback began (it autoplays, so currentTime may already have moved on)
            const began = () => v.played.length ? v.played.start(0) : v.currentTime;
            const report = () => ok({time: began(), width: v.videoWidth, error: null});
            if (v.readyState >= 2) return report();
            v.addEventListener('loadeddata', report, {once: true});
            v.addEventListener('error', () => fail(new Error('cannot play: ' + v.error?.message)), {once: true});
        })"""
    )
    assert state["width"] == 320, state
    # the player opens at the hit's start, and that start is where the red circle comes on
    assert abs(state["time"] - hit["start"]) < 0.15, (state, hit)
    assert start - 0.5 <= hit["start"] <= start + 0.5 and hit["end"] <= end + 0.5, hit
    # it plays on into the moment, where the person sees the red circle
    page.wait_for_function(
        "t => document.querySelector('#viewer video').currentTime > t", arg=start + 0.3
    )
    video.evaluate("v => v.pause()")
    r, g, b = video.evaluate(
        """v => {
            const c = document.createElement('canvas');
            [c.width, c.height] = [v.videoWidth, v.videoHeight];
            const ctx = c.getContext('2d');
            ctx.drawImage(v, 0, 0);
            return [...ctx.getImageData(c.width / 2, c.height / 2, 1, 1).data.slice(0, 3)];
        }"""
    )
    assert r > 150 and g < 100 and b < 100, (r, g, b)  # the centre of the frame is red
    screenshot(page, "video-moment")
    page.click("#viewer-close")
    assert not page.is_visible("#viewer")


def test_a_video_that_cannot_be_played_says_so(page, library_url, indexed_library):
    search_text(page, library_url, "a red circle", types=("video",))
    page.route("**/api/items/*/file", lambda route: route.abort("connectionrefused"))
    page.locator("#results li.card .thumb").first.click()
    note = page.locator("#viewer .message")
    note.wait_for()
    assert f"cannot play {indexed_library.video.name}" in note.inner_text()
    assert note.get_by_role("link", name="open the file").is_visible()


# ---- errors are shown to the person ------------------------------------------------------------


def test_an_empty_query_asks_for_one(page, library_url):
    page.goto(library_url)
    page.press("#q", "Enter")
    assert "Type what you are looking for" in error_message(page)


def test_a_broken_picture_is_refused_with_its_name(page, library_url, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("these are notes, not a picture\n" * 20)
    page.goto(library_url)
    page.set_input_files("#file", str(fake))
    text = error_message(page)
    assert "holiday.png" in text, text
    assert page.locator("#results li").count() == 0
    # no broken preview: the picture is hidden, not left as an empty box
    assert page.evaluate("document.querySelector('#query-image').hidden")
    screenshot(page, "error-bad-picture")


def test_a_file_that_is_not_a_picture_is_refused_before_upload(page, library_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("milk, eggs\n")
    page.goto(library_url)
    drop_file(page, "#drop", notes, "text/plain")
    text = error_message(page)
    assert "notes.txt is not a picture" in text, text


def test_a_server_that_went_away_is_reported(page, library_url):
    page.goto(library_url)
    page.route("**/api/search*", lambda route: route.abort("connectionrefused"))
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    text = error_message(page)
    assert "mmsearch serve" in text, text  # says what to do, not just "Failed to fetch"


def test_an_empty_collection_says_to_index_a_folder(page, tmp_path, mmsearch_server):
    home = tmp_path / "empty-home"
    home.mkdir()
    with mmsearch_server(home, ready=False) as url:
        page.goto(url)
        page.wait_for_function("() => !/^…$/.test(document.querySelector('#status').textContent)")
        assert "index a folder" in page.inner_text("#status").lower()
        assert "error" in page.get_attribute("#status", "class")  # shown as an error
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        text = error_message(page)
        screenshot(page, "error-empty-collection")
    assert "index a folder" in text.lower(), text


# ---- filters and result feedback ---------------------------------------------------------------


def answer_to(page, action) -> dict:
    """Do what a person does (tick, type, click) and wait until the page shows the new answer."""
    with page.expect_response(re.compile(r"/api/search")) as answer:
        action()
    settled(page)
    return answer.value.json()


def settled(page) -> None:
    """Until no search is in flight (the result list is not marked busy)."""
    page.wait_for_function("() => !document.querySelector('#results[aria-busy=true]')")


def card_button(page, index: int, name: str):
    """A button on the index-th result card, found by its label."""
    return page.locator("#results li.card").nth(index).get_by_role("button", name=name)


def card_dates(page) -> list[str]:
    return page.eval_on_selector_all("#results li.card .date", "ds => ds.map(d => d.textContent)")


def filter_by(page, box: str, value: str) -> dict:
    """Type into a filter box and press Enter, as a person would."""
    page.fill(box, value)
    return answer_to(page, lambda: page.press(box, "Enter"))


def test_a_path_filter_keeps_only_matching_files(page, library_url, indexed_library):
    search_text(page, library_url, "a red circle")
    assert any(not c["name"].endswith(".png") for c in cards(page))  # unfiltered: jpg and mp4 too
    filter_by(page, "#path", "*.png")
    shown = cards(page)
    pngs = {n for n in indexed_library.captions if n.endswith(".png")}
    assert {c["name"] for c in shown} == pngs, shown  # all of them, and nothing else
    assert "path=*.png" in page.url.replace("%2A", "*")
    # a folder works too: the clips folder holds only the video
    filter_by(page, "#path", str(indexed_library.video.parent))
    assert {c["name"] for c in cards(page)} == {indexed_library.video.name}
    screenshot(page, "filter-folder")


def test_dates_filter_and_sort_the_cards(page, library_url, indexed_library):
    days = indexed_library.days
    search_text(page, library_url, "a red circle", types=("images",), k="24")
    page.fill("#after", "2021-01-10")
    answer_to(page, lambda: page.fill("#before", "2021-01-14"))  # a full date applies at once
    shown = cards(page)
    expected = {n for n, day in days.items() if "2021-01-10" <= day < "2021-01-14"}
    assert {c["name"] for c in shown} == expected and len(expected) == 4, shown
    assert all("2021-01-10" <= d < "2021-01-14" for d in card_dates(page))

    page.fill("#after", "")
    answer_to(page, lambda: page.fill("#before", ""))
    answer_to(page, lambda: page.select_option("#sort", "-date"))  # newest first
    newest = card_dates(page)
    assert newest == sorted(newest, reverse=True) and len(set(newest)) == 16, newest
    assert cards(page)[0]["name"] == indexed_library.photo_names()[-1]
    screenshot(page, "sort-newest")
    answer_to(page, lambda: page.select_option("#sort", "date"))  # oldest first
    assert card_dates(page) == sorted(newest)
    assert "sort=date" in page.url


def test_more_like_this_shows_similar_pictures_not_the_card_itself(
    page, library_url, indexed_library
):
    search_text(page, library_url, "a green star", types=("images",))
    liked = cards(page)[1]["name"]
    item = page.locator("#results li.card").nth(1).get_attribute("data-item")
    data = answer_to(page, card_button(page, 1, "More like this").click)
    shown = [c["name"] for c in cards(page)]
    assert liked not in shown and len(shown) == 10, shown
    assert [h["path"].split("/")[-1] for h in data["results"]] == shown  # shows what the API said

    # similar: the first picture shows the same kind of shape as the liked one
    def shapes(name: str) -> set[str]:
        return {o["shape"] for o in indexed_library.captions[name]["labels"]["objects"]}

    assert shapes(shown[0]) & shapes(liked), (liked, shapes(liked), shown[0], shapes(shown[0]))
    # the query in the header is the liked picture, by name and with its picture
    chip = page.locator("#terms .term")
    assert chip.count() == 1 and liked in chip.inner_text() and "more like" in chip.inner_text()
    assert chip.locator("img").evaluate("img => img.complete && img.naturalWidth") > 0
    assert page.input_value("#q") == ""
    assert f"like {liked} in" in page.inner_text("#summary")
    assert f"like={item}" in page.url and "q=" not in page.url
    assert page.is_checked("input[value=image]")  # the filters stayed
    screenshot(page, "more-like-this")

    # "less like this" on the first card pushes it out, and says so in the header
    first = shown[0]
    answer_to(page, card_button(page, 0, "Less like this").click)
    assert first not in [c["name"] for c in cards(page)]
    assert "less like" in page.locator("#terms .term.minus").inner_text()
    assert "unlike=" in page.url
    # removing the liked item leaves nothing to search for: the page is cleared, filters stay
    page.locator("#terms .term.plus .remove").click()
    assert page.locator("#terms .term").count() == 0 and page.locator("#results li").count() == 0
    assert "like=" not in page.url and "type=image" in page.url


def test_the_filters_survive_a_reload(page, library_url, indexed_library):
    search_text(page, library_url, "a red circle", types=("images",), k="24")
    page.fill("#path", "*.jpg")
    page.fill("#after", "2021-01-03")
    page.fill("#not", "night, stars")
    page.select_option("#sort", "-date")
    page.check("#cutoff")
    answer_to(page, lambda: page.press("#path", "Enter"))
    before = cards(page)
    assert before and all(c["name"].endswith(".jpg") for c in before)
    page.reload()
    wait_for_answer(page)
    settled(page)
    assert page.input_value("#q") == "a red circle"
    assert page.input_value("#path") == "*.jpg" and page.input_value("#after") == "2021-01-03"
    assert page.input_value("#not") == "night, stars" and page.input_value("#sort") == "-date"
    assert page.is_checked("#cutoff") and page.is_checked("input[value=image]")
    assert page.input_value("#k") == "24"
    assert cards(page) == before
    screenshot(page, "filters-reloaded")


def test_a_picture_search_keeps_the_filters(page, library_url, indexed_library):
    photo = sorted(indexed_library.photos.glob("*.jpg"))[0]
    page.goto(f"{library_url}?path=*.png&k=10")
    page.set_input_files("#file", str(photo))
    wait_for_answer(page)
    shown = cards(page)
    assert shown and all(c["name"].endswith(".png") for c in shown), shown
    assert "path=" in page.url


def test_more_results_fetches_the_next_page(page, library_url, indexed_library):
    search_text(page, library_url, "a blue square", types=("images",), k="10")
    first = [c["name"] for c in cards(page)]
    answer_to(page, lambda: page.click("text=More results"))
    shown = [c["name"] for c in cards(page)]
    assert shown[:10] == first and len(shown) == 16 == len(set(shown)), shown
    assert not page.is_visible("#more")  # all 16 photos are on the page: nothing more to fetch
    assert page.inner_text("#summary").startswith("16 results")


def test_why_shows_a_cards_score_parts(page, library_url):
    hit = search_text(page, library_url, "a red circle", types=("images",))["results"][0]
    first = page.locator("#results li.card").first
    assert not first.locator(".parts").is_visible()
    first.get_by_text("why").click()
    parts = first.locator(".parts").inner_text()
    clip = hit["parts"]["clip"]
    assert f"clip {clip['score']:.3f} · #{clip['rank']}" in " ".join(parts.split()), parts
    screenshot(page, "why")


def test_dates_that_cannot_match_are_reported(page, library_url):
    search_text(page, library_url, "a red circle")
    page.fill("#after", "2021-02-01")
    answer_to(page, lambda: page.fill("#before", "2021-01-01"))
    text = error_message(page)
    assert "after" in text and "before" in text, text  # the API's reason, on the page
    assert page.locator("#results li").count() == 0
    screenshot(page, "error-dates")


def test_a_link_with_a_malformed_date_says_so(page, library_url):
    page.goto(f"{library_url}?q=a+red+circle&after=last+week")
    text = error_message(page)
    assert "after=last week" in text and "2024-06-01" in text, text
    assert page.locator("#results li").count() == 0  # not silently searched without the filter


# ---- feedback, personalisation and diversity ----------------------------------------------------


@pytest.fixture(scope="module")
def feedback_url(indexed_library, mmsearch_server, tmp_path_factory) -> Iterator[str]:
    """A server on a copy of the library's home: feedback written here leaves the shared one as it was."""
    home = tmp_path_factory.mktemp("feedback") / "home"
    shutil.copytree(indexed_library.home, home)
    with mmsearch_server(home) as url:
        yield url


def names(page) -> list[str]:
    return [c["name"] for c in cards(page)]


def judge(page, index: int, good: bool) -> str:
    """Press 👍 (or 👎) on the index-th card and wait until the page says it was recorded."""
    card = page.locator("#results li.card").nth(index)
    with page.expect_response(re.compile(r"/api/feedback$")) as answer:
        card.get_by_role("button", name="good result" if good else "bad result").click()
    assert answer.value.ok, answer.value.text()
    card.locator(".judged").wait_for()
    return card.locator(".name").inner_text()


def taught(page) -> list[str]:
    """The rows of the "what I taught it" panel as a person reads them, newest first."""
    if not page.locator("#taught").evaluate("d => d.open"):
        page.get_by_text("what I taught it").click()
    page.wait_for_function(
        """() => !document.querySelector('#taught[aria-busy=true]')
                 && document.querySelector('#taught-who').textContent"""
    )
    return page.eval_on_selector_all(
        "#taught-list li",
        "rows => rows.map(li => [...li.children].map(c => c.textContent).filter(Boolean).join(' '))",
    )


def pressed(page, index: int) -> dict[str, bool]:
    card = page.locator("#results li.card").nth(index)
    return {
        kind: card.locator(f".{kind}").get_attribute("aria-pressed") == "true"
        for kind in ("good", "bad")
    }


def test_thumbs_reorder_that_users_search_and_no_one_elses(page, feedback_url):
    first = search_text(page, f"{feedback_url}?user=alice", "a red circle", types=("images",))
    before = names(page)
    assert page.input_value("#user") == "alice" and "user=alice" in page.url
    # 👍 on the last three cards, 👎 on the first two: each is recorded and stays pressed
    liked = [judge(page, i, True) for i in (9, 8, 7)]
    disliked = [judge(page, i, False) for i in (0, 1)]
    assert pressed(page, 9) == {"good": True, "bad": False}
    assert pressed(page, 0) == {"good": False, "bad": True}
    assert page.locator("#results li.card").nth(1).locator(".judged").inner_text() == "5 judgements"
    assert names(page) == before  # the cards do not jump under the pointer
    rows = taught(page)
    assert len(rows) == 5 and rows[0] == f"bad {disliked[1]} for “a red circle”", rows
    assert {r.split()[1] for r in rows} == {*liked, *disliked}
    assert "As alice: 3 good, 2 bad" in page.inner_text("#taught-who")
    screenshot(page, "feedback-recorded")

    # refresh: the same search, now in alice's order; the judged cards stay pressed
    answer = answer_to(page, lambda: page.get_by_role("button", name="refresh").click())
    after = names(page)
    assert after != before, (before, after)  # the top 50 are reordered: others may come in
    assert disliked[0] not in after or after.index(disliked[0]) > before.index(disliked[0])
    assert min(after.index(n) for n in liked if n in after) < 7  # a liked one came up
    assert any("personal" in hit["parts"] for hit in answer["results"])
    shown = next(n for n in liked if n in after)
    assert pressed(page, after.index(shown)) == {"good": True, "bad": False}
    assert not page.is_visible("#refresh")
    screenshot(page, "feedback-reordered")

    # another user name sees the plain order, and nothing taught
    page.fill("#user", "bob")
    answer_to(page, lambda: page.press("#user", "Enter"))
    assert names(page) == before and "user=bob" in page.url
    assert taught(page) == [] and "Nothing taught yet as bob" in page.inner_text("#taught-who")
    assert not any(pressed(page, i)["good"] or pressed(page, i)["bad"] for i in range(10))

    # alice again, remembered by the browser; "personal" off gives her the plain order too
    page.goto(f"{feedback_url}?q=a+red+circle&type=image&k=10")
    assert page.input_value("#user") == "bob"  # the last name typed, from localStorage
    wait_for_answer(page)
    page.fill("#user", "alice")
    answer_to(page, lambda: page.press("#user", "Enter"))
    assert names(page) == after
    with page.expect_request(re.compile(r"/api/search\?.*personal=false")):
        answer = answer_to(page, lambda: page.get_by_role("switch", name="personal").uncheck())
    assert names(page) == before and "personal=false" in page.url
    assert not any("personal" in hit["parts"] for hit in answer["results"])
    assert [h["path"] for h in answer["results"]] == [h["path"] for h in first["results"]]


def test_forget_all_empties_what_i_taught_it(page, feedback_url):
    search_text(page, f"{feedback_url}?user=carol", "a blue square", types=("images",))
    kept = judge(page, 2, True)
    assert page.locator("#results li.card").nth(2).locator(".judged").inner_text() == "1 judgement"
    rows = taught(page)
    assert rows == [f"good {kept} for “a blue square”"], rows
    assert page.inner_text("#taught-count") == "(1)"
    screenshot(page, "taught-panel")

    page.once("dialog", lambda d: d.dismiss())  # "Forget all ...?" -> Cancel keeps everything
    page.get_by_role("button", name="forget all").click()
    assert taught(page) == rows

    questions = []
    page.once("dialog", lambda d: (questions.append(d.message), d.accept()))
    with page.expect_response(lambda r: r.request.method == "DELETE"):
        page.get_by_role("button", name="forget all").click()
    page.wait_for_function(
        "() => /Nothing taught/.test(document.querySelector('#taught-who').textContent)"
    )
    assert "1 judgement taught as carol" in questions[0], questions
    assert taught(page) == [] and page.inner_text("#taught-count") == ""
    assert not page.is_visible("#forget")
    assert pressed(page, 2) == {"good": False, "bad": False}
    screenshot(page, "taught-forgotten")


def test_the_reranker_switches_choose_the_rerankers(page, library_url):
    default = search_text(page, library_url, "a red circle", types=("images",))
    assert page.is_checked("#diversity") and page.is_checked("#itm") and "rerank=" not in page.url
    assert page.is_visible("#itm-switch")  # tiny has tiny-itm, and the pictures have patches
    assert any("itm" in hit["parts"] for hit in default["results"])
    with page.expect_request(re.compile(r"/api/search\?.*rerank=itm")):
        only_itm = answer_to(page, lambda: page.get_by_role("switch", name="diversity").uncheck())
    assert not any("mmr" in hit["parts"] for hit in only_itm["results"])
    assert any("itm" in hit["parts"] for hit in only_itm["results"])
    with page.expect_request(re.compile(r"/api/search\?.*rerank=none")):
        plain = answer_to(page, lambda: page.get_by_role("switch", name="check matches").uncheck())
    assert not any({"mmr", "itm"} & set(hit["parts"]) for hit in plain["results"])
    assert "rerank=none" in page.url
    page.reload()  # kept in the address
    wait_for_answer(page)
    assert not page.is_checked("#diversity") and not page.is_checked("#itm")
    with page.expect_request(re.compile(r"/api/search\?.*rerank=mmr")):
        answer_to(page, lambda: page.get_by_role("switch", name="diversity").check())
    with page.expect_request(lambda r: "/api/search?" in r.url and "rerank" not in r.url):
        answer_to(page, lambda: page.get_by_role("switch", name="check matches").check())


def test_a_judgement_that_fails_says_so(page, library_url):
    search_text(page, library_url, "a red circle", types=("images",))
    name = cards(page)[0]["name"]
    page.route(
        "**/api/feedback",
        lambda route: route.fulfill(
            status=404,
            json={"error": "No item 1 in this collection (it may have been re-indexed)."},
        ),
    )
    card_button(page, 0, "good result").click()
    text = error_message(page)
    assert name in text and "re-indexed" in text, text
    assert pressed(page, 0) == {"good": False, "bad": False}  # nothing was recorded


def test_a_tag_on_a_result_filters_by_it(page, library_url):
    first = search_text(page, library_url, "a red circle", types=("images",))
    tag = first["results"][0]["tags"][0]
    chips = page.locator("#results li.card").first.locator(".tags .tag")
    assert chips.first.inner_text() == tag
    with page.expect_request(re.compile(rf"/api/search\?.*tag={re.escape(tag)}")):
        tagged = answer_to(page, lambda: chips.first.click())
    assert tagged["results"] and all(tag in hit["tags"] for hit in tagged["results"])
    assert page.input_value("#tags") == tag and f"tag={tag}" in page.url
    options = page.eval_on_selector_all("#tag-names option", "os => os.map(o => o.value)")
    assert tag in options  # offered while typing, from /api/tags
    page.reload()  # kept in the address
    wait_for_answer(page)
    assert page.input_value("#tags") == tag
