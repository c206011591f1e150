"""The app in headless Chromium (Debian's /usr/bin/chromium), driven by Playwright.

Skips with a reason when Chromium or Playwright is missing. Set SAVE_SCREENSHOT=1 to refresh
assets/screenshot.png (the picture in the README) from this run.
"""

import json
import os
import shutil

import pytest


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
                                reason=f"Chromium not found at {CHROMIUM}; install Debian's chromium package")


@pytest.fixture(scope="module")
def url(app_url):
    return app_url


@pytest.fixture(scope="module")
def page(url, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1250})
        page.goto(url, wait_until="load")
        page.locator("#message textarea").wait_for()
        yield page
        browser.close()


def bot_messages(page):
    return page.locator("#chatbot .message-row.bot-row")


def user_messages(page):
    return page.locator("#chatbot .message-row.user-row")


def timeline_src(page) -> str:
    images = page.locator("#timeline img")
    return images.first.get_attribute("src") if images.count() else ""


def send(page, text: str) -> list[str]:
    """Type and send a message; return the reply's text as seen while it streamed."""
    before = bot_messages(page).count()
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()
    page.wait_for_function(
        "n => document.querySelectorAll('#chatbot .message-row.bot-row').length > n",
        arg=before, timeout=30_000)
    seen = []
    last = bot_messages(page).last
    for _ in range(200):
        text_now = last.inner_text()
        if not seen or text_now != seen[-1]:
            seen.append(text_now)
        if page.locator("#chatbot .generating, .progress-text").count() == 0 and len(seen) > 1:
            break
        page.wait_for_timeout(25)
    page.wait_for_timeout(1500)
    seen.append(last.inner_text())
    return seen


def test_chat_streams_memory_panel_changes_undo_and_reset(page):
    assert "LSTM Memory Chat" in page.content()
    page.get_by_text("No turns yet").wait_for(timeout=30_000)
    empty_timeline = timeline_src(page)
    # A fixed seed whose first reply is 137 characters long: long enough to watch it stream.
    page.get_by_text("Sampling and memory").click()
    page.get_by_label("Seed", exact=False).fill("4")
    page.get_by_text("Sampling and memory").click()
    seen = send(page, "ROMEO:\nWhat light through yonder window breaks?")
    assert len(seen) >= 3, seen  # the reply grew while we watched: it streamed
    page.get_by_text("Memory panel after turn 1").wait_for(timeout=30_000)
    first_timeline = timeline_src(page)
    assert first_timeline and first_timeline != empty_timeline  # the memory panel changed
    send(page, "JULIET:\nIt is the east, and Juliet is the sun.")
    page.get_by_text("Memory panel after turn 2").wait_for(timeout=30_000)
    assert timeline_src(page) != first_timeline
    assert user_messages(page).count() == 2 and bot_messages(page).count() == 2
    assert page.locator("#heatmap img").count() == 1
    assert page.locator("#highlights").inner_text().strip()
    if os.environ.get("SAVE_SCREENSHOT"):
        page.screenshot(path=os.path.join(ROOT, "assets", "screenshot.png"), full_page=True)
    page.locator("#undo").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 1", timeout=30_000)
    assert "Undid the last turn" in page.locator("#notice").inner_text()
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)
    assert "Fresh conversation" in page.locator("#notice").inner_text()


def test_html_in_messages_is_shown_as_text(page):
    send(page, "<b id='injected'>bold</b> <script>window.pwned = 1</script> [link](http://example.com)")
    assert page.locator("#injected").count() == 0
    assert page.evaluate("() => window.pwned === undefined")
    assert page.locator("#chatbot a[href='http://example.com']").count() == 0
    assert "<b id='injected'>bold</b>" in user_messages(page).last.inner_text()


def test_a_bad_model_id_is_reported_in_the_page_and_the_chat_goes_on(page):
    page.get_by_text("Model", exact=True).click()
    # The bundled model's int8.json allows int8 steps on ONNX Runtime, and the page says so.
    with open(os.path.join(ROOT, "assets", "shakespeare", "int8.json"), encoding="utf-8") as f:
        rise = json.load(f)["loss_rise"]
    status = page.locator("#model-status").inner_text()
    assert f"int8 steps: measured loss rise {rise:+.4f}" in status and "steps on ONNX Runtime" in status
    page.get_by_label("Hub repo id", exact=False).fill("nobody/no-such-model")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("The current model keeps working").wait_for(timeout=30_000)
    assert "Could not reach the Hugging Face Hub" in page.content()
    before = bot_messages(page).count()
    send(page, "ROMEO:\nStill there?")
    assert bot_messages(page).count() == before + 1
