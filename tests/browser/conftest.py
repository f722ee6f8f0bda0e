"""The browser suite's fixtures: the real server on the embedded defaults (a private PostgreSQL
cluster, local storage, the email outbox folder), a model stand-in that streams scripted turns,
the repository's Stripe stand-in, and Chromium from the system. Python's standard library and
Playwright only."""
import glob
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAGE = """<!doctype html><html><head><title>List</title>
<style>h1 { color: rgb(0, 128, 0); }</style></head>
<body><h1>Groceries</h1><ul><li>milk</li></ul>
<script>document.body.dataset.ran = "yes";
try { parent.document.body.dataset.touched = "yes"; } catch (e) { document.body.dataset.blocked = "yes"; }
</script></body></html>"""


class Model(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in. A message with "slow" streams words a second apart; one
    with "fail" answers 500; anything else writes a page in two paced text deltas and one tool
    call, then (asked again with the tool's answer) says it is done."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def chunk(self, payload):
        data = f"data: {json.dumps(payload)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self):
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the turn was stopped: the server hung up

    def answer(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        last = body["messages"][-1]
        said = json.dumps(last.get("content"))
        if "fail" in said and last["role"] == "user":
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if last["role"] == "tool" and "slow page" in json.dumps(body["messages"]):
            # The second round of a slow page: the page is written; the model talks for a while.
            for word in [" Written", " it", " for", " you."]:
                time.sleep(1)
                self.chunk({"choices": [{"index": 0, "delta": {"content": word}}]})
            self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        elif last["role"] == "tool":
            self.chunk({"choices": [{"index": 0, "delta": {"content": " Done."}}]})
            self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        elif "slow page" in said:
            asked = html.escape(str(last.get("content"))[-200:])
            page = PAGE.replace("</ul>", f"</ul><p class=asked>{asked}</p>")
            args = json.dumps({"command": "create", "path": "index.html", "file_text": page})
            view = json.dumps({"command": "view", "path": "index.html"})
            # Writes the page, then looks at it: viewing a file takes a second round.
            self.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "str_replace_based_edit_tool", "arguments": args}},
                {"index": 1, "id": "call_2", "type": "function",
                 "function": {"name": "str_replace_based_edit_tool", "arguments": view}}]}}]})
            self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        elif "slow" in said:
            for word in ["Thinking", " about", " it", " slowly", " and", " carefully", " now."]:
                self.chunk({"choices": [{"index": 0, "delta": {"content": word}}]})
                time.sleep(1)
            self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        else:
            self.chunk({"choices": [{"index": 0, "delta": {"content": "Here is "}}]})
            time.sleep(0.6)
            self.chunk({"choices": [{"index": 0, "delta": {"content": "your list."}}]})
            time.sleep(0.6)
            # Each turn's page names its message, so every turn changes the page.
            asked = html.escape(str(last.get("content"))[-200:])
            page = PAGE.replace("</ul>", f"</ul><p class=asked>{asked}</p>")
            args = json.dumps({"command": "create", "path": "index.html", "file_text": page})
            self.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "str_replace_based_edit_tool", "arguments": args}}]}}]})
            self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        self.chunk({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20}})
        data = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="session")
def server():
    data = tempfile.mkdtemp(prefix="aide-browser-")
    os.chmod(data, 0o755)
    model_port, stripe_port, port = free_port(), free_port(), free_port()
    model = ThreadingHTTPServer(("127.0.0.1", model_port), Model)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    stripe = subprocess.Popen(
        [os.path.join(ROOT, "scripts", "stripe-stand-in"), "--port", str(stripe_port),
         "--webhook", f"{base}/stripe/webhook", "--webhook-secret", "whsec_browser",
         "--price", "price_browser"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "stripe.log"), "w"))
    env = dict(os.environ,
               AIDE_DATA_DIR=os.path.join(data, "data"), PORT=str(port), RUST_LOG="warn",
               FREE_TURNS_PER_WEEK="4",
               # Every test signs in from 127.0.0.1: the per-address limits have tests of their own.
               MAGIC_LINK_REQUESTS_PER_IP_PER_HOUR="10000", VERIFICATIONS_PER_IP_PER_MINUTE="10000",
               AI_PROVIDER="openai", AI_BASE_URL=f"http://127.0.0.1:{model_port}/v1", AI_MODEL="stand-in",
               STRIPE_API_URL=f"http://127.0.0.1:{stripe_port}", STRIPE_SECRET_KEY="sk_test_browser",
               STRIPE_WEBHOOK_SECRET="whsec_browser", STRIPE_PRICE_ID="price_browser")
    log = open(os.path.join(data, "server.log"), "w")
    proc = subprocess.Popen([os.environ.get("AIDE_BIN", os.path.join(ROOT, "target/debug/aide")), "serve"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/ready", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        sys.exit(open(os.path.join(data, "server.log")).read())
    yield {"base": base, "outbox": os.path.join(data, "data", "outbox"), "data": data}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    stripe.kill()
    model.shutdown()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors and Content-Security-Policy violations are collected."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.errors = []
        self.allowed = set()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.watch()

    def allow(self, status):
        """A refusal the test asked for (the browser logs every 4xx it loads)."""
        self.allowed.add(status)

    def unexpected(self):
        return [e for e in self.errors
                if not any(f"status of {status}" in e for status in self.allowed)]

    def watch(self):
        self.page.add_init_script("""document.addEventListener('securitypolicyviolation',
            e => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));""")


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def watched(context):
    page = Watched(context)
    yield page
    assert page.unexpected() == [], page.unexpected()


def newest_email(outbox, address):
    for _ in range(100):
        found = sorted((f for f in glob.glob(outbox + "/*.txt") if f"To: {address}" in open(f).read()),
                       key=os.path.getmtime)
        if found:
            return open(found[-1]).read()
        time.sleep(0.1)
    raise AssertionError(f"no email to {address}")


def sign_in(page, server, address):
    """Signs in through the form and the emailed link, as a person does."""
    page.goto(server["base"] + "/")
    page.get_by_label("Email").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    link = re.search(r"(http\S+/auth/verify\?token=[A-Za-z0-9_-]+)", newest_email(server["outbox"], address)).group(1)
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Your aides").wait_for()
