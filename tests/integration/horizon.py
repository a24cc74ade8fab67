"""Headless Chromium on the local fixture's Horizon (devstack/minicloud.sh), driven by selenium.

Only Debian's ``chromium`` and ``chromium-driver`` packages are used, by explicit path: selenium never looks for
or downloads a driver. Chromium is started with every background service off, so that on a closed network it only
ever talks to Horizon on loopback.
"""
from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HORIZON_URL = "http://127.0.0.1"  # the fixture's Horizon (apache on 127.0.0.1:80)
WINDOW = (1400, 900)
DEAD_END = "http://127.0.0.1:9/"  # a closed loopback port: where anything not meant for Horizon is sent
CHROMIUM_FLAGS = (
    # What the closed network needs: no background services, no first-run UI, a fresh profile (added in chromium()).
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    # Those flags alone still let Chromium 156 look up (DNS) and try to reach Google (sign-in, autofill, password
    # leak check, updates) and the default search engine's new tab page. Loopback only, enforced twice: every other
    # host name resolves to nothing without a DNS query, and every other request goes to a proxy on a closed loopback
    # port (loopback itself always bypasses a proxy). The Google service URLs point at that port too.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    f"--proxy-server={DEAD_END.rstrip('/')}",
    f"--gaia-url={DEAD_END}", f"--google-apis-url={DEAD_END}", f"--lso-url={DEAD_END}",
    f"--component-updater=url-source={DEAD_END}",
    ("--disable-features=AutofillServerCommunication,PasswordLeakDetection,OptimizationHints,Translate,MediaRouter,"
     "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater"),
    "--no-pings", "--no-default-browser-check", "--disable-client-side-phishing-detection",
    "--disable-domain-reliability", "--disable-breakpad", "--disable-extensions", "--disable-dev-shm-usage",
    "--disable-search-engine-choice-screen", "--hide-scrollbars", "--password-store=basic",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
PREFERENCES = {
    "credentials_enable_service": False, "profile.password_manager_enabled": False,
    "profile.password_manager_leak_detection": False, "autofill.profile_enabled": False,
    "net.network_prediction_options": 2,  # no DNS prefetch or preconnect
    "safebrowsing.enabled": False, "search.suggest_enabled": False, "signin.allowed": False,
    # Debian's default search engine (DuckDuckGo) would open https://start.duckduckgo.com/ as the new tab page.
    "default_search_provider_data.template_url_data": {
        "keyword": "none", "short_name": "none", "url": f"{DEAD_END}?q={{searchTerms}}", "new_tab_url": "about:blank"},
}
# Selenium Manager (the driver downloader) is skipped anyway because the driver's path is given (selenium logs
# "Skipping Selenium Manager"); should it ever run, it must neither download nor phone home.
OFFLINE_ENV = {"SE_OFFLINE": "true", "SE_AVOID_STATS": "true"}


def browser_skip_reason() -> str:
    """Why the browser tests cannot run here (empty when they can)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        return (f"{' and '.join(missing)} not found: `apt-get install -y --no-install-recommends chromium "
                "chromium-driver`")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed: `pip install -e '.[dev]'`"
    return ""


def horizon_skip_reason(base: str = "") -> str:
    """Why Horizon cannot be used (empty when its login page answers)."""
    import requests

    url = f"{base or HORIZON_URL}/auth/login/"
    try:
        with requests.Session() as session:
            session.trust_env = False  # straight to loopback, whatever proxy the environment names
            answer = session.get(url, timeout=10)
    except requests.RequestException as exc:
        return f"Horizon does not answer at {url} ({type(exc).__name__}): start it with `devstack/minicloud.sh up`"
    if answer.status_code != 200 or 'name="username"' not in answer.text:
        return f"{url} answered {answer.status_code} without Horizon's login form"
    return ""


@contextmanager
def chromium(profile: Path, log_path: Path | None = None, net_log: Path | None = None,
             failure_shot: Path | None = None) -> Iterator[Any]:
    """A headless Chromium with a fresh profile under ``profile``, quit on exit; chromedriver's log goes to
    ``log_path``, Chromium's network log (written when it quits; see ``outside_traffic``) to ``net_log``, and a
    screenshot of the page to ``failure_shot`` when the block raises."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    saved = {name: os.environ.get(name) for name in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if net_log is not None:
        options.add_argument(f"--log-net-log={net_log}")
    options.add_experimental_option("prefs", PREFERENCES)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path) if log_path else os.devnull)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        driver.set_page_load_timeout(30)
        set_viewport(driver, *WINDOW)
        yield driver
    except BaseException:
        if failure_shot is not None:
            with suppress(Exception):  # the original error is the one to raise
                driver.save_screenshot(str(failure_shot))
        raise
    finally:
        driver.quit()


