"""Accessibility: axe-core on every screen (no serious or critical finding), and the editor used
with the keyboard alone, focus always visible."""
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from conftest import sign_in
from test_app import new_aide

AXE = Axe()


def serious(page):
    results = AXE.run(page)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])})"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_every_screen_passes_axe(server, watched):
    page = watched.page
    page.goto(server["base"] + "/")
    assert serious(page) == []
    sign_in(page, server, "axe@example.com")
    assert serious(page) == []
    new_aide(page, "Checked")
    page.get_by_label("Message").fill("make the page")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15000)
    assert serious(page) == []
    expect(page.get_by_role("log")).to_be_visible()
    assert page.locator("#preview").get_attribute("title")
    page.get_by_role("link", name="History").click()
    assert serious(page) == []
    page.get_by_role("link", name="axe@example.com").click()
    assert serious(page) == []
    page.get_by_role("link", name="Delete my account…").click()
    assert serious(page) == []
    page.goto(server["base"] + "/nowhere")
    watched.allow(404)
    assert serious(page) == []


def focus_is_visible(page):
    return page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0; })()"
    )


def test_the_editor_works_from_the_keyboard(server, watched):
    page = watched.page
    sign_in(page, server, "keys@example.com")
    new_aide(page, "By keyboard")
    message = page.get_by_label("Message")
    for _ in range(30):
        page.keyboard.press("Tab")
        assert focus_is_visible(page), page.evaluate("document.activeElement.outerHTML")
        if page.evaluate("document.activeElement.id") == "content":
            break
    expect(message).to_be_focused()
    page.keyboard.type("go slow with keys")
    page.keyboard.press("Enter")
    expect(page.locator(".message.assistant .text")).to_contain_text("Thinking")
    page.keyboard.press("Escape")
    expect(page.locator(".message.assistant.stopped")).to_be_visible(timeout=3000)
    expect(message).to_be_focused()
