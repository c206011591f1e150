"""The app in headless Chromium (Debian's /usr/bin/chromium), driven by Playwright.

Skips with a reason when Chromium or Playwright is missing. Set SAVE_SCREENSHOT=1 to refresh
assets/screenshot.png (the picture in the README) from this run.
"""

import json
import os
import re
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
                                reason=f"Chromium not found at {CHROMIUM}; install Debian's chromium package")


@pytest.fixture(scope="module")
def url(app_url):
    return app_url


# Counts the updates Gradio streams to the page: every response of the queue's event stream is
# copied (as the page reads it) into window.__streams.
RECORD_STREAMS = """
window.__streams = [];
const originalFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await originalFetch(...args);
  const url = String((args[0] && args[0].url) || args[0]);
  if (!url.includes('/queue/data') || !response.body) return response;
  const [copy, forPage] = response.body.tee();
  const record = {text: ''};
  window.__streams.push(record);
  (async () => {
    const reader = copy.getReader(), decoder = new TextDecoder();
    for (;;) { const {done, value} = await reader.read(); if (done) break; record.text += decoder.decode(value); }
  })();
  return new Response(forPage, {status: response.status, statusText: response.statusText, headers: response.headers});
};
window.__events = () => {  // the messages received so far, by event: {event_id: [msg, ...]}
  const events = {};
  for (const record of window.__streams) {
    for (const line of record.text.split('\\n')) {
      if (!line.startsWith('data: {')) continue;
      try { const m = JSON.parse(line.slice(6)); if (m.event_id) (events[m.event_id] = events[m.event_id] || []).push(m.msg); }
      catch (e) { /* a line still arriving */ }
    }
  }
  return events;
};
"""


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
        page.add_init_script(RECORD_STREAMS)
        page.goto(url, wait_until="load")
        page.locator("#message textarea").wait_for()
        yield page
        browser.close()


def bot_messages(page):
    return page.locator("#chatbot .message-row.bot-row")


def user_messages(page):
    return page.locator("#chatbot .message-row.user-row")


def timeline_src(page) -> str:
    """The timeline's drawing (inline SVG), to tell one timeline from the next."""
    return page.evaluate("() => (document.querySelector('#timeline svg') || {}).outerHTML || ''")


# True once every event the page has started has completed (its messages all arrived).
IDLE = "() => Object.values(window.__events()).every(msgs => msgs.includes('process_completed'))"
# True once an event not in `seen` has streamed updates and completed.
REPLY_COMPLETED = """seen => Object.entries(window.__events()).some(([id, msgs]) => !seen.includes(id)
    && msgs.includes('process_generating') && msgs.includes('process_completed'))"""
# True once an event not in `seen` has completed (streamed or not).
EVENT_COMPLETED = """seen => Object.entries(window.__events()).some(([id, msgs]) => !seen.includes(id)
    && msgs.includes('process_completed'))"""


def streamed_events(page) -> dict[str, list[dict]]:
    """The messages Gradio streamed to the page so far, by event."""
    events = {}
    for record in page.evaluate("window.__streams"):
        for line in record["text"].split("\n"):
            try:
                message = json.loads(line[len("data: "):]) if line.startswith("data: {") else None
            except ValueError:  # a line still arriving
                message = None
            if message and message.get("event_id"):
                events.setdefault(message["event_id"], []).append(message)
    return events


def send(page, text: str) -> list[dict]:
    """Type and send a message, wait until the reply and the memory panel are done; return the
    streamed updates of the reply, as Gradio sent them to the page."""
    page.wait_for_function(IDLE, timeout=60_000)  # earlier events (a panel refresh) are done
    turns = user_messages(page).count() + 1
    seen = set(streamed_events(page))
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()
    page.get_by_text(f"Memory panel after turn {turns}").wait_for(timeout=60_000)  # chained after the reply
    page.wait_for_function(REPLY_COMPLETED, arg=sorted(seen), timeout=60_000)
    new = {k: v for k, v in streamed_events(page).items() if k not in seen}
    replies = [messages for messages in new.values() if any(m["msg"] == "process_generating" for m in messages)]
    assert len(replies) == 1 and replies[0][-1]["msg"] == "process_completed", new
    return [m for m in replies[0] if m["msg"] == "process_generating"]


