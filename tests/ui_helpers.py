"""Helpers of tests/test_ui.py (and benchmarks/ui_load.py): a UI server on 127.0.0.1 in this process, a headless
Chromium driven by Selenium (Debian's `chromium` + `chromium-driver`), and waiting for the page.

Run as a script to take the docs' screenshots of every tab with a real model:

    python tests/ui_helpers.py screenshots [--model DIR] [--out docs/img]
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# The browser may only reach the server: any other host fails to resolve, so a CDN request would show up as a
# failed resource (checked in test_ui.py) instead of silently succeeding.
OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, outdir, port: int | None = None):
    """(demo, url) of a UI on 127.0.0.1 serving `model`, writing into `outdir`."""
    from t2ikit.ui.server import start

    return start(model=str(model), host="127.0.0.1", port=port or free_port(), outdir=outdir, threads=1, quiet=True)


def find_browser() -> tuple[str | None, str | None]:
    """(chromium binary, chromedriver) on PATH, or None for each that is missing."""
    binary = next((shutil.which(c) for c in CHROMIUM_CANDIDATES if shutil.which(c)), None)
    return binary, shutil.which("chromedriver")


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium (Selenium) that can reach 127.0.0.1 only."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = find_browser()
    if binary is None or driver is None:
        raise RuntimeError("the browser tests need Debian's chromium and chromium-driver: "
                           "apt-get install -y chromium chromium-driver (.ci/run does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", f"--host-resolver-rules={OFFLINE_RULES}",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(condition, timeout: float = 30.0, interval: float = 0.1, what: str = "the page"):
    """Poll `condition()` until it returns something truthy; its value, or TimeoutError naming `what`."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            value = condition()
        except Exception as err:  # an element not there yet, a stale reference
            last, value = err, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}" + (f" (last error: {last})" if last else ""))


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_tab(driver, label: str) -> None:
    """Click the tab button whose text is `label`."""
    from selenium.webdriver.common.by import By

    button = wait_for(lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']")
                               if b.text.strip() == label], what=f"the {label} tab")[0]
    button.click()


def set_text(driver, elem_id: str, text: str) -> None:
    """Type into the textbox (or number box) of the component with `elem_id`."""
    box = wait_for(lambda: css(driver, f"#{elem_id} textarea, #{elem_id} input"), what=f"#{elem_id}")
    box.clear()
    box.send_keys(text)


def toasts(driver) -> list[str]:
    """Texts of the messages (gr.Error / gr.Info) shown in the page now."""
    return [t.text for t in css_all(driver, ".toast-body") if t.text.strip()]


def screenshots(model: str | None, out: str) -> list[Path]:
    """docs/img/ui-*.png: every tab of a UI serving `model`, after a generation, with the shipped model's images."""
    import tempfile

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from t2ikit.models.registry import resolve_model

    with tempfile.TemporaryDirectory() as tmp:
        demo, url = start_server(resolve_model(model), tmp)
        driver = chrome(height=1100)  # tall enough for the Generate tab's seed row
        paths = []
        try:
            driver.get(url)
            set_text(driver, "prompt", "a red circle to the left of a (blue:1.2) square")
            set_text(driver, "seed", "7")
            css(driver, "#count input[type='number']").clear()
            css(driver, "#count input[type='number']").send_keys("4")
            css(driver, "#generate").click()
            wait_for(lambda: len(css_all(driver, "#gallery img")) >= 4, timeout=300, what="the images")
            time.sleep(1)
            for label, name, action in [("Generate", "generate", None), ("Edit", "edit", "send-to-edit"),
                                        ("Explain", "explain", "send-to-explain"), ("PNG Info", "pnginfo", None),
                                        ("Bench", "bench", None)]:
                if action:
                    open_tab(driver, "Generate")
                    css(driver, f"#{action}").click()
                    time.sleep(1)
                open_tab(driver, label)
                if name == "explain":
                    css(driver, "#explain").click()
                    wait_for(lambda: css_all(driver, "#explain-maps img"), timeout=300, what="the maps")
                elif name == "edit":
                    set_text(driver, "edit-target", "a red circle to the left of a green square")
                    css(driver, "#edit").click()
                    wait_for(lambda: css_all(driver, "#edit-out img"), timeout=300, what="the edit")
                elif name == "pnginfo":
                    png = sorted(Path(tmp).glob("*.png"))[0]
                    css(driver, "#info-file input[type='file']").send_keys(str(png))
                    wait_for(lambda: "Steps" in css(driver, "#info-text textarea").get_attribute("value"),
                             what="the parameters")
                elif name == "bench":
                    css(driver, "#bench").click()
                    wait_for(lambda: css_all(driver, "#bench-table td"), timeout=600, what="the bench table")
                time.sleep(1)
                path = out_dir / f"ui-{name}.png"
                driver.save_screenshot(str(path))
                paths.append(path)
        finally:
            driver.quit()
            demo.close()
    return paths


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["screenshots"])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for p in screenshots(args.model, args.out):
        print(p)
