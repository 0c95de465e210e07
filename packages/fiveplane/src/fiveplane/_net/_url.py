"""URL parsing and host canonicalization, strict where clients disagree.

The split of a URL into scheme, user info, host, port and path follows httpx's parser (RFC 3986:
the authority ends at the first ``/``, ``?`` or ``#``; the host follows the *last* ``@``; IDNA 2008
for non-ASCII host names), so what is checked here is what httpx will connect to. Where other
clients (browsers, requests/urllib3, curl, ``getaddrinfo``) would read the same text differently,
the URL is rejected instead of guessed at:

* control characters (tab, CR, LF, NUL: WHATWG parsers silently drop them) and backslashes
  (browsers read ``\\`` as ``/``) anywhere;
* whitespace in the authority, user info (``http://good.example@evil.example``: the host is
  ``evil.example``) unless explicitly allowed, a missing or extra ``//``;
* percent-encoded host names, invalid IDNA, invalid punycode labels;
* IPv4 addresses in any notation but the dotted quad (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``: ``inet_aton`` reads them all as 127.0.0.1), parsed the WHATWG way so the message can
  say what they stand for;
* ports that are not 1 to 5 decimal digits in 1..65535.

Host names are lower-cased, punycode-encoded and lose one trailing dot; IPv6 literals lose their
zone id (``[fe80::1%25eth0]``). :func:`canonical_host` and :func:`parse_url` are pure and cached.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

import idna

from ._addr import IPAddress, classify_ip

__all__ = [
    "DEFAULT_PORTS",
    "Host",
    "ParsedURL",
    "UrlError",
    "canonical_host",
    "find_urls",
    "parse_host_port",
    "parse_url",
]

MAX_URL_LENGTH = 65536
DEFAULT_PORTS: dict[str, int] = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "ftp": 21,
    "gopher": 70,
    "ldap": 389,
    "ldaps": 636,
    "dict": 2628,
    "tftp": 69,
    "sftp": 22,
    "ssh": 22,
    "smb": 445,
}

_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_CHARS = re.compile(r"[a-z0-9_\-.]+")
_DIGITS = re.compile(r"[0-9]+")
_HEXNUM = re.compile(r"0x[0-9a-f]*")
_AMBIGUOUS_PATH = re.compile(r"%(?:2e|2f|5c|00|25)|/\.\.?(?:/|$)|//", re.IGNORECASE)
_STRIP = "".join(chr(i) for i in range(0x21))
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{1,31}:[/\\]{2}[^\s<>\"'`]*")
_TRAILING_PUNCT = ".,;:!?)]}'\""


class UrlError(ValueError):
    """A URL (or host) that cannot be judged safely. ``code`` names the problem for findings."""

    def __init__(self, code: str, message: str, *, address: IPAddress | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address
        """The IP address the text stands for, when it could be worked out (for the message)."""
        self.host = host


@dataclass(frozen=True, slots=True)
class Host:
    """A canonical host: ASCII, lower case, punycode, no trailing dot; IPv6 without brackets or zone."""

    name: str
    ip: IPAddress | None = None
    display: str = ""
    """The Unicode form (for IDN) or the name, for messages."""
    trailing_dot: bool = False
    zone: str = ""

    @property
    def url_form(self) -> str:
        return f"[{self.name}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.name

    def __str__(self) -> str:
        return self.display or self.name


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """An absolute URL, split the way httpx splits it, with a canonical host."""

    raw: str
    scheme: str
    host: Host
    port: int | None
    """The effective port (the scheme's default when none is written); None for unknown schemes without one."""
    explicit_port: bool
    path: str
    query: str | None
    userinfo: str

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return (self.scheme, self.host.name, self.port)

    @property
    def ambiguous_path(self) -> bool:
        """The path holds encodings servers may decode differently (``%2e``, ``%2f``, ``..``, ``//``)."""
        return bool(_AMBIGUOUS_PATH.search(self.path))

    def __str__(self) -> str:
        port = f":{self.port}" if self.explicit_port and self.port != DEFAULT_PORTS.get(self.scheme) else ""
        query = f"?{self.query}" if self.query is not None else ""
        return f"{self.scheme}://{self.host.url_form}{port}{self.path}{query}"

    def short(self, limit: int = 120) -> str:
        text = str(self)
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _ipv4_number(part: str) -> int | None:
    radix = 10
    if len(part) >= 2 and part[:2] == "0x":
        part, radix = part[2:], 16
    elif len(part) >= 2 and part[0] == "0":
        part, radix = part[1:], 8
    if part == "":
        return 0
    try:
        return int(part, radix) if part.isalnum() and part.isascii() else None
    except ValueError:
        return None


def _whatwg_ipv4(labels: list[str]) -> ipaddress.IPv4Address | None:
    """The WHATWG IPv4 parser (what browsers and ``inet_aton`` accept), or None if invalid."""
    if len(labels) > 4 or any(not p for p in labels):
        return None
    numbers = [_ipv4_number(p) for p in labels]
    if any(n is None for n in numbers):
        return None
    nums = [n for n in numbers if n is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        return None
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


@lru_cache(maxsize=8192)
def canonical_host(text: str) -> Host:
    """Canonicalize a URL host (``[v6]`` brackets allowed). Raises :class:`UrlError`."""
    if not text:
        raise UrlError("empty_host", "the URL has no host")
    if text[0] == "[":
        if text[-1] != "]":
            raise UrlError("invalid_host", f"unterminated IPv6 literal {text!r}")
        inner = text[1:-1]
        if inner[:1] in ("v", "V"):
            raise UrlError("invalid_host", f"IPvFuture literal {text!r} is not supported")
        zone = ""
        if "%" in inner:
            inner, _, zone = inner.partition("%")
            zone = unquote(zone[2:] if zone.startswith("25") else zone)
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise UrlError("invalid_host", f"invalid IPv6 literal {text!r}") from None
        return Host(name=ip6.compressed, ip=ip6, display=f"[{ip6.compressed}]", zone=zone)
    if "%" in text:
        decoded = unquote(text)
        raise UrlError(
            "percent_encoded_host",
            f"the host {text!r} is percent-encoded (it decodes to {decoded!r}); hosts must be written plainly",
            host=decoded,
        )
    lower = text.lower()
    display = ""
    if not lower.isascii():
        try:
            encoded = idna.encode(lower).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            try:
                mapped = idna.encode(text, uts46=True).decode("ascii")
            except (idna.IDNAError, UnicodeError, ValueError):
                mapped = ""
            hint = f" (browsers would read it as {mapped!r})" if mapped else ""
            raise UrlError("invalid_idn", f"the host {text!r} is not a valid IDNA 2008 name{hint}", host=mapped or None) from None
        display, lower = text, encoded
    name = lower
    trailing = name.endswith(".")
    if trailing:
        name = name[:-1]
    if not name or name[0] == "." or name[-1] == "." or ".." in name:
        raise UrlError("invalid_host", f"the host {text!r} has an empty label")
    if not _HOST_CHARS.fullmatch(name):
        bad = next(c for c in name if not _HOST_CHARS.fullmatch(c))
        raise UrlError("invalid_host", f"the host {text!r} contains {bad!r}, which is not allowed in a host name")
    labels = name.split(".")
    last = labels[-1]
    if _DIGITS.fullmatch(last) or _HEXNUM.fullmatch(last):
        ip4 = _whatwg_ipv4(labels)
        if ip4 is None:
            raise UrlError("invalid_ipv4", f"the host {text!r} ends in a number but is not a valid IPv4 address")
        if lower != str(ip4) or display:
            verdict = classify_ip(ip4)
            raise UrlError(
                "nonstandard_ip",
                f"the host {text!r} is the IPv4 address {ip4} ({verdict.reason}) in a non-standard notation; write IP addresses as a dotted quad",
                address=ip4,
            )
        return Host(name=str(ip4), ip=ip4, display=str(ip4))
    if len(name) > 253 or any(len(label) > 63 for label in labels):
        raise UrlError("invalid_host", f"the host {text!r} is longer than DNS allows")
    if "xn--" in name:
        try:
            unicode = idna.decode(name)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise UrlError("invalid_idn", f"the host {text!r} has an invalid punycode (xn--) label") from None
        display = display or unicode
    return Host(name=name, display=display or name, trailing_dot=trailing)


def _split_host_port(hostport: str, original: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        end = hostport.rfind("]")
        if end < 0:
            raise UrlError("invalid_host", f"unterminated IPv6 literal in {original!r}")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UrlError("invalid_port", f"unexpected {rest!r} after the IPv6 literal in {original!r}")
        return host, (rest[1:] if rest else None)
    host, sep, port = hostport.partition(":")
    return host, (port if sep else None)


def _port(text: str | None, scheme: str, original: str) -> tuple[int | None, bool]:
    if text is None or text == "":
        return DEFAULT_PORTS.get(scheme), False
    if not _DIGITS.fullmatch(text) or len(text) > 5 or not 0 < int(text) < 65536:
        raise UrlError("invalid_port", f"invalid port {text!r} in {original!r}")
    return int(text), True


def parse_url(raw: str, allow_userinfo: bool = False) -> ParsedURL:
    """Parse an absolute URL with an authority (``scheme://host...``). Raises :class:`UrlError`."""
    if not isinstance(raw, str):
        raise UrlError("invalid_url", f"a URL must be a string, not {type(raw).__name__}")
    if len(raw) > MAX_URL_LENGTH:
        raise UrlError("invalid_url", "the URL is longer than 65536 characters")
    if len(raw) <= 2048:
        return _parse_cached(raw, allow_userinfo)
    return _parse(raw, allow_userinfo)


def _parse(raw: str, allow_userinfo: bool) -> ParsedURL:
    text = raw.strip(_STRIP)
    if _CTRL.search(text):
        raise UrlError(
            "control_character", "the URL contains a control character (tab, newline, NUL, ...) that clients strip or reject"
        )
    if "\\" in text:
        raise UrlError("backslash", "the URL contains a backslash, which browsers and some clients read as '/'")
    m = _SCHEME.match(text)
    if m is None:
        raise UrlError("invalid_url", f"{_clip(text)!r} is not an absolute URL (no scheme)")
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    if not rest.startswith("//") or rest.startswith("///"):
        raise UrlError("invalid_url", f"{_clip(text)!r} does not have the form {scheme}://host/...")
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep, 2)
        if 0 <= i < end:
            end = i
    authority, tail = rest[2:end], rest[end:]
    if any(c.isspace() for c in authority):
        raise UrlError("whitespace", f"the host part of {_clip(text)!r} contains whitespace")
    userinfo = ""
    hostport = authority
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
    host_text, port_text = _split_host_port(hostport, text)
    host = canonical_host(host_text)
    if "@" in authority and not allow_userinfo:
        raise UrlError(
            "userinfo",
            f"the URL carries user info before '@' ({_clip(userinfo, 40)!r}); the host it reaches is {host}"
            + (f" ({classify_ip(host.ip).reason})" if host.ip is not None else ""),
            address=host.ip,
            host=host.name,
        )
    port, explicit = _port(port_text, scheme, text)
    path, has_query, query = tail.split("#", 1)[0].partition("?")
    return ParsedURL(
        raw=raw,
        scheme=scheme,
        host=host,
        port=port,
        explicit_port=explicit,
        path=_normalize_path(path) or "/",
        query=query if has_query else None,
        userinfo=userinfo,
    )


_parse_cached = lru_cache(maxsize=8192)(_parse)


def _normalize_path(path: str) -> str:
    """Drop ``.`` and ``..`` segments the way httpx does (RFC 3986 §5.2.4)."""
    if "." not in path:
        return path
    parts = path.split("/")
    if "." not in parts and ".." not in parts:
        return path
    out: list[str] = []
    for part in parts:
        if part == ".":
            continue
        if part == "..":
            if out and out != [""]:
                out.pop()
        else:
            out.append(part)
    return "/".join(out)


def parse_host_port(text: str) -> tuple[Host, int | None]:
    """A bare ``host`` or ``host:port`` (``[v6]:port``), as found in host-valued arguments."""
    if not isinstance(text, str):
        raise UrlError("invalid_host", f"a host must be a string, not {type(text).__name__}")
    stripped = text.strip(_STRIP)
    if _CTRL.search(stripped) or "\\" in stripped or "/" in stripped or "@" in stripped or any(c.isspace() for c in stripped):
        raise UrlError("invalid_host", f"{_clip(text)!r} is not a plain host or host:port")
    host_text, port_text = _split_host_port(stripped, text)
    port = None
    if port_text:
        port, _ = _port(port_text, "", text)
    return canonical_host(host_text), port


def find_urls(text: str) -> Iterator[str]:
    """URL-looking substrings (``scheme://...``) of free text, trailing punctuation removed."""
    if "//" not in text and "\\\\" not in text and ":/\\" not in text and ":\\/" not in text:
        return
    for m in _URL_IN_TEXT.finditer(text):
        yield m.group(0).rstrip(_TRAILING_PUNCT)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