def set_sampling(page, **values):
    page.get_by_text("Sampling", exact=True).click()
    for label, value in values.items():
        page.get_by_label(label, exact=False).fill(value)
    page.get_by_text("Sampling", exact=True).click()


# Watches the panel: every time the DOM under #timeline or #heatmap changes, whether the timeline's
# drawing and the heatmap are there once the change is done (a MutationObserver runs after the
# whole update, so a part replaced in one step is never seen missing; one rebuilt across frames is).
WATCH_PANEL = """() => {
  window.__missing = [];
  window.__checks = 0;
  const check = () => {
    window.__checks += 1;
    if (!document.querySelector('#timeline svg')) window.__missing.push('timeline');
    if (!document.querySelector('#heatmap table')) window.__missing.push('heatmap');
  };
  const observer = new MutationObserver(check);
  for (const id of ['#timeline', '#heatmap']) {
    observer.observe(document.querySelector(id), {childList: true, subtree: true, attributes: true});
  }
}"""


def test_the_panel_keeps_its_figures_while_it_refreshes(page):
    page.get_by_text("No turns yet").wait_for(timeout=30_000)
    set_sampling(page, Seed="4")
    send(page, "ROMEO:\nWhat light through yonder window breaks?")
    first = timeline_src(page)
    page.evaluate(WATCH_PANEL)
    for text in ("JULIET:\nIt is the east, and Juliet is the sun.", "ROMEO:\nShe speaks."):
        send(page, text)
    assert timeline_src(page) != first  # the panel was redrawn twice
    assert page.evaluate("window.__checks") >= 2  # the watch saw the redraws...
    assert page.evaluate("window.__missing") == []  # ...and never a gap meanwhile
    page.locator("#reset").click()  # the next test starts from an empty conversation on this page
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0",
                           timeout=30_000)
    page.get_by_text("No turns yet").wait_for(timeout=30_000)


def test_chat_memory_panel_changes_undo_and_reset(page):
    assert "LSTM Memory Chat" in page.content()
    page.get_by_text("No turns yet").wait_for(timeout=30_000)
    empty_timeline = timeline_src(page)
    set_sampling(page, Seed="4")
    send(page, "ROMEO:\nWhat light through yonder window breaks?")
    assert "The unit inspector shows unit" in page.locator("#panel-status").inner_text()  # a unit worth seeing
    first_timeline = timeline_src(page)
    assert first_timeline and first_timeline != empty_timeline  # the memory panel changed
    assert bot_messages(page).last.inner_text().strip()
    send(page, "JULIET:\nIt is the east, and Juliet is the sun.")
    assert timeline_src(page) != first_timeline
    assert user_messages(page).count() == 2 and bot_messages(page).count() == 2
    assert page.locator("#heatmap table").count() == 1  # the heatmap, a value on every cell's hover
    assert page.locator("#heatmap td[title^='unit ']").count() >= 20
    assert page.locator("#highlights").inner_text().strip()
    if os.environ.get("SAVE_SCREENSHOT"):
        page.screenshot(path=os.path.join(ROOT, "assets", "screenshot.png"), full_page=True)
    page.locator("#undo").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 1", timeout=30_000)
    assert "Undid the last turn" in page.locator("#notice").inner_text()
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)
    assert "Fresh conversation" in page.locator("#notice").inner_text()


def test_each_reply_shows_its_memory_badge_and_the_fresh_memory_reply(page):
    send(page, "ROMEO:\nWhat light through yonder window breaks?")
    send(page, "JULIET:\nIt is the east, and Juliet is the sun.")
    # The fresh-memory reply is computed after the reply has streamed, in the same event.
    page.wait_for_function("() => document.querySelectorAll('#chatbot .memory-note').length === 2", timeout=60_000)
    notes = page.locator("#chatbot .memory-note")
    assert "fresh memory" in notes.first.inner_text() and "nothing carried yet" in notes.first.inner_text()  # turn 1
    last = notes.last
    assert "memory on" in last.inner_text()
    if last.locator("details.fresh-reply").count():  # the memory changed a long reply: open the comparison
        last.locator("summary").click()
        assert last.locator(".fresh-text").is_visible() and last.locator(".fork").count() == 1
    elif last.locator(".fresh-inline").count():  # a short one: beside the reply already
        assert last.locator(".fresh-inline").is_visible()
    else:
        assert "same reply" in last.inner_text()
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)


