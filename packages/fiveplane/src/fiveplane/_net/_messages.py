"""Messages about URL checks that name the origin (scheme, host, port) and a digest, never a path or a query.

Shared by the network plane's findings and the governed transport's exceptions: both end up in
evidence (a finding, a tool's error), which must not quote what a URL carries.
"""

from __future__ import annotations

from .._decisions import short_digest
from ._egress import Scope, UrlCheck
from ._url import DEFAULT_PORTS

__all__ = ["check_message", "subject"]


_URL_ERRORS = {
    "empty_host": "it has no host",
    "invalid_host": "its host is not a valid host name",
    "invalid_idn": "its host is not a valid IDNA 2008 name",
    "invalid_ipv4": "its host ends in a number but is not a valid IPv4 address",
    "nonstandard_ip": "its host is an IP address in a non-standard notation (write IP addresses as a dotted quad)",
    "percent_encoded_host": "its host is percent-encoded (hosts must be written plainly)",
    "invalid_port": "its port is not valid",
    "invalid_url": "it is not an absolute URL of the form scheme://host/...",
    "backslash": "it contains a backslash, which browsers and some clients read as '/'",
    "whitespace": "its host part contains white space",
    "control_character": "it contains a control character (tab, newline, NUL, ...) that clients strip or reject",
    "userinfo": "it carries user info before '@'",
}
"""What each URL error code means, for messages that do not quote the URL."""


def _origin_text(check: UrlCheck) -> str:
    """``scheme://host[:port]`` of a URL check, ``host[:port]`` of a host check: never the path or query."""
    if check.url is not None:
        u = check.url
        port = f":{u.port}" if u.explicit_port and u.port != DEFAULT_PORTS.get(u.scheme) else ""
        return f"{u.scheme}://{u.host.url_form}{port}"
    if check.host is not None:
        return check.host.url_form + (f":{check.port}" if check.port is not None else "")
    return ""


def subject(check: UrlCheck, raw: str) -> str:
    """How a message names the checked value: its origin (host only) and a short digest of the text."""
    ref = short_digest(raw)
    origin = _origin_text(check)
    if check.url is not None:
        return f"the URL to {origin} ({ref})"
    if check.host is not None:
        return f"the host {origin} ({ref})"
    return f"an invalid URL ({ref})"


def _ssrf_reason(check: UrlCheck) -> str:
    prefix, suffix = f"{check.target} is blocked: ", " (SSRF protection)"
    message = check.message.removeprefix("host ")
    if message.startswith(prefix) and message.endswith(suffix):
        return message[len(prefix) : -len(suffix)]
    return "it reaches a private, loopback or metadata address"


def check_message(check: UrlCheck, raw: str, scope: Scope) -> str:
    """The message of one URL / host check, naming the host and a digest, never the path or query."""
    who = subject(check, raw)
    code = check.code
    if code == "allowed":
        return f"{who}: no SSRF risk found" if check.ssrf else f"{who} is allowed by egress rule {check.rule_id}"
    if code == "ssrf":
        return f"{who} is blocked: {_ssrf_reason(check)} (SSRF protection)"
    if code == "scheme_blocked" and check.url is not None:
        return f"{who} is blocked: the {check.url.scheme}: scheme is blocked (used to smuggle requests to internal services)"
    if code == "egress_denied":
        return f"{who} is denied by egress rule {check.rule_id}"
    if code == "not_allowed":
        return f"{who} is not on the egress allow-list for {scope.describe()}"
    return f"{who} is blocked: {_URL_ERRORS.get(code, f'it is not a valid URL ({code})')}"
