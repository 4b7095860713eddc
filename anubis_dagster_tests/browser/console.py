"""The operator's tasks in the Dagster UI, driven through a real (headless) Chromium.

Shared by the browser test, which asserts on what the pages show, and by
`scripts/screenshots.py`, which photographs the same pages for docs/operating.md. Only what a
person does: open a page, type config in the Launchpad, click, read. Playwright drives the
system's Chromium (Debian's `chromium`); it never downloads a browser of its own.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

#: pages are photographed at this size: the docs' pictures stay readable at page width
VIEWPORT = {"width": 1400, "height": 900}
#: Dagster's UI fetches as it renders: a page may take a few seconds on a loaded machine
TIMEOUT_MS = 30_000
RUN_ID = re.compile(r"/runs/([0-9a-f-]{36})")


def chromium_path() -> str | None:
    """The system Chromium (`CHROMIUM` overrides), or None when it is not installed."""
    candidate = os.environ.get("CHROMIUM") or shutil.which("chromium")
    candidate = candidate or shutil.which("chromium-browser")
    return candidate if candidate and Path(candidate).exists() else None


@contextmanager
def headless_chromium(executable: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """One browser tab on the Dagster UI of `base_url`."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.page: Page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
        self.page.set_default_timeout(TIMEOUT_MS)

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    # -- Launchpad ----------------------------------------------------------------------------
    def launchpad(self, job: str, config_yaml: str, partition: str | None = None) -> None:
        """The job's Launchpad with this run config typed in (and this partition picked)."""
        page = self.open(f"/locations/anubis/jobs/{job}/playground")
        if partition is not None:
            self.pick_partition(partition)
        editor = page.locator(".CodeMirror").first
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        # as one paste: typed key by key, the editor would auto-indent every new line
        page.keyboard.insert_text(config_yaml)
        # the editor checks types only; our own checks (dates, ids) answer at Launch Run
        page.get_by_text("No errors").wait_for()

    def forget_sessions(self) -> None:
        """Start the Launchpad afresh: it keeps each job's last config and partition in the
        browser's local storage."""
        self.open("/")
        self.page.evaluate("window.localStorage.clear()")

    def pick_partition(self, partition: str) -> None:
        page = self.page
        box = page.get_by_placeholder("Partition").first
        box.click()
        box.fill(partition)
        page.get_by_role("menuitem", name=partition, exact=True).first.click()

    def launch(self) -> str:
        """Click Launch Run; the new run's id (the UI opens its page)."""
        self.page.get_by_role("button", name="Launch Run").click()
        self.page.wait_for_url(RUN_ID)
        match = RUN_ID.search(self.page.url)
        assert match, self.page.url
        return match.group(1)

    def launch_refused(self, confirm: bool = False) -> str:
        """Click Launch Run on a config the code location refuses (`confirm`: answer Dagster's
        "Are you sure?" first, as for a partitioned job with no partition picked); the error
        dialog's text."""
        self.page.get_by_role("button", name="Launch Run").click()
        if confirm:
            question = self.page.get_by_text("Are you sure you want to launch")
            question.wait_for()
            self.page.get_by_role("button", name="Confirm").click()
            question.wait_for(state="hidden")  # it fades out while the answer comes
        error = self.page.get_by_text("Error", exact=True)
        dialog = self.page.get_by_role("dialog").filter(has=error)
        error.first.wait_for()
        return dialog.inner_text()

    # -- run page -----------------------------------------------------------------------------
    def run_page(self, run_id: str) -> Page:
        page = self.open(f"/runs/{run_id}")
        page.get_by_text("RUN_SUCCESS").or_(page.get_by_text("RUN_FAILURE")).first.wait_for()
        return page

    def markdown(self, label: str) -> Locator:
        """Open the markdown metadata entry `label` of the run's events; its dialog."""
        page = self.page
        row = page.locator("tr", has=page.get_by_text(label, exact=True))
        row.get_by_text("[Show Markdown]").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("heading").first.wait_for()
        return dialog

    def close_dialog(self) -> None:
        self.page.get_by_role("button", name="Close").click()

    def filter_events(self, text: str) -> None:
        """Show only the run's events that contain `text`."""
        self.page.get_by_placeholder("Filter").first.fill(text)

    # -- automation ---------------------------------------------------------------------------
    def set_sensor(self, name: str, running: bool) -> Page:
        """Start or stop a sensor from its page (the toggle at the top)."""
        from playwright.sync_api import expect

        page = self.open(f"/locations/anubis/sensors/{name}")
        switch = page.get_by_role("checkbox").first
        switch.wait_for(state="attached")
        if switch.is_checked() != running:
            switch.locator("xpath=..").click()  # the input is hidden under its drawn switch
        expect(switch).to_be_checked(checked=running)
        return page

    # -- assets -------------------------------------------------------------------------------
    def asset_checks(self, asset_path: list[str]) -> Page:
        """The Checks tab of an asset."""
        page = self.open(f"/assets/{'/'.join(asset_path)}?view=checks")
        page.get_by_text(re.compile(r"^Checks \(\d+\)$")).wait_for()
        return page

    def shot(self, path: Path, full_page: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.mouse.move(1, 1)  # no tooltip left over a field
        self.page.wait_for_timeout(800)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path
