"""End to end in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run app/Home.py`.

The server runs on loopback with its own temporary home, seeded through the CLI like an operator would.
Every visible string is looked up in the catalogs (core/locales/*.json), never typed here.
Screenshots of each main step go to test-artifacts/ (gitignored) for a human to look at.
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, expect, sync_playwright

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
COOKIE = "docetl_wb_auth"  # core.auth.COOKIE_NAME
STARTUP_WAIT = 60.0  # seconds: upper bound for the server to answer its health check
WAIT_MS = 45_000  # upper bound for any one thing to appear on the page (generous: the machine may be busy)

MAX_MB = 20  # the Data Center's file limit here (not the default, so the uploader is seen to follow it)
PASSWORDS = {"admin": "admin-pass-4711", "viewer": "viewer-pass-4711", "editor": "editor-pass-4711"}

expect.set_options(timeout=WAIT_MS)


def catalog(lang: str) -> dict[str, str]:
    return json.loads((ROOT / "core" / "locales" / f"{lang}.json").read_text(encoding="utf-8"))


ZH, EN = catalog("zh_CN"), catalog("en")


# -- the server ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, input=stdin, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, f"`python -m core {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A seeded home (admin, namespace `demo` with a viewer and an editor) and the app serving it on loopback."""
    base = tmp_path_factory.mktemp("browser")
    home = base / "home"
    home.mkdir()
    env = {**os.environ, "DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "4", "PYTHONUNBUFFERED": "1",
           "DOCETL_WB_AUTOSTART_SERVICE": "1", "DOCETL_WB_SERVICE_POLL_SECONDS": "0.3",  # the app starts the service
           "DOCETL_WB_DATASET_MAX_MB": str(MAX_MB)}
    _cli(env, "user", "add", "admin", "--admin", "--password-stdin", stdin=PASSWORDS["admin"] + "\n")
    _cli(env, "namespace", "create", "demo")
    for name in ("viewer", "editor"):
        _cli(env, "user", "add", name, "--password-stdin", stdin=PASSWORDS[name] + "\n")
        _cli(env, "member", "add", "demo", name, "--role", name)
    _cli(env, "dataset", "import", str(ROOT / "data" / "templates" / "sample_orders.xlsx"), "--namespace", "demo",
         "--name", "orders", "--json")

    port = _free_port()
    log_path = base / "streamlit.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_WAIT
        while not _healthy(f"http://127.0.0.1:{port}/_stcore/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {server.returncode}" if server.poll() is not None else "not healthy in time"
                pytest.fail(f"streamlit {state}:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_service(home)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        # the server's output sits beside the screenshots, for a human looking into a failure
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "streamlit.log").write_bytes(log_path.read_bytes())


def _stop_service(home: Path) -> None:
    """The scheduler service the app started outlives the app by design: stop it (its runs die with it)."""
    try:
        pid = json.loads((home / ".docetl" / "_platform" / "scheduler.heartbeat").read_text())["pid"]
        os.kill(pid, 15)
    except (OSError, ValueError, KeyError):
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    try:
        yield ctx
    finally:
        ctx.close()


# -- steps --------------------------------------------------------------------------------------------------
def shot(page: Page, name: str) -> None:
    """A full-page screenshot once the run has finished and every table has drawn its cells."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    for placeholder in ("stSkeleton", "stSkeletonElement", "stAppSkeleton"):  # lazily loaded elements
        expect(page.get_by_test_id(placeholder)).to_have_count(0)
    for table in page.get_by_test_id("stDataFrame").all():
        expect(table.get_by_test_id("data-grid-canvas")).to_be_visible()
        expect(table.locator("canvas td").first).to_be_attached()  # the grid's accessible copy of its cells
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def heading(page: Page, text: str) -> Locator:
    return page.get_by_role("heading", name=text, exact=True)


def expect_login_page(page: Page) -> None:
    expect(heading(page, ZH["login.title"])).to_be_visible()
    expect(page.get_by_label(ZH["login.username"], exact=True)).to_be_visible()


def submit_login(page: Page, username: str, password: str) -> None:
    page.get_by_label(ZH["login.username"], exact=True).fill(username)
    page.get_by_label(ZH["login.password"], exact=True).fill(password)
    page.get_by_role("button", name=ZH["login.submit"], exact=True).click()


def log_in(page: Page, url: str, username: str) -> str:
    """Log in through the form; returns the login cookie the browser was given."""
    page.goto(url)
    expect_login_page(page)
    submit_login(page, username, PASSWORDS[username])
    expect(heading(page, ZH["overview.title"].format(name=username))).to_be_visible()
    cookie = wait_for_cookie(page.context, page)
    # the browser confirmed the write, and the run that brought the confirmation took the frame away
    expect(page.locator('iframe[title*="cookie_manager"]')).to_have_count(0)
    return cookie


def wait_for_cookie(context: BrowserContext, page: Page) -> str:
    """The login cookie is written by a component on the run after login: poll for it, bounded."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        for cookie in context.cookies():
            if cookie["name"] == COOKIE and cookie["value"]:
                return cookie["value"]
        page.wait_for_timeout(200)
    pytest.fail(f"no {COOKIE} cookie within {WAIT_MS} ms; cookies: {context.cookies()}")


def has_cookie(context: BrowserContext) -> bool:
    return any(c["name"] == COOKIE and c["value"] for c in context.cookies())


def cookie_gone(context: BrowserContext, page: Page) -> bool:
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        if not has_cookie(context):
            return True
        page.wait_for_timeout(200)
    return False


# -- tests --------------------------------------------------------------------------------------------------
def test_wrong_password_refused_then_login_and_switch_language(app_url: str, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(app_url)
    expect_login_page(page)
    expect(page.get_by_label(ZH["login.password"], exact=True)).to_be_visible()
    shot(page, "01-login")

    submit_login(page, "admin", "not-the-password")
    expect(page.get_by_text(ZH["auth.error.bad_credentials"], exact=True)).to_be_visible()
    expect_login_page(page)
    expect(heading(page, ZH["overview.title"].format(name="admin"))).to_have_count(0)
    shot(page, "02-login-wrong-password")

    submit_login(page, "admin", PASSWORDS["admin"])
    expect(heading(page, ZH["overview.title"].format(name="admin"))).to_be_visible()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("button", name=ZH["shell.logout"])).to_be_visible()
    expect(sidebar.get_by_role("link", name=ZH["nav.users"], exact=True)).to_be_visible()
    expect(heading(page, ZH["login.title"])).to_have_count(0)
    wait_for_cookie(context, page)
    shot(page, "03-overview-zh")

    sidebar.get_by_role("combobox", name=ZH["shell.language"]).click()
    page.get_by_role("option", name="English", exact=True).click()
    expect(heading(page, EN["overview.title"].format(name="admin"))).to_be_visible()
    expect(sidebar.get_by_role("button", name=EN["shell.logout"])).to_be_visible()
    expect(sidebar.get_by_role("link", name=EN["nav.users"], exact=True)).to_be_visible()
    expect(heading(page, ZH["overview.title"].format(name="admin"))).to_have_count(0)
    shot(page, "04-overview-en")


def test_cookie_restores_session_and_logout_invalidates_it(app_url: str, browser: Browser,
                                                           context: BrowserContext) -> None:
    page = context.new_page()
    token = log_in(page, app_url, "editor")

    again = context.new_page()  # same browser profile, new Streamlit session: restored from the cookie
    again.goto(app_url)
    expect(heading(again, ZH["overview.title"].format(name="editor"))).to_be_visible()
    expect(heading(again, ZH["login.title"])).to_have_count(0)
    shot(again, "05-restored-from-cookie")
    again.close()

    page.get_by_test_id("stSidebar").get_by_role("button", name=ZH["shell.logout"]).click()
    expect_login_page(page)
    expect(heading(page, ZH["overview.title"].format(name="editor"))).to_have_count(0)
    assert cookie_gone(context, page), "logout left the login cookie in the browser"
    shot(page, "06-logged-out")

    # the browser forgot the cookie; a copy kept from before logout must no longer count on the server
    replay = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    try:
        replay.add_cookies([{"name": COOKIE, "value": token, "url": app_url}])
        stale = replay.new_page()
        stale.goto(app_url)
        expect_login_page(stale)
        expect(heading(stale, ZH["overview.title"].format(name="editor"))).to_have_count(0)
        shot(stale, "07-old-cookie-refused")
    finally:
        replay.close()


def test_viewer_sees_no_admin_pages(app_url: str, context: BrowserContext) -> None:
    page = context.new_page()
    log_in(page, app_url, "viewer")
    nav = page.get_by_test_id("stSidebarNav")
    expect(nav.get_by_role("link", name=ZH["nav.overview"], exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name=ZH["nav.account"], exact=True)).to_be_visible()
    for key in ("nav.users", "nav.system"):
        expect(page.get_by_role("link", name=ZH[key], exact=True)).to_have_count(0)
    shot(page, "08-viewer-overview")

    # typing the admin pages' addresses (a new session each, signed in by the cookie log_in waited for) (and their file names) leads nowhere near them
    for path in ("people", "system-settings", "users", "system"):
        page.goto(f"{app_url}/{path}")
        expect(heading(page, ZH["overview.title"].format(name="viewer"))).to_be_visible()
        expect(heading(page, ZH["users.title"])).to_have_count(0)
        expect(heading(page, ZH["system.title"])).to_have_count(0)
        expect(page.get_by_role("link", name=ZH["nav.users"], exact=True)).to_have_count(0)
        shot(page, f"09-viewer-typed-{path}")


def test_cookie_written_and_deleted_when_component_frames_load_slowly(app_url: str, browser: Browser) -> None:
    """The cookie is written and deleted by a component frame; a rerun that arrives before the frame has
    loaded (the cookie manager's own read triggers one) used to drop the write or the delete. Delay the
    component requests by varying amounts to make that race likely: both must still happen."""
    jitter = random.Random(20261128)

    def slow(route: Route) -> None:
        time.sleep(jitter.uniform(0.0, 0.8))
        route.continue_()

    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    try:
        ctx.route("**/component/**", slow)
        page = ctx.new_page()
        log_in(page, app_url, "editor")
        page.get_by_test_id("stSidebar").get_by_role("button", name=ZH["shell.logout"]).click()
        expect_login_page(page)
        assert cookie_gone(ctx, page), "logout left the login cookie in the browser"
    finally:
        ctx.close()


def test_editor_runs_the_offline_template_and_sees_the_result(app_url: str, context: BrowserContext) -> None:
    """Log in → Execute → a pipeline from the offline template → Run on the imported sample orders → the
    scheduler service (started by the app) executes it → the page shows the result table by itself."""
    page = context.new_page()
    log_in(page, app_url, "editor")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=ZH["nav.execute"], exact=True).click()
    expect(heading(page, ZH["execute.title"])).to_be_visible()
    page.get_by_role("button", name=ZH["execute.create"], exact=True).click()
    expect(page.get_by_text(ZH["execute.valid"], exact=True)).to_be_visible()
    shot(page, "10-execute-pipeline")
    page.get_by_role("button", name=ZH["execute.run"], exact=True).click()
    done = ZH["run.completed"].split("{")[0]  # "已完成：输入 " — the rest holds the figures
    expect(page.get_by_text(done).first).to_be_visible(timeout=120_000)
    expect(page.get_by_text(ZH["run.page"].split("{")[0]).first).to_be_visible()
    table = page.get_by_test_id("stDataFrame").last
    expect(table.get_by_test_id("data-grid-canvas")).to_be_visible()
    expect(table.locator("canvas td").filter(has_text="华东").first).to_be_attached()  # a region total
    shot(page, "11-execute-result")


