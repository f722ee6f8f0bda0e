"""The web app in Chromium: sign-in, the list, the editor's streamed turn, Stop, errors, the
isolated preview, publishing, the account and Upgrade, phones, and pages without JavaScript."""
import re
import zipfile
import time
import urllib.request

from playwright.sync_api import expect

from conftest import Watched, newest_email, sign_in


def new_aide(page, title):
    page.get_by_label("New aide").fill(title)
    page.get_by_role("button", name="New aide").click()
    expect(page).to_have_url(re.compile(r"/a/[0-9a-f-]{36}$"))


def test_sign_in_by_link_and_by_code_in_another_browser(server, browser, watched):
    page = watched.page
    sign_in(page, server, "link@example.com")
    expect(page.get_by_role("link", name="link@example.com")).to_be_visible()
    cookie = [c for c in watched.context.cookies() if c["name"] == "session"][0]
    assert cookie["httpOnly"]
    # Another browser: the six-digit code instead of the link.
    other = browser.new_context()
    try:
        second = Watched(other).page
        second.goto(server["base"] + "/")
        second.get_by_label("Email").fill("link@example.com")
        second.get_by_role("button", name="Email me a sign-in link").click()
        code = re.search(r"^\s*(\d{3}) (\d{3})\s*$", newest_email(server["outbox"], "link@example.com"), re.M)
        second.get_by_label("Code").fill(code.group(1) + code.group(2))
        second.get_by_role("button", name="Sign in").click()
        expect(second.get_by_role("heading", name="Your aides")).to_be_visible()
    finally:
        other.close()


def test_signed_out_an_editor_address_shows_sign_in_and_nothing_of_the_aide(server, browser, watched):
    page = watched.page
    sign_in(page, server, "owner@example.com")
    new_aide(page, "Secret plans")
    address = page.url
    stranger = browser.new_context()
    try:
        other = stranger.new_page()
        other.goto(address)
        expect(other.get_by_role("button", name="Email me a sign-in link")).to_be_visible()
        assert "Secret plans" not in other.content()
    finally:
        stranger.close()


def test_a_turn_streams_changes_the_preview_and_counts(server, watched):
    page = watched.page
    sign_in(page, server, "writer@example.com")
    new_aide(page, "Groceries")
    expect(page.locator("#usage")).to_contain_text("0 of 4")
    page.get_by_label("Message").fill("make a grocery list with milk")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".message.user .text")).to_have_text("make a grocery list with milk")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_hidden()
    # The reply's first words while the turn still runs.
    expect(page.locator(".message.assistant .text")).to_contain_text("Here is")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    expect(page.locator(".message.assistant .text")).to_have_text("Here is your list.")
    expect(page.locator("#usage")).to_contain_text("1 of 4")
    frame = page.frame_locator("#preview")
    expect(frame.get_by_role("heading", name="Groceries")).to_be_visible()
    expect(frame.locator("li")).to_have_text("milk")
    # The preview is isolated: an opaque origin, no cookie, its own style and script running,
    # the editor out of its reach.
    inner = page.frame(url=re.compile(r"/p/"))
    assert inner.evaluate("self.origin") == "null"
    # Reading cookies is refused outright in a sandbox without allow-same-origin.
    assert inner.evaluate("(() => { try { return document.cookie; } catch (e) { return e.name; } })()") in ("", "SecurityError")
    assert inner.evaluate("document.body.dataset.ran") == "yes"
    assert inner.evaluate("document.body.dataset.blocked") == "yes"
    assert inner.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(0, 128, 0)"
    assert page.evaluate("document.body.dataset.touched") is None
    # After a reload the conversation is there once.
    page.reload()
    expect(page.locator(".message.user")).to_have_count(1)
    expect(page.locator(".message.assistant .text")).to_have_text(re.compile(r"^\s*Here is your list\.\s*$"))


def test_stop_after_the_first_words_keeps_the_page(server, watched):
    page = watched.page
    sign_in(page, server, "stopper@example.com")
    new_aide(page, "Slow one")
    page.get_by_label("Message").fill("go slow please")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant .text")).to_contain_text("Thinking")
    started = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".message.assistant.stopped")).to_be_visible(timeout=2000)
    assert time.monotonic() - started < 2
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.locator("#preview-empty")).to_be_visible()