def outside_traffic(net_log: Path) -> list[str]:
    """Everything in a Chromium network log that went, or was about to go, beyond loopback: a TCP connection to a
    non-loopback address, a DNS query, a datagram sent. (Chromium's IPv6 reachability check, a UDP ``connect()``
    that sends nothing, is not traffic; it happens for any host name, 127.0.0.1 included.)"""
    log = json.loads(net_log.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    found = []
    for event in log["events"]:
        name, params = names[event["type"]], event.get("params") or {}
        if name.startswith("DNS_TRANSACTION") or name == "UDP_BYTES_SENT":
            found.append(f"{name} {params}")
        elif name.startswith("TCP_CONNECT"):
            addresses = [params.get("address"), params.get("remote_address"), *params.get("address_list", [])]
            found += [f"{name} {a}" for a in addresses if a and not is_loopback(a)]
    return found


def is_loopback(address: str) -> bool:
    """For "host:port" and "[v6]:port" as the network log writes them."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return ipaddress.ip_address(host).is_loopback


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Sizes the window so that the page itself (what a screenshot shows) is ``width`` x ``height``."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def wait_until(what: str, probe: Callable[[], Any], timeout: float, done: Callable[[Any], bool] = bool,
               interval: float = 0.25) -> Any:
    """``probe()``'s first answer that is ``done``; after ``timeout`` an AssertionError naming ``what`` and the
    last answer (or the exception of the last try: a page still loading)."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            last = probe()
        except PermissionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a page still loading; tried again until the deadline
            last = exc
        else:
            if done(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def login(driver: Any, user: str, password: str, base: str = "", timeout: float = 30) -> None:
    """Logs in through Horizon's own form; fails with Horizon's message when the credentials are refused."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base or HORIZON_URL}/auth/login/")
    driver.find_element(By.ID, "id_username").send_keys(user)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.ID, "loginBtn").click()

    def landed() -> str:
        if "/auth/login" not in driver.current_url:
            return driver.current_url
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".alert-danger, .error") if e.text.strip()]
        if errors:
            raise PermissionError(f"Horizon refused the login of {user!r}: {' / '.join(errors)}")
        return ""

    wait_until(f"Horizon to log {user!r} in", landed, timeout)


def table_rows(driver: Any) -> list[dict[str, str]]:
    """Every data row of every table on the page, as {column heading: cell text} (both whitespace-normalized)."""
    return driver.execute_script("""
        const clean = s => (s || '').replace(/\\s+/g, ' ').trim();
        const rows = [];
        for (const table of document.querySelectorAll('table')) {
            const heads = [...table.querySelectorAll('thead tr:last-child th')].map(th => clean(th.innerText));
            for (const tr of table.querySelectorAll('tbody tr')) {
                const cells = [...tr.children].filter(c => c.tagName === 'TD');
                if (cells.length < 2) continue;   // "No items to display." and detail drawers
                const row = {};
                cells.forEach((td, i) => { row[heads[i] || `#${i}`] = clean(td.innerText); });
                rows.push(row);
            }
        }
        return rows;""")


def row_named(driver: Any, column: str, name: str) -> dict[str, str] | None:
    """The table row whose ``column`` reads exactly ``name``."""
    return next((row for row in table_rows(driver) if row.get(column) == name), None)


def scroll_to_text(driver: Any, text: str) -> None:
    """Centres the first table row containing ``text`` in the window (for a screenshot that shows it)."""
    driver.execute_script("""
        for (const tr of document.querySelectorAll('table tbody tr')) {
            if (tr.innerText.includes(arguments[0])) { tr.scrollIntoView({block: 'center'}); return; }
        }""", text)