def test_editor_uploads_an_excel_file_previews_it_and_imports_it(app_url: str, context: BrowserContext,
                                                                 tmp_path: Path) -> None:
    """Data Center → the file goes through Streamlit's real upload endpoint → the preview finds the
    header under a title block → Import → the background import ends and the page says so by itself."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "销售"
    sheet.append(["2026 年第三季度销售报表"])  # a title block above the header, as reports have
    sheet.append([])
    sheet.append(["地区", "数量", "备注"])
    for i in range(1, 26):
        sheet.append([("华东", "华北", "华南")[i % 3], i * 10, f"第 {i} 单"])
    path = tmp_path / "季度报表.xlsx"
    book.save(path)

    page = context.new_page()
    log_in(page, app_url, "editor")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=ZH["nav.data_center"], exact=True).click()
    expect(heading(page, ZH["datacenter.title"])).to_be_visible()
    expect(page.get_by_test_id("stFileUploaderDropzoneInstructions")).to_contain_text(f"{MAX_MB}MB")  # the limit
    too_big = tmp_path / "too_big.csv"
    too_big.write_bytes(b"a,b\n" + b"1,2\n" * ((MAX_MB * 2**20) // 4 + 1))  # just past the limit
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(too_big))
    expect(page.get_by_test_id("stFileUploader").get_by_role("alert")).to_contain_text(f"{MAX_MB}")  # refused
    expect(page.get_by_label(ZH["datacenter.header_row"], exact=True)).to_have_count(0)  # nothing previewed
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    expect(page.get_by_label(ZH["datacenter.header_row"], exact=True)).to_have_value("3")  # detected
    columns = page.get_by_test_id("stDataFrame").first
    expect(columns.locator("canvas td").filter(has_text="地区").first).to_be_attached()
    expect(page.get_by_label(ZH["datacenter.name"], exact=True).first).to_have_value("季度报表")
    shot(page, "12-datacenter-preview")
    page.get_by_role("button", name=ZH["datacenter.import"], exact=True).click()
    expect(page.get_by_text(ZH["datacenter.imported"].format(name="季度报表", rows=25))).to_be_visible()
    expect(page.get_by_test_id("stFileUploaderFile")).to_have_count(0)  # a fresh uploader for the next file
    shot(page, "13-datacenter-imported")