def test_the_chat_s_own_icons_undo_retry_and_clear_the_memory(page):
    send(page, "ROMEO:\nSpeak again.")
    send(page, "JULIET:\nI hear thee.")
    page.locator("#chatbot button[aria-label='Undo']").last.click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 1", timeout=30_000)
    page.get_by_text("Undid the last turn").wait_for(timeout=30_000)
    page.wait_for_function(IDLE, timeout=60_000)
    page.locator("#chatbot button[aria-label='Retry']").last.click()
    page.get_by_text("Resampled the last reply").wait_for(timeout=30_000)
    page.wait_for_function(IDLE, timeout=60_000)
    page.locator("#chatbot button[aria-label='Clear']").first.click()  # the trash can: a fresh memory too
    page.get_by_text("Fresh conversation: transcript and memory cleared").wait_for(timeout=30_000)
    page.get_by_text("No turns yet").wait_for(timeout=30_000)  # the panel: the memory is fresh
    assert user_messages(page).count() == 0


def test_an_out_of_range_unit_is_clamped_and_the_panel_stays_up(page):
    send(page, "ROMEO:\nWhich unit remembers?")
    unit = page.get_by_label("Unit (0-767)")
    unit.fill("9999")
    unit.press("Enter")
    page.wait_for_function("() => document.querySelector('#highlights') && "
                           "[...document.querySelectorAll('input[type=number]')].some(e => e.value === '767')",
                           timeout=30_000)
    page.wait_for_function(IDLE, timeout=60_000)
    assert page.get_by_text("Error", exact=True).count() == 0
    before = page.locator("#highlights").inner_html()
    unit.press("ArrowDown")  # the arrows update the picture too
    page.wait_for_function("() => [...document.querySelectorAll('input[type=number]')].some(e => e.value === '766')",
                           timeout=30_000)
    page.wait_for_function("before => document.querySelector('#highlights').innerHTML !== before", arg=before,
                           timeout=30_000)
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)


def test_found_units_can_be_clicked_and_reset_clears_them(page):
    send(page, "ROMEO:\nWhich unit counts the line?\nAnd which the word?")
    page.get_by_role("button", name="Find units").click()
    page.locator("#found-units").wait_for(state="visible", timeout=30_000)
    page.wait_for_function(IDLE, timeout=60_000)
    second = page.locator("#found-units label").nth(1)
    unit = second.inner_text().split()[1]
    second.click()
    page.wait_for_function("u => [...document.querySelectorAll('input[type=number]')].some(e => e.value === u)",
                           arg=unit, timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('#highlights').innerText.includes('Unit {unit} of layer')",
                           timeout=30_000)
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)
    # The units were found on the conversation Reset cleared: the list goes with it.
    page.locator("#found-units").wait_for(state="hidden", timeout=30_000)
    assert "Units whose cell state follows" not in page.content()


def test_enter_sends_shift_enter_breaks_the_line_and_an_empty_box_sends_nothing(page):
    page.wait_for_function(IDLE, timeout=60_000)
    box = page.locator("#message textarea")
    box.click()
    seen = sorted(streamed_events(page))
    box.press("Enter")
    # The empty message's event must have run before the next Enter: a second submit while the first
    # is still on its way is dropped by Gradio (trigger_mode "once"), and IDLE alone cannot see an
    # event whose first message has not arrived.
    page.wait_for_function(EVENT_COMPLETED, arg=seen, timeout=60_000)
    page.wait_for_function(IDLE, timeout=60_000)
    assert user_messages(page).count() == 0
    box.type("ROMEO:")
    box.press("Shift+Enter")
    box.type("Speak, speak.")
    assert box.input_value() == "ROMEO:\nSpeak, speak."
    box.press("Enter")
    page.get_by_text("Memory panel after turn 1").wait_for(timeout=60_000)
    page.wait_for_function(IDLE, timeout=60_000)
    assert user_messages(page).count() == 1 and box.input_value() == ""
    # The bubble is drawn after the events complete (the chatbot renders its markdown on its own
    # schedule, later on a busy machine): expect() waits for it. A pattern, not a string, so that
    # the line break is compared rather than normalised to a space.
    from playwright.sync_api import expect

    expect(user_messages(page).first).to_have_text(re.compile(r"^\s*ROMEO:\nSpeak, speak\.\s*$"), use_inner_text=True,
                                                   timeout=30_000)
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)