def test_a_model_error_is_shown_with_retry_and_costs_nothing(server, watched):
    page = watched.page
    sign_in(page, server, "unlucky@example.com")
    new_aide(page, "Broken")
    page.get_by_label("Message").fill("this will fail")
    page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not counted")
    expect(alert.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.locator("#usage")).to_contain_text("0 of 4")
    expect(page.locator("#preview-empty")).to_be_visible()


def test_publish_then_unpublish_and_the_public_page_follows(server, browser, watched):
    page = watched.page
    sign_in(page, server, "publisher@example.com")
    new_aide(page, "Team schedule")
    page.get_by_label("Message").fill("make the page")
    page.get_by_role("button", name="Send").click()
    expect(page.frame_locator("#preview").get_by_role("heading", name="Groceries")).to_be_visible(timeout=15000)
    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Share")).to_be_focused()
    page.get_by_role("button", name="Share").click()
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(".badge")).to_have_text("Live")
    page.get_by_role("button", name="Share").click()
    live = page.locator(".share a[href*='/s/']")
    expect(live).to_be_visible()
    address = live.get_attribute("href")
    visitor = browser.new_context()
    try:
        public = visitor.new_page()
        answer = public.goto(address)
        assert answer.status == 200
        expect(public.get_by_text("Made with")).to_be_visible()
        page.get_by_role("dialog").get_by_role("button", name="Unpublish").click()
        expect(page.locator(".badge")).to_have_text("Draft")
        assert public.goto(address).status == 404
    finally:
        visitor.close()


def test_upgrade_through_checkout_makes_the_account_pro(server, watched):
    page = watched.page
    sign_in(page, server, "upgrader@example.com")
    page.get_by_role("link", name="upgrader@example.com").click()
    expect(page.get_by_text("0 of 4")).to_be_visible()
    page.get_by_role("button", name="Upgrade to Pro").click()
    # The stand-in's Checkout page (a redirect the page's policy allows).
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_text("Welcome to Pro")).to_be_visible()
    expect(page.locator("dd", has_text=re.compile(r"^Pro"))).to_be_visible()
    expect(page.get_by_role("button", name="Manage billing")).to_be_visible()
    # Pro: the page's own address can be chosen.
    page.get_by_role("link", name="Aides").click()
    new_aide(page, "Mine")
    page.get_by_role("button", name="Share").click()
    page.get_by_label("Address").fill("upgraders-page")
    page.get_by_role("button", name="Use this address").click()
    page.get_by_role("button", name="Share").click()
    expect(page.get_by_label("Address")).to_have_value("upgraders-page")


def test_a_phone_sees_one_pane_at_a_time_and_nothing_scrolls_sideways(server, browser):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        watched = Watched(phone)
        page = watched.page
        sign_in(page, server, "phone@example.com")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        new_aide(page, "On the go")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        expect(page.get_by_label("Message")).to_be_visible()
        expect(page.locator("#preview-pane")).to_be_hidden()
        page.get_by_role("tab", name="Preview").click()
        expect(page.locator("#preview-pane")).to_be_visible()
        expect(page.get_by_label("Message")).to_be_hidden()
        assert watched.unexpected() == []
    finally:
        phone.close()


def test_without_javascript_the_forms_still_work(server, browser):
    plain = browser.new_context(java_script_enabled=False)
    try:
        page = plain.new_page()
        sign_in(page, server, "nojs@example.com")
        new_aide(page, "Plain")
        expect(page.get_by_text("Chat needs JavaScript")).to_be_visible()
        # A page made elsewhere (the files API, with this session), then published and taken
        # down with the forms.
        aide = page.url.rsplit("/", 1)[1]
        put = plain.request.put(f"{server['base']}/api/aides/{aide}/files/index.html",
                                headers={"origin": server["base"], "content-type": "text/html"},
                                data="<h1>Plain page</h1>")
        assert put.ok, put.text()
        page.reload()
        page.get_by_role("button", name="Publish", exact=True).click()
        expect(page.get_by_text("Live at")).to_be_visible()
        page.get_by_role("button", name="Unpublish").click()
        expect(page.locator(".badge")).to_have_text("Draft")
        page.get_by_role("link", name="Aides").click()
        page.get_by_role("button", name="Archive").click()
        page.get_by_role("link", name="Archived aides").click()
        page.get_by_role("button", name="Restore").click()
        expect(page.get_by_role("link", name="Plain")).to_be_visible()
        page.get_by_role("link", name="nojs@example.com").click()
        expect(page.get_by_role("button", name="Upgrade to Pro")).to_be_visible()
    finally:
        plain.close()


