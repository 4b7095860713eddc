"""Alerts to a Slack-compatible incoming webhook (`ANUBIS_SLACK_WEBHOOK_URL`).

Without the variable, alerts go to the log only. The final text of every message passes
through `mask_text` just before it leaves (secrets redacted by value, then personal data
masked; the run link is left intact): alerts are read by people in a chat channel. A failing
webhook never fails the run that wanted to alert: the alert is logged instead, and the
webhook's URL (a credential) never appears in that log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from anubis_dagster.core.masking import mask_text
from anubis_dagster.settings import get_settings

WEBHOOK_ENV = "ANUBIS_SLACK_WEBHOOK_URL"
UI_URL_ENV = "ANUBIS_UI_URL"
log = logging.getLogger("anubis.alerts")


def ui_url(path: str) -> str:
    """A page of the Dagster UI (`path` starts with `/`)."""
    return get_settings().anubis_ui_url.rstrip("/") + path


def run_url(run_id: str) -> str:
    return ui_url(f"/runs/{run_id}")


@dataclass
class Alert:
    title: str
    lines: list[str]
    level: str = "info"  # info | warning | critical
    run_id: str | None = None
    #: the UI page the alert is about, linked instead of the run (e.g. the failing health
    #: check: the health run that found it succeeded, its page would show green)
    ui_path: str | None = None
    link_text: str = "Open in Dagster"

    def text(self) -> str:
        """The message as sent: built whole, then masked whole, so nothing added to a title or
        a line can skip the masking."""
        icon = {
            "info": ":information_source:",
            "warning": ":warning:",
            "critical": ":rotating_light:",
        }
        body = "\n".join(f"• {line}" for line in self.lines)
        link = ""
        if self.ui_path:
            link = f"\n<{ui_url(self.ui_path)}|{self.link_text}>"
        elif self.run_id:
            link = f"\n<{run_url(self.run_id)}|Open the run in Dagster>"
        return mask_text(f"{icon.get(self.level, '')} *{self.title}*\n{body}{link}")


def send_alert(alert: Alert, *, webhook_url: str | None = None, timeout: float = 5.0) -> bool:
    """Post `alert`; True if a webhook accepted it. Logs it in every case."""
    text = alert.text()
    log.log(logging.WARNING if alert.level != "info" else logging.INFO, "alert: %s", text)
    secret = get_settings().anubis_slack_webhook_url
    url = webhook_url if webhook_url is not None else (secret and secret.get_secret_value())
    if not url:
        return False
    import httpx  # here: the read-only commands import this module, not the HTTP client

    try:
        response = httpx.post(url, json={"text": text}, timeout=timeout)
        response.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.warning(
            "alert webhook failed (%s); the alert above was not delivered", type(exc).__name__
        )
        return False