def test_the_reply_streams_into_the_page(page):
    # 3,000 characters without a stop sequence take a second or more to write, and the app sends
    # an update at least every 40 ms of it: many updates, each the reply so far.
    set_sampling(page, **{"number input for Max characters": "3000", "Stop sequence": ""})
    updates = send(page, "JULIET:\nO Romeo, Romeo!")
    assert len(updates) >= 5, updates[:2]
    reply = bot_messages(page).last.inner_text()
    assert len(reply) >= 2500  # the whole reply arrived (line breaks aside)
    set_sampling(page, **{"number input for Max characters": "500", "Stop sequence": "\\n\\n"})
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)


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
    assert "not in the local Hub cache and HF_HUB_OFFLINE is set" in page.content()
    before = bot_messages(page).count()
    send(page, "ROMEO:\nStill there?")
    assert bot_messages(page).count() == before + 1


def test_the_babi_model_s_guide_and_memory_test(page):
    """Picking the bAbI model changes the page's guide, and its memory test runs in the chat."""
    if not page.get_by_role("button", name="Load model").is_visible():
        page.get_by_text("Model", exact=True).click()
    page.get_by_label("Hub repo id", exact=False).fill("babi")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("remembers what you tell it", exact=False).wait_for(timeout=60_000)  # the intro follows
    assert page.locator("#model-picked input").input_value() == "babi"  # the picker shows what is served
    assert page.get_by_label("Hub repo id", exact=False).input_value() == ""
    assert "Mary went to the kitchen." in page.locator("#message textarea").get_attribute("placeholder")
    assert page.locator("#examples").get_by_text("Where is the milk?").count() == 1
    page.get_by_text("What this model does", exact=True).click()  # the guide: the sentence forms it knows
    page.locator("#guide-details").get_by_text("How many objects is Mary carrying?").wait_for(timeout=30_000)
    page.wait_for_function(IDLE, timeout=60_000)
    page.locator("#memory-test").click()
    page.locator("#verdict .verdict").wait_for(timeout=90_000)
    assert user_messages(page).count() == 4 and user_messages(page).last.inner_text().strip() == "Where is Mary?"
    verdict = page.locator("#verdict").inner_text()
    assert "with its memory" in verdict and "from a fresh memory" in verdict
    assert page.locator("#verdict .verdict-row.right .verdict-answer").inner_text() == "kitchen"
    assert page.locator("#verdict .verdict-row.wrong .verdict-answer").inner_text() == "I don't know."
    page.wait_for_function(IDLE, timeout=60_000)
    page.get_by_label("Hub repo id", exact=False).fill("shakespeare")  # back to the default for later tests
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("writes Shakespeare-like plays", exact=False).wait_for(timeout=60_000)
    assert page.locator("#model-picked input").input_value() == "shakespeare"
    assert "switches to the bAbI memory model" in page.locator("#verdict").inner_text()  # the verdict went too


