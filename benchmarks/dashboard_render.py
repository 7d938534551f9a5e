"""Dashboard render time per page in headless Chromium: cold (first visit, empty cache) and warm (cached).

Targets from the issue: <= 5 s cold and <= 2 s warm per page on the demo data (figures, not a gate).

    shironzi demo                                  # fills SHIRONZI_HOME with the demo data
    python benchmarks/dashboard_render.py [--home .shironzi] [--admin-key KEY]

Without --admin-key a throwaway platform admin key is issued (and revoked afterwards). The browser
driving below is shared with `tests/apps/test_browser.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (nav label, file stem, text the page's title contains)
PAGES: tuple[tuple[str, str, str], ...] = (
    ("Overview", "overview", "overview"), ("Retention", "retention", "retention"),
    ("Churn risk", "churn_risk", "churn risk"), ("Data health", "data_health", "data health"),
    ("Tenants", "tenants", "Tenants"), ("Pipelines", "pipelines", "Pipelines"), ("Models", "models", "Models"),
    ("Platform health", "platform_health", "Platform health"), ("Compliance", "compliance", "Compliance"),
)
COLD_TARGET_S, WARM_TARGET_S = 5.0, 2.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int) -> list[str]:
    """`shironzi serve dashboard` (the declared entry point), or the same function when the installed
    package metadata predates it."""
    if any(ep.name == "serve.dashboard" for ep in entry_points(group="shironzi.cli")):
        return [str(Path(sys.executable).with_name("shironzi")), "serve", "dashboard", "--port", str(port)]
    return [sys.executable, "-c", "import typer; from apps.cli import serve_dashboard; typer.run(serve_dashboard)",
            "--port", str(port)]


@contextmanager
def running_dashboard(port: int, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start the dashboards on `port`, wait until healthy, yield the URL; stop them afterwards."""
    import httpx

    with log_path.open("w") as log:
        process = subprocess.Popen(serve_command(port), cwd=ROOT, env=env or dict(os.environ), stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok":
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboards did not start: see {log_path}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_rendered(page: Any, title: str, *, timeout_ms: int = 60_000) -> None:
    """Until an h1 holds `title` and the script run has finished; a timeout says what the page shows instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("t => [...document.querySelectorAll('h1')].some(h => h.innerText.includes(t))",
                               arg=title, timeout=timeout_ms)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    except PlaywrightTimeout as error:
        raise AssertionError(f"no page titled {title!r} rendered within {timeout_ms / 1000:g} s; the page shows "
                             f"{page_state(page)}") from error


def page_state(page: Any) -> str:
    """What a page shows, for an error message: URL, h1s, script state, sign-in form, exception, body text."""
    body = " ".join(page.inner_text("body").split())
    return (f"url={page.url} h1s={page.locator('h1').all_inner_texts()} "
            f"script={page.locator('[data-testid=stApp]').first.get_attribute('data-test-script-state')} "
            f"sign_in_form={page.locator('input[type=password]').count() > 0} exception={exception_text(page)!r} "
            f"body={body[:400]!r}")


def open_page(page: Any, label: str, title: str) -> float:
    """Click a sidebar link; seconds until the page has rendered."""
    started = time.perf_counter()
    page.locator('[data-testid="stSidebarNavLink"]', has_text=label).first.click()
    wait_rendered(page, title)
    return time.perf_counter() - started


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url)
    page.wait_for_selector('input[type="password"]', timeout=60_000)
    page.fill('input[type="password"]', key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=60_000)


def exception_text(page: Any) -> str | None:
    """The first Streamlit exception box's text, if any."""
    boxes = page.locator('[data-testid="stException"]')
    return boxes.first.inner_text() if boxes.count() else None


def pick_tenant(page: Any, index: int) -> str:
    """Choose the index-th tenant in the operator's sidebar picker; returns its label."""
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    option = page.get_by_role("option").nth(index)
    label = str(option.inner_text())
    option.click()
    return label


def measure_pages(page: Any, url: str, admin_key: str, *, screenshots: Path | None = None,
                  prefix: str = "operator") -> tuple[float, dict[str, tuple[float, float]]]:
    """Sign in as an operator, then visit every page twice: (seconds from sign-in to the first page,
    {stem: (cold seconds, warm seconds)}). The first session also pays the server's one-off imports, so
    the cold round starts by switching to a second tenant (nothing of it cached yet) and times the
    Overview re-render as the Overview's cold figure. Every page is checked for exception boxes."""
    started = time.perf_counter()
    sign_in(page, url, admin_key)
    wait_rendered(page, PAGES[0][2])
    first_session = time.perf_counter() - started
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    before = page.locator("h1").first.inner_text()
    if page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').count():
        started = time.perf_counter()
        pick_tenant(page, 1)
        page.wait_for_function("b => { const h = document.querySelector('h1'); return h && h.innerText !== b; }",
                               arg=before, timeout=60_000)
        wait_rendered(page, PAGES[0][2])
        cold[PAGES[0][1]] = time.perf_counter() - started
    for rounds, pages, times in (("cold", PAGES[1:], cold), ("warm", PAGES, warm)):
        for label, stem, title in pages:
            times[stem] = open_page(page, label, title)
            error = exception_text(page)
            if error:
                raise AssertionError(f"{prefix} {stem} ({rounds}): {error}")
            if screenshots is not None and rounds == "warm":
                page.screenshot(path=str(screenshots / f"{prefix}-{stem}.png"), full_page=True)
    cold.setdefault(PAGES[0][1], first_session)
    return first_session, {stem: (cold[stem], warm[stem]) for _, stem, _ in PAGES}


def print_timings(first_session: float, timings: dict[str, tuple[float, float]]) -> None:
    print(f"first sign-in to a rendered page (fresh server process): {first_session:.2f} s")
    print(f"{'page':<12} {'cold s':>7} {'warm s':>7}   (targets: cold <= {COLD_TARGET_S:g} s, "
          f"warm <= {WARM_TARGET_S:g} s)")
    for stem, (cold, warm) in timings.items():
        flags = ("" if cold <= COLD_TARGET_S else " cold>target") + ("" if warm <= WARM_TARGET_S else " warm>target")
        print(f"{stem:<12} {cold:7.2f} {warm:7.2f}{flags}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="SHIRONZI_HOME holding the data (default: env)")
    parser.add_argument("--admin-key", default=None, help="A platform admin key (default: issue a throwaway one)")
    parser.add_argument("--port", type=int, default=0, help="Port (default: a free one)")
    args = parser.parse_args()
    if args.home is not None:
        os.environ["SHIRONZI_HOME"] = str(args.home.resolve())
    from playwright.sync_api import sync_playwright

    from benchmarks._machine import print_header
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    get_settings.cache_clear()
    print_header("dashboard render time (headless Chromium)")
    registry = get_registry()
    ctx = TenantContext.admin(actor="benchmarks.dashboard_render", purpose="benchmark")
    issued = None
    key = args.admin_key
    if key is None:
        record, key = registry.issue_key(ctx, None, scopes=["admin"], label="dashboard benchmark")
        issued = record.prefix
    home = get_settings().home
    print(f"home       {home}  tenants={len(registry.tenant_directory())}\n")
    try:
        log = home / "logs" / "dashboard-benchmark.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with running_dashboard(args.port or free_port(), log) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                print_timings(*measure_pages(page, url, key))
            finally:
                browser.close()
    finally:
        if issued is not None:
            registry.revoke_key(ctx, issued)


if __name__ == "__main__":
    main()