def test_reload_during_a_turn_follows_it_to_the_end(server, watched):
    page = watched.page
    sign_in(page, server, "reloader@example.com")
    new_aide(page, "Patience")
    page.get_by_label("Message").fill("slow, then reload")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant .text")).to_contain_text("Thinking")
    page.reload()
    expect(page.locator(".message.user")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.locator(".message.assistant .text")).to_have_text(
        "Thinking about it slowly and carefully now.", timeout=15000)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_undo_after_two_turns_and_the_history(server, watched):
    page = watched.page
    sign_in(page, server, "undoer@example.com")
    new_aide(page, "Twice")
    for text in ["first page", "second page"]:
        page.get_by_label("Message").fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    page.reload()
    page.get_by_role("button", name="Undo").click()
    page.get_by_role("link", name="History").click()
    expect(page.get_by_text("#3: #1 restored")).to_be_visible()
    expect(page.get_by_text("#2: a chat turn")).to_be_visible()
    page.get_by_role("listitem").filter(has_text="#2: a chat turn").get_by_role("button", name="Restore").click()
    expect(page.get_by_text("#4: #2 restored")).to_be_visible()


def test_the_free_limit_on_aides_explains_itself(server, watched):
    page = watched.page
    sign_in(page, server, "collector@example.com")
    for n in range(5):
        page.goto(server["base"] + "/")
        new_aide(page, f"Aide {n}")
    page.goto(server["base"] + "/")
    expect(page.get_by_text("5 of 5 aides on the free plan")).to_be_visible()
    expect(page.get_by_role("link", name="upgrade to Pro")).to_be_visible()
    page.get_by_label("New aide").fill("One too many")
    page.get_by_role("button", name="New aide").click()
    expect(page.get_by_role("alert")).to_contain_text("Free accounts can keep 5 aides")
    watched.allow(403)
    page.get_by_role("link", name="Back").click()
    expect(page.locator(".aides li")).to_have_count(5)


def test_the_weekly_limit_stops_before_a_turn_starts(server, watched):
    page = watched.page
    sign_in(page, server, "chatty@example.com")
    new_aide(page, "Busy")
    for n in range(4):
        page.get_by_label("Message").fill(f"change number {n}")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    expect(page.locator("#usage")).to_contain_text("4 of 4")
    page.get_by_label("Message").fill("one more")
    page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("start again at")
    expect(alert.get_by_role("link", name="Upgrade to Pro")).to_be_visible()
    watched.allow(429)
    expect(page.locator(".message.assistant")).to_have_count(4)
    page.reload()
    expect(page.locator(".message.user")).to_have_count(4)
    expect(page.locator("#usage")).to_contain_text("4 of 4")


def test_rename_archive_and_delete_and_the_public_address_dies(server, browser, watched):
    page = watched.page
    sign_in(page, server, "tidy@example.com")
    new_aide(page, "Draft name")
    page.get_by_label("Title").fill("Final name")
    page.get_by_role("button", name="Rename").click()
    expect(page).to_have_title("Final name · AIde")
    page.get_by_label("Message").fill("make it")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    page.get_by_role("button", name="Share").click()
    page.get_by_role("button", name="Publish", exact=True).click()
    address = page.locator(".share a[href*='/s/']").get_attribute("href")
    page.get_by_role("link", name="Aides").click()
    item = page.locator(".aides li", has_text="Final name")
    expect(item.locator(".badge")).to_have_text("Live")
    item.get_by_role("button", name="Archive").click()
    page.get_by_role("link", name="Archived aides").click()
    page.locator(".aides li", has_text="Final name").get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete for good").click()
    expect(page.get_by_text("Nothing is archived")).to_be_visible()
    visitor = browser.new_context()
    try:
        assert visitor.new_page().goto(address).status == 404
    finally:
        visitor.close()


def test_log_out_everywhere_ends_the_other_browsers_session(server, browser, watched):
    page = watched.page
    sign_in(page, server, "everywhere@example.com")
    other = browser.new_context()
    try:
        second = other.new_page()
        sign_in(second, server, "everywhere@example.com")
        page.get_by_role("link", name="everywhere@example.com").click()
        page.get_by_role("button", name="Log out everywhere").click()
        expect(page.get_by_role("button", name="Email me a sign-in link")).to_be_visible()
        second.reload()
        expect(second.get_by_role("button", name="Email me a sign-in link")).to_be_visible()
    finally:
        other.close()


