"""Times page loads in headless Chromium for `labelport-bench ui`.

Signs in once, then opens each path `repeats` times (after one warm-up
load) and prints one JSON line per path with the Navigation Timing figures
of every load, in milliseconds from the start of the navigation:
`response_end` (the HTML has arrived), `dom_content_loaded`, `load` (the
page and its sub-resources are done). A USERNAME of `-` skips the sign-in
(the bench's plain relay serves the same pages with no sign-in). Usage:

    python navigation_timing.py BASE_URL USERNAME PASSWORD REPEATS CHROMIUM PATH...
"""

import json
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    base, username, password, repeats, chromium, *paths = sys.argv[1:]
    repeats = int(repeats)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        if username != "-":
            page.goto(base + "/user/login")
            page.fill("#login-email", username)
            page.fill("#login-password", password)
            page.click("#login-form button[type=submit]")
            page.wait_for_url("**/projects")
        for path in paths:
            loads = []
            for i in range(repeats + 1):
                page.goto(base + path, wait_until="load")
                rows = page.eval_on_selector_all("#task-table tbody tr[data-task]", "rows => rows.length")
                timing = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"
                )
                timing["rows"] = rows
                if i > 0:  # the first load warms caches
                    loads.append(timing)
            print(json.dumps({"path": path, "loads": loads}), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