def test_the_picker_shows_the_served_model_and_load_without_a_choice_changes_nothing(page):
    if not page.get_by_role("button", name="Load model").is_visible():
        page.get_by_text("Model", exact=True).click()
    picked, typed = page.locator("#model-picked input"), page.get_by_label("Hub repo id", exact=False)
    assert picked.input_value() == "shakespeare"  # what is served, not the first name in the list
    send(page, "ROMEO:\nStay a while.")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("Already serving shakespeare: nothing changed").wait_for(timeout=30_000)
    assert user_messages(page).count() == 1  # the conversation goes on
    # The last of the two the visitor used is the one that loads: typing clears the list, picking
    # from the list clears the box.
    typed.press_sequentially("nobody/typo")
    page.wait_for_function("() => document.querySelector('#model-picked input').value === ''", timeout=30_000)
    picked.click()
    page.locator("#model-picked li[role=option][aria-label=shakespeare]").click()
    page.wait_for_function("() => document.querySelector('#model-typed textarea').value === ''", timeout=30_000)
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("Already serving shakespeare: nothing changed").wait_for(timeout=30_000)
    assert user_messages(page).count() == 1
    # A text that is neither a path nor a repo id: what a repo id looks like.
    picked.fill("not a repo!!")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("a Hub repo id looks like user/name", exact=False).wait_for(timeout=30_000)
    assert "local path" not in page.locator("#model-status").inner_text() and user_messages(page).count() == 1
    page.wait_for_function(IDLE, timeout=60_000)
    page.locator("#reset").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row.user-row').length === 0", timeout=30_000)


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_the_memory_test_shows_its_verdict_on_the_first_screen(page, width, height):
    """A first visit, one click on the default page: the carried memory's answer and a fresh memory's,
    each judged, without scrolling; and on a phone, readable text and buttons a finger can hit."""
    visit = page.context.browser.new_page(viewport={"width": width, "height": height})
    try:
        visit.goto(page.url, wait_until="load")
        visit.locator("#message textarea").wait_for()
        visit.get_by_text("writes Shakespeare-like plays", exact=False).wait_for()
        visit.locator("#memory-test").click()
        visit.locator("#verdict .verdict").wait_for(timeout=120_000)
        assert visit.evaluate("() => window.scrollY") == 0
        box = visit.locator("#verdict .verdict").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, box
        assert visit.locator("#verdict .verdict-row.right .verdict-answer").inner_text() == "kitchen"
        assert visit.locator("#verdict .verdict-row.wrong .verdict-answer").inner_text() == "I don't know."
        visit.get_by_text("Model", exact=True).click()
        assert visit.locator("#model-picked input").input_value() == "babi"  # the test said it would switch
        # The short fresh-memory answer is beside the reply, nothing to open.
        note = visit.locator("#chatbot .memory-note").last
        note.locator(".fresh-inline").wait_for(timeout=30_000)
        assert "with memory: kitchen · fresh memory: I don't know." in note.inner_text()
        assert note.locator("details").count() == 0
        first = visit.locator("#chatbot .memory-note").first
        assert "fresh memory" in first.locator(".memory-badge").inner_text()  # turn 1 had nothing to carry
        if width < 700:
            visit.get_by_text("Memory panel after turn 4").wait_for(timeout=60_000)
            for button in ("#undo", "#retry", "#reset"):
                assert visit.locator(button).bounding_box()["height"] >= 40, button
            small = visit.evaluate("""() => {
                const found = [];
                for (const root of document.querySelectorAll('#heatmap, #highlights, #benefit-text, #verdict')) {
                  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
                  while (walker.nextNode()) {
                    const node = walker.currentNode;
                    const size = parseFloat(getComputedStyle(node.parentElement).fontSize);
                    if (node.textContent.trim() && size < 11) found.push([root.id, node.textContent.slice(0, 20), size]);
                  }
                }
                return found;
            }""")
            assert small == []
            # The timeline is a drawing scaled to the column: its smallest text, in CSS pixels there.
            from ui.actions import FIGURE_WIDTH_IN, MIN_FONT_PT

            shown = visit.evaluate("() => document.querySelector('#timeline svg').getBoundingClientRect().width")
            assert MIN_FONT_PT / 72 * shown / FIGURE_WIDTH_IN >= 11, shown
            cell = visit.locator("#heatmap td[title^='unit ']").first
            cell.scroll_into_view_if_needed()
            cell.click()  # a tap shows the value a mouse would see on hover
            caption = visit.locator("#tap-value")
            caption.wait_for(state="visible")
            assert caption.inner_text() == cell.get_attribute("title")
    finally:
        visit.close()