def test_the_preview_follows_the_edits_while_the_turn_runs(server, watched):
    page = watched.page
    sign_in(page, server, "watcher@example.com")
    new_aide(page, "Live")
    page.get_by_label("Message").fill("a slow page please")
    page.get_by_role("button", name="Send").click()
    # The page shows in the preview before the turn has finished.
    expect(page.frame_locator("#preview").get_by_role("heading", name="Groceries")).to_be_visible(timeout=5000)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    assert "/t-" in page.locator("#preview").get_attribute("src")
    expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    # Then the saved revision, swapped in once loaded: one frame in view, none left loading.
    expect(page.locator("#preview")).to_have_attribute("src", re.compile(r"/p/[0-9a-f-]+/1/"))
    expect(page.frame_locator("#preview").get_by_role("heading", name="Groceries")).to_be_visible()
    expect(page.locator("iframe.incoming")).to_have_count(0)
    expect(page.locator("#preview-pane iframe")).to_have_count(1)


def test_a_stopped_turn_takes_its_unsaved_edits_off_the_preview(server, watched):
    page = watched.page
    sign_in(page, server, "regretful@example.com")
    new_aide(page, "Not this")
    page.get_by_label("Message").fill("a slow page please")
    page.get_by_role("button", name="Send").click()
    expect(page.frame_locator("#preview").get_by_role("heading", name="Groceries")).to_be_visible(timeout=5000)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".message.assistant.stopped")).to_be_visible(timeout=3000)
    expect(page.locator("#preview")).to_have_count(0)


def test_download_my_data_then_delete_the_account_and_cancel_in_the_grace(server, browser, watched):
    page = watched.page
    address = "leaver@example.com"
    sign_in(page, server, address)
    new_aide(page, "Farewell list")
    page.get_by_label("Message").fill("make the page")
    page.get_by_role("button", name="Send").click()
    expect(page.frame_locator("#preview").get_by_role("heading", name="Groceries")).to_be_visible(timeout=15000)
    page.get_by_role("button", name="Share").click()
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(".badge")).to_have_text("Live")
    page.get_by_role("button", name="Share").click()
    public_address = page.locator(".share a[href*='/s/']").get_attribute("href")
    page.get_by_role("dialog").get_by_role("button", name="Close").click()

    # Download my data: the export is made in the background; the list offers the file.
    page.get_by_role("link", name=address).click()
    page.get_by_role("button", name="Download my data").click()
    expect(page.get_by_role("status")).to_contain_text("being gathered")
    for _ in range(100):
        page.reload()
        if page.get_by_role("link", name=re.compile("Download \\(")).count():
            break
        time.sleep(0.2)
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Download \\(")).click()
    path = download.value.path()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "manifest.json" in names and "account.json" in names
        assert any(n.endswith("/files/index.html") for n in names), names
    assert "Your AIde data export is ready" in newest_email(server["outbox"], address)

    # Delete: the address typed, then the emailed code; signed out, the page offline at once.
    page.get_by_role("link", name="Delete my account…").click()
    page.get_by_label("To confirm, type your email address").fill("not-me@example.com")
    page.get_by_role("button", name="Send me a code").click()
    watched.allow(422)
    expect(page.get_by_text("is not this account's email address")).to_be_visible()
    page.goto(server["base"] + "/account/delete")
    page.get_by_label("To confirm, type your email address").fill(address)
    page.get_by_role("button", name="Send me a code").click()
    code = re.search(r"asked: (\d{3} \d{3})", newest_email(server["outbox"], address)).group(1)
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("heading", name="Your account is being deleted")).to_be_visible()
    visitor = browser.new_context()
    try:
        watched.allow(404)
        assert visitor.new_page().goto(public_address).status == 404
        # Signing in again within the grace offers to cancel; cancelling brings the page back.
        sign_in(page, server, address)
        banner = page.get_by_role("alert")
        expect(banner).to_contain_text("Your account is being deleted")
        banner.get_by_role("button", name="Cancel deletion").click()
        expect(page.get_by_role("status")).to_contain_text("The deletion is cancelled")
        expect(page.get_by_role("alert")).to_have_count(0)
        assert visitor.new_page().goto(public_address).status == 200
    finally:
        visitor.close()
