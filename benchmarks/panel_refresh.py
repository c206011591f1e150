"""Memory panel refresh in the browser: how long after a reply the panel shows that turn, and
whether it blanks meanwhile.

    python benchmarks/panel_refresh.py [--model shakespeare] [--turns 30] [--at 1 12 30] [--reps 3]
                                       [--width 1440 --height 900] [--max-chars 200] [--seed 4]

Starts `python app.py` with the model (benchmarks/appserver.py: a free port, offline), opens the
page in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) through Playwright, sets the
Sampling accordion's seed and max characters, and sends --turns messages one after another as a
person would: typed in the box (Shift+Enter between lines), Enter, then waits for the reply and the
panel before the next. Each repetition is a fresh browser context, so a fresh session.

Every time is the page's own clock (performance.now()), taken by a script installed in the page:
- *reply done*: the reply event's `process_completed` as it reaches the page (what
  tests/test_browser.py waits for; it comes after the reply streamed and the fresh-memory reply
  was written), read from Gradio's queue stream as the page reads it;
- *panel shows turn N*: a MutationObserver sees "Memory panel after turn N" in #panel-status.

refresh = panel shows turn N - reply done, split into *result* (until the panel event's
`process_completed`, with the figures, reaches the page: the chained event sent, queued, computed
and sent back) and *draw* (from there to the status on the page). The panel event's
`process_starts` is no finer mark: on a busy machine it reaches the page in the same chunk as its
`process_completed`. The columns are medians over --reps, each on its own, so they need not add
up. *after text* is the panel's status time minus the last visible change of the last reply's
bubble.

*blanked*: whether, between a turn's Enter and the next turn's, the timeline (#timeline: no drawing,
an image not yet decoded, or a block under 20 px high) or the heatmap (#heatmap: neither its table
nor its empty-state text) was missing once the panel had been drawn; "yes k/reps" with the parts
and the longest such gap, timed frame by frame.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from appserver import start_app  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 300_000  # one turn on a busy 2-core machine (a reply, its fresh-memory reply, the panel)

PLAY = [("ROMEO", "What light through yonder window breaks?"), ("JULIET", "It is the east, and Juliet is the sun."),
        ("ROMEO", "Arise, fair sun, and kill the envious moon."),
        ("JULIET", "O Romeo, Romeo! wherefore art thou Romeo?"),
        ("ROMEO", "I take thee at thy word."), ("JULIET", "What man art thou that thus bescreen'd in night?"),
        ("ROMEO", "With love's light wings did I o'er-perch these walls."),
        ("JULIET", "Thou know'st the mask of night is on my face.")]
BABI = ["Mary went to the kitchen.", "John took the milk there.", "Where is Mary?", "Sandra journeyed to the office.",
        "Where is the milk?", "John travelled to the garden.", "Where is John?", "Daniel moved to the bedroom.",
        "Where is Sandra?", "Mary went back to the hallway.", "Where is Mary?", "What is John carrying?"]

# Installed in the page before its own scripts: every queue message (event id, kind, arrival time,
# and the turn it draws when it carries the panel's status), the times the panel's status changes,
# the last reply bubble's visible changes, the Enter presses that send, and the panel's blank gaps.
RECORDER = r"""
(() => {
  const B = window.__bench = {msgs: [], status: [], bot: [], sends: [], blanks: [], drawn: false, blankNow: false};
  const originalFetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await originalFetch(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (!url.includes('/queue/data') || !response.body) return response;
    const [copy, forPage] = response.body.tee();
    (async () => {
      const reader = copy.getReader(), decoder = new TextDecoder();
      let pending = '';
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        const t = performance.now();  // the page's reader gets the same chunk now
        pending += decoder.decode(value, {stream: true});
        const lines = pending.split('\n');
        pending = lines.pop();
        for (const line of lines) {
          if (!line.startsWith('data: {')) continue;
          let m;
          try { m = JSON.parse(line.slice(6)); } catch (e) { continue; }
          if (!m.event_id) continue;
          const panel = /Memory panel after turn (\d+)/.exec(line);
          B.msgs.push({id: m.event_id, msg: m.msg, t, panel: panel ? +panel[1] : 0});
        }
      }
    })();
    return new Response(forPage, {status: response.status, statusText: response.statusText, headers: response.headers});
  };
  document.addEventListener('keydown', (e) => {
    const inBox = e.target.closest && e.target.closest('#message');
    if (e.key === 'Enter' && !e.shiftKey && inBox) B.sends.push(performance.now());
  }, true);
  const blankParts = () => {
    const parts = [];
    const timeline = document.querySelector('#timeline'), drawing = timeline && timeline.querySelector('svg, img');
    if (!drawing || (drawing.tagName === 'IMG' && !(drawing.complete && drawing.naturalWidth > 0))
        || timeline.getBoundingClientRect().height < 20) parts.push('timeline');
    const heatmap = document.querySelector('#heatmap');
    if (!heatmap || !heatmap.querySelector('table, .hm-empty')
        || heatmap.getBoundingClientRect().height < 20) parts.push('heatmap');
    return parts;
  };
  let gap = null;
  // A gap can end with no DOM change (an image finishing its decoding): looked at every frame while open.
  const checkBlank = () => {
    if (!B.drawn) return;
    const parts = blankParts(), t = performance.now();
    if (parts.length && !gap) {
      gap = {parts: parts, start: t, end: null};
      B.blanks.push(gap);
      B.blankNow = true;
      requestAnimationFrame(everyFrame);
    } else if (parts.length) {
      for (const p of parts) if (!gap.parts.includes(p)) gap.parts.push(p);
    } else if (gap) {
      gap.end = t;
      gap = null;
      B.blankNow = false;
    }
  };
  const everyFrame = () => { checkBlank(); if (gap) requestAnimationFrame(everyFrame); };
  let lastTurn = null, lastBot = null;
  new MutationObserver((records) => {
    const t = performance.now();
    const status = document.querySelector('#panel-status');
    if (status) {
      const text = status.innerText, m = /Memory panel after turn (\d+)/.exec(text);
      const turn = m ? +m[1] : (text.includes('No turns yet') ? 0 : null);
      if (turn !== null) B.drawn = true;
      if (turn !== null && turn !== lastTurn) { B.status.push({t, turn}); lastTurn = turn; }
    }
    const inChat = (node) => {  // a text node (characterData) has no closest()
      const el = node.closest ? node : node.parentElement;
      return el && el.closest('#chatbot');
    };
    if (records.some(r => inChat(r.target))) {
      const rows = document.querySelectorAll('#chatbot .message-row.bot-row');
      const key = rows.length + '|' + (rows.length ? rows[rows.length - 1].innerText : '');
      if (key !== lastBot) { lastBot = key; B.bot.push({t, rows: rows.length}); }
    }
    checkBlank();
  }).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
})();
"""

# True once every event the page has heard of has completed, and no panel gap is open.
SETTLED = """() => { const B = window.__bench, ids = {};
  for (const m of B.msgs) (ids[m.id] = ids[m.id] || []).push(m.msg);
  return !B.blankNow && Object.values(ids).every(msgs => msgs.includes('process_completed')); }"""


def chromium_path() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        raise SystemExit(f"Chromium not found at {CHROMIUM} nor on PATH: install Debian's chromium package "
                         "(apt-get install chromium) or set CHROMIUM to its executable.")
    return path


def processor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (lscpu failed)"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} CPUs"
    return "unknown (no model name in lscpu)"


def messages(model: str, turns: int) -> list[str]:
    """--turns messages for the model: bAbI facts and questions, else play speeches."""
    if "babi" in os.path.basename(model.rstrip("/")).lower():
        return [BABI[i % len(BABI)] for i in range(turns)]
    return [f"{who}:\n{line}" for who, line in (PLAY[i % len(PLAY)] for i in range(turns))]


def set_sampling(page, seed: int, max_chars: int) -> None:
    """The seed and the length cap, in the Sampling accordion, closed again so the layout is the default one."""
    page.get_by_text("Sampling", exact=True).click()
    page.get_by_label("Seed", exact=False).fill(str(seed))
    page.get_by_label("number input for Max characters").fill(str(max_chars))
    page.get_by_text("Sampling", exact=True).click()


def type_and_send(page, text: str) -> None:
    """As a person types: line by line, Shift+Enter between lines (Enter alone sends), then Enter."""
    box = page.locator("#message textarea")
    box.click()
    for i, line in enumerate(text.split("\n")):
        if i:
            box.press("Shift+Enter")
        box.press_sequentially(line)
    box.press("Enter")


def one_run(browser, url: str, args, texts: list[str]) -> list[dict]:
    """One fresh session sending `texts`: per turn, its times in seconds and its blank gaps."""
    context = browser.new_context(viewport={"width": args.width, "height": args.height})
    try:
        page = context.new_page()
        page.add_init_script(RECORDER)
        page.goto(url, wait_until="load")
        page.locator("#message textarea").wait_for(timeout=WAIT_MS)
        page.get_by_text("No turns yet").wait_for(timeout=WAIT_MS)  # the panel's first drawing
        set_sampling(page, args.seed, args.max_chars)
        page.wait_for_function(SETTLED, timeout=WAIT_MS)
        for n, text in enumerate(texts, 1):
            type_and_send(page, text)
            page.wait_for_function("n => window.__bench.status.some(s => s.turn === n)", arg=n, timeout=WAIT_MS)
            page.wait_for_function(SETTLED, timeout=WAIT_MS)
        return turn_times(page.evaluate("window.__bench"), len(texts))
    finally:
        context.close()


def turn_times(bench: dict, turns: int) -> list[dict]:
    sends = bench["sends"]
    if len(sends) != turns:
        raise SystemExit(f"the page saw {len(sends)} Enter presses for {turns} turns")
    events: dict[str, list[dict]] = {}
    for m in bench["msgs"]:
        events.setdefault(m["id"], []).append(m)

    def at(msgs, kind):
        return next((m["t"] for m in msgs if m["msg"] == kind), math.nan)

    rows = []
    for n in range(1, turns + 1):
        start = sends[n - 1]
        end = sends[n] if n < turns else math.inf
        replies = [msgs for msgs in events.values() if msgs[0]["t"] >= start and msgs[0]["t"] < end
                   and any(m["msg"] == "process_generating" for m in msgs)]
        panels = [msgs for msgs in events.values()
                  if any(m["panel"] == n and m["msg"] == "process_completed" for m in msgs)]
        shown = next(s["t"] for s in bench["status"] if s["turn"] == n and s["t"] >= start)
        done = at(replies[0], "process_completed") if len(replies) == 1 else math.nan
        texts = [b["t"] for b in bench["bot"] if start <= b["t"] <= shown]
        panel_done = at(panels[0], "process_completed") if len(panels) == 1 else math.nan
        gaps = [g for g in bench["blanks"] if start <= g["start"] < end]
        rows.append({"refresh": (shown - done) / 1000, "result": (panel_done - done) / 1000,
                     "draw": (shown - panel_done) / 1000,
                     "after_text": (shown - texts[-1]) / 1000 if texts else math.nan,
                     "gaps": [(g["parts"], None if g["end"] is None else (g["end"] - g["start"]) / 1000)
                              for g in gaps]})
    return rows


def median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def blank_cell(runs: list[dict]) -> str:
    blanked = [r for r in runs if r["gaps"]]
    if not blanked:
        return "no"
    parts = sorted({p for r in blanked for ps, _ in r["gaps"] for p in ps})
    lengths = [s for r in blanked for _, s in r["gaps"]]
    longest = "stayed blank" if None in lengths else f"longest {max(lengths) * 1000:.0f} ms"
    return f"yes {len(blanked)}/{len(runs)} ({', '.join(parts)}; {longest})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shakespeare", help="as app.py --model: a bundled name, a folder or a repo id")
    p.add_argument("--turns", type=int, default=30)
    p.add_argument("--at", type=int, nargs="+", default=None, help="turns to print (default 1 12 30, those sent)")
    p.add_argument("--reps", type=int, default=3, help="runs, each a fresh page and session; the table shows medians")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--max-chars", type=int, default=200, help="the reply's length cap: short replies, quick turns")
    p.add_argument("--seed", type=int, default=4, help="the page's sampling seed, the same for every run")
    args = p.parse_args(argv)
    if args.turns < 1 or args.reps < 1:
        p.error("--turns and --reps must be at least 1.")
    shown = args.at if args.at is not None else [t for t in (1, 12, 30) if t <= args.turns]
    past = [t for t in shown if not 1 <= t <= args.turns]
    if past:
        p.error(f"--at {' '.join(map(str, past))}: only turns 1 to {args.turns} are sent.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("Playwright is not installed: pip install -r requirements-dev.txt") from None
    executable = chromium_path()

    texts = messages(args.model, args.turns)
    temp = tempfile.mkdtemp(prefix="panel-refresh-gradio-")
    try:
        server, url, _ = start_app(env={"MODEL": args.model, "GRADIO_TEMP_DIR": temp})
    except SystemExit:
        shutil.rmtree(temp, ignore_errors=True)
        raise SystemExit(f"the app did not start with --model {args.model}: run `python app.py --model {args.model}` "
                         "to see why.") from None
    runs = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                for rep in range(args.reps):
                    runs.append(one_run(browser, url, args, texts))
                    print(f"run {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)

    print(f"Memory panel refresh: {args.model}, {args.turns} turns, {args.reps} runs (medians), "
          f"{args.width}x{args.height}, max {args.max_chars} chars, seed {args.seed}")
    print(f"processor: {processor()}; date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print("refresh = reply event done -> status 'Memory panel after turn N' on the page (result + draw); "
          "after text = from the reply bubble's last change")
    header = f"{'turn':>4}  {'refresh s':>9}  {'result s':>8}  {'draw s':>6}  {'after text s':>12}  blanked"
    print(header)
    print("-" * len(header))
    for turn in shown:
        column = [run[turn - 1] for run in runs]
        m = {k: median(r[k] for r in column) for k in ("refresh", "result", "draw", "after_text")}
        print(f"{turn:>4}  {m['refresh']:>9.2f}  {m['result']:>8.2f}  {m['draw']:>6.2f}  {m['after_text']:>12.2f}  "
              f"{blank_cell(column)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
