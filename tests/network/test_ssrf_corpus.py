"""Table-driven SSRF corpus: every notation of a non-public address is blocked, public ones pass.

Each case is (URL, expected outcome code). ``allowed`` means SSRF protection lets it through; any
other code is the reason it is blocked. The cases are checked in SSRF-only mode (no allow-list)
so they test the canonicalization and address classification alone; egress rules have their own
tests.
"""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane._net._addr import classify_ip
from fiveplane._net._egress import EgressPolicy, Scope
from fiveplane._net._url import UrlError, canonical_host, find_urls, parse_url

POLICY = EgressPolicy()
SCOPE = Scope(tool="web.fetch")

BLOCKED = "blocked"  # any blocking code
ALLOWED = "allowed"

# (url, expected): expected is ALLOWED, BLOCKED (any reason) or a specific code.
CORPUS: list[tuple[str, str]] = [
    # --- loopback in every notation ---------------------------------------------------------
    ("http://127.0.0.1/", "ssrf"),
    ("http://127.0.0.1:8080/admin", "ssrf"),
    ("http://127.1.2.3/", "ssrf"),
    ("http://127.255.255.254/", "ssrf"),
    ("http://2130706433/", "nonstandard_ip"),  # decimal
    ("http://017700000001/", "nonstandard_ip"),  # octal
    ("http://0x7f000001/", "nonstandard_ip"),  # hex
    ("http://0x7F.0x0.0x0.0x1/", "nonstandard_ip"),  # hex per octet, mixed case
    ("http://0177.0.0.1/", "nonstandard_ip"),  # octal first octet
    ("http://0177.0000.0000.0001/", "nonstandard_ip"),
    ("http://127.1/", "nonstandard_ip"),  # short form
    ("http://127.0.1/", "nonstandard_ip"),
    ("http://127.000.000.001/", "nonstandard_ip"),  # zero padded
    ("http://0x7f.1/", "nonstandard_ip"),
    ("http://127.0.0.1./", "nonstandard_ip"),  # trailing dot on an IP
    ("http://127。0。0。1/", "nonstandard_ip"),  # ideographic full stops
    ("http://127．0．0．1/", "nonstandard_ip"),  # full-width full stops
    ("http://１２７.0.0.1/", "invalid_idn"),  # full-width digits (browsers map them)
    ("http://%31%32%37.0.0.1/", "percent_encoded_host"),
    ("http://127.0.0.%31/", "percent_encoded_host"),
    ("http://[::1]/", "ssrf"),
    ("http://[0:0:0:0:0:0:0:1]/", "ssrf"),
    ("http://[::ffff:127.0.0.1]/", "ssrf"),  # IPv4-mapped
    ("http://[::ffff:7f00:1]/", "ssrf"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "ssrf"),
    ("http://[::127.0.0.1]/", "ssrf"),  # IPv4-compatible
    ("http://[64:ff9b::127.0.0.1]/", "ssrf"),  # NAT64
    ("http://[2002:7f00:1::]/", "ssrf"),  # 6to4 of 127.0.0.1
    ("http://localhost/", "ssrf"),
    ("http://LOCALHOST/", "ssrf"),
    ("http://LocalHost:22/", "ssrf"),
    ("http://localhost./", "ssrf"),  # trailing dot
    ("http://api.localhost/", "ssrf"),
    ("http://localhost.localdomain/", "ssrf"),
    ("http://ip6-localhost/", "ssrf"),
    ("http://ⓛocalhost/", "invalid_idn"),  # circled letter
    ("http://%6c%6f%63%61%6c%68%6f%73%74/", "percent_encoded_host"),
    # --- unspecified ---------------------------------------------------------------------------
    ("http://0.0.0.0/", "ssrf"),
    ("http://0/", "nonstandard_ip"),
    ("http://0.0.0.0:8000/", "ssrf"),
    ("http://[::]/", "ssrf"),
    ("http://[::ffff:0.0.0.0]/", "ssrf"),
    # --- private -------------------------------------------------------------------------------
    ("http://10.0.0.1/", "ssrf"),
    ("http://10.255.255.255/", "ssrf"),
    ("http://167772161/", "nonstandard_ip"),  # 10.0.0.1 decimal
    ("http://172.16.0.1/", "ssrf"),
    ("http://172.31.255.254/", "ssrf"),
    ("http://192.168.0.1/", "ssrf"),
    ("http://192.168.1.1:8443/", "ssrf"),
    ("http://0xc0.0xa8.0x01.0x01/", "nonstandard_ip"),
    ("http://3232235777/", "nonstandard_ip"),  # 192.168.1.1
    ("http://100.64.0.1/", "ssrf"),  # carrier-grade NAT
    ("http://[::ffff:10.0.0.1]/", "ssrf"),
    ("http://[::ffff:192.168.1.1]/", "ssrf"),
    ("http://198.18.0.1/", "ssrf"),  # benchmarking
    ("http://192.0.2.10/", "ssrf"),  # documentation
    ("http://240.0.0.1/", "ssrf"),  # reserved
    ("http://255.255.255.255/", "ssrf"),  # broadcast
    # --- link-local and cloud metadata --------------------------------------------------------
    ("http://169.254.169.254/latest/meta-data/", "ssrf"),
    ("http://169.254.169.254:80/", "ssrf"),
    ("http://2852039166/", "nonstandard_ip"),  # 169.254.169.254 decimal
    ("http://0xa9fea9fe/", "nonstandard_ip"),
    ("http://0251.0376.0251.0376/", "nonstandard_ip"),
    ("http://169.254.43518/", "nonstandard_ip"),
    ("http://[::ffff:169.254.169.254]/", "ssrf"),
    ("http://[::ffff:a9fe:a9fe]/", "ssrf"),
    ("http://[fd00:ec2::254]/", "ssrf"),  # AWS IPv6 metadata
    ("http://[FD00:EC2::254]/latest/", "ssrf"),
    ("http://169.254.170.2/v2/credentials", "ssrf"),  # ECS
    ("http://100.100.100.200/latest/meta-data/", "ssrf"),  # Alibaba
    ("http://192.0.0.192/", "ssrf"),  # Oracle
    ("http://168.63.129.16/", "ssrf"),  # Azure WireServer (a public address)
    ("http://metadata.google.internal/computeMetadata/v1/", "ssrf"),
    ("http://METADATA.GOOGLE.INTERNAL./", "ssrf"),
    ("http://metadata/computeMetadata/v1/", "ssrf"),
    ("http://metadata.goog/", "ssrf"),
    ("http://instance-data/latest/", "ssrf"),
    ("http://169.254.1.1/", "ssrf"),
    ("http://[fe80::1]/", "ssrf"),
    ("http://[fe80::1%25eth0]/", "ssrf"),  # zone id
    ("http://[fe80::a:b:c:d%25en0]:8080/", "ssrf"),
    # --- unique-local, multicast, other IPv6 specials ------------------------------------------
    ("http://[fc00::1]/", "ssrf"),
    ("http://[fd12:3456:789a::1]/", "ssrf"),
    ("http://224.0.0.1/", "ssrf"),
    ("http://239.255.255.250:1900/", "ssrf"),
    ("http://[ff02::1]/", "ssrf"),
    ("http://[2001:db8::1]/", "ssrf"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "ssrf"),  # Teredo
    ("http://[fec0::1]/", "ssrf"),
    ("http://[100::1]/", "ssrf"),
    # --- private names -------------------------------------------------------------------------
    ("http://printer.local/", "ssrf"),
    ("http://db.internal/", "ssrf"),
    ("http://router.home.arpa/", "ssrf"),
    ("http://1.0.0.127.in-addr.arpa/", "ssrf"),
    # --- parser confusion ------------------------------------------------------------------------
    ("http://good.example@127.0.0.1/", "userinfo"),  # userinfo trick to a blocked host (rule network.ssrf)
    ("http://good.example@evil.example/", "userinfo"),
    ("http://user:pass@example.com/", "userinfo"),
    ("http://@example.com/", "userinfo"),
    ("http://evil.example\\@good.example/", "backslash"),
    ("http:\\\\127.0.0.1\\", "backslash"),
    ("http://127.0.0.1\\.good.example/", "backslash"),
    ("http:/\\example.com/", "backslash"),
    ("http://exa\tmple.com/", "control_character"),
    ("http://127.0.0.1\n.good.example/", "control_character"),
    ("http://example.com\x00.good/", "control_character"),
    ("http://exa mple.com/", "whitespace"),
    ("http://example.com\u3000/", "whitespace"),
    ("http://example.com\u00a0.evil/", "whitespace"),
    ("http:example.com/", "invalid_url"),  # browsers read it as http://example.com/
    ("http:///example.com/", "invalid_url"),
    ("//example.com/", "invalid_url"),
    ("example.com", "invalid_url"),
    ("http://example.com:80:80/", "invalid_port"),
    ("http://example.com:8_0/", "invalid_port"),
    ("http://example.com:+80/", "invalid_port"),
    ("http://example.com:0/", "invalid_port"),
    ("http://example.com:65536/", "invalid_port"),
    ("http://[::1]80/", "invalid_port"),
    ("http://ex..ample.com/", "invalid_host"),
    ("http://.example.com/", "invalid_host"),
    ("http://example.com../", "invalid_host"),
    ("http://exa_mple.com!/", "invalid_host"),
    ("http://[v1.fe80::a]/", "invalid_host"),
    ("http://[::1/", "invalid_host"),
    ("http://1.2.3.4.5/", "invalid_ipv4"),
    ("http://256.1.1.1/", "invalid_ipv4"),
    ("http://example.0x1/", "invalid_ipv4"),  # ends in a (hex) number: WHATWG parses it as IPv4 and fails
    ("http://xn--zz.example/", "invalid_idn"),  # invalid punycode
    ("http:///", "invalid_url"),
    # --- smuggling schemes ---------------------------------------------------------------------
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme_blocked"),
    ("gopher://example.com/", "scheme_blocked"),
    ("dict://127.0.0.1:11211/stats", "scheme_blocked"),
    ("file:///etc/passwd", "invalid_url"),  # no host: not a network URL at all
    ("file://localhost/etc/passwd", "scheme_blocked"),
    ("ldap://example.com/", "scheme_blocked"),
    # --- allowed: public addresses and names in many shapes -------------------------------------
    ("http://example.com/", ALLOWED),
    ("https://example.com/path?q=1#frag", ALLOWED),
    ("HTTPS://EXAMPLE.COM/", ALLOWED),
    ("https://example.com./", ALLOWED),  # one trailing dot is the same host
    ("https://www.example.com:8443/a/b", ALLOWED),
    ("http://8.8.8.8/", ALLOWED),
    ("http://1.1.1.1:53/", ALLOWED),
    ("http://93.184.216.34/", ALLOWED),
    ("http://[2606:4700:4700::1111]/", ALLOWED),
    ("http://[2001:4860:4860::8888]:443/", ALLOWED),
    ("http://[::ffff:8.8.8.8]/", ALLOWED),  # mapped public address
    ("https://bücher.example/", ALLOWED),  # IDN, punycode-encoded like httpx does
    ("https://xn--bcher-kva.example/", ALLOWED),
    ("https://münchen.de/", ALLOWED),
    ("https://sub_domain.example.com/", ALLOWED),
    ("https://a-b.c-d.example/", ALLOWED),
    ("https://example.com/%2e%2e/admin", ALLOWED),  # path encodings do not change the host
    ("https://localhost.example.com/", ALLOWED),  # only the name localhost is special
    ("https://internal.example.com/", ALLOWED),
    ("https://metadata.example.com/", ALLOWED),
    ("https://127.0.0.1.nip.io/", ALLOWED),  # a name: DNS answers are judged at the transport
    ("https://1.2.3.4.example/", ALLOWED),
    ("ws://example.com/socket", ALLOWED),
    ("wss://example.com:9443/socket", ALLOWED),
    ("  https://example.com/  ", ALLOWED),  # surrounding spaces are stripped like WHATWG does
    ("https://172.15.255.255/", ALLOWED),  # just below 172.16/12
    ("https://172.32.0.1/", ALLOWED),  # just above
    ("https://100.63.255.255/", ALLOWED),  # just below 100.64/10
    ("https://169.253.255.255/", ALLOWED),
    ("https://11.0.0.1/", ALLOWED),
]


def test_corpus_is_large_and_balanced() -> None:
    assert len(CORPUS) >= 100
    assert sum(1 for _, e in CORPUS if e == ALLOWED) >= 25
    assert sum(1 for _, e in CORPUS if e != ALLOWED) >= 100


@pytest.mark.parametrize(("url", "expected"), CORPUS, ids=[repr(u)[:60] for u, _ in CORPUS])
def test_ssrf_corpus(url: str, expected: str) -> None:
    check = POLICY.check_url(url, SCOPE, egress=False)
    if expected == ALLOWED:
        assert check.allowed, check.message
    else:
        assert not check.allowed, f"{url!r} should be blocked ({expected})"
        if expected != BLOCKED:
            assert check.code == expected, check.message
        assert check.message


@pytest.mark.parametrize(
    "url",
    [u for u, e in CORPUS if e == "nonstandard_ip" or u.startswith("http://good.example@127")],
)
def test_blocked_notations_are_attributed_to_ssrf(url: str) -> None:
    """A non-standard notation of a non-public address is reported as SSRF (rule network.ssrf)."""
    check = POLICY.check_url(url, SCOPE, egress=False)
    address = check.rule_id
    assert address == "network.ssrf", check.message


def test_messages_name_what_the_address_is() -> None:
    assert "loopback" in POLICY.check_url("http://0x7f.1/", SCOPE).message
    assert "cloud metadata" in POLICY.check_url("http://[::ffff:169.254.169.254]/", SCOPE).message
    assert "IPv4-mapped" in POLICY.check_url("http://[::ffff:10.1.2.3]/", SCOPE).message
    assert "evil.example" in POLICY.check_url("http://good.example@evil.example/", SCOPE).message


def test_metadata_can_never_be_allowed() -> None:
    policy = EgressPolicy(allow_networks=["169.254.0.0/16", "fd00::/8"], allow_hosts=["metadata.google.internal"])
    assert policy.check_url("http://169.254.1.1/", SCOPE, egress=False).allowed
    assert not policy.check_url("http://169.254.169.254/", SCOPE, egress=False).allowed
    assert not policy.check_url("http://[fd00:ec2::254]/", SCOPE, egress=False).allowed
    assert not policy.check_url("http://metadata.google.internal/", SCOPE, egress=False).allowed


def test_allow_networks_and_hosts_widen_ssrf() -> None:
    policy = EgressPolicy(allow_networks=["10.20.0.0/16"], allow_hosts=["grafana.ops.internal", "*.lab.local"])
    assert policy.check_url("https://10.20.1.2/", SCOPE, egress=False).allowed
    assert not policy.check_url("https://10.21.1.2/", SCOPE, egress=False).allowed
    assert policy.check_url("https://grafana.ops.internal/", SCOPE, egress=False).allowed
    assert policy.check_url("https://a.lab.local/", SCOPE, egress=False).allowed
    assert not policy.check_url("https://other.internal/", SCOPE, egress=False).allowed
    with pytest.raises(ValueError):
        EgressPolicy(allow_hosts=["*"])


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("2002:c0a8:101::1", True),
        ("fe80::1%eth0", True),
        ("8.8.8.8", False),
        ("2606:4700::1", False),
        ("4000::1", True),  # outside 2000::/3
    ],
)
def test_classify_ip(address: str, blocked: bool) -> None:
    from fiveplane._net._addr import parse_ip

    ip = parse_ip(address)
    assert ip is not None
    assert classify_ip(ip).blocked is blocked


def test_dns_answers_are_judged() -> None:
    host = canonical_host("rebind.example")
    assert POLICY.check_addresses(host, ["93.184.216.34"], ()) is None
    assert "loopback" in (POLICY.check_addresses(host, ["93.184.216.34", "127.0.0.1"], ()) or "")
    assert "metadata" in (POLICY.check_addresses(host, ["::ffff:169.254.169.254"], ()) or "")
    assert POLICY.check_addresses(host, [], ()) is not None
    assert POLICY.check_addresses(host, ["not-an-ip"], ()) is not None
    assert POLICY.check_addresses(host, ["10.20.0.5"], (ipaddress.ip_network("10.20.0.0/16"),)) is None


def test_find_urls_in_free_text() -> None:
    text = "run curl http://169.254.169.254/latest, then see https://acme.example/page. (or gopher://x)"
    assert list(find_urls(text)) == ["http://169.254.169.254/latest", "https://acme.example/page", "gopher://x"]
    assert list(find_urls("no links here")) == []


# ---- differential: we split URLs the way httpx does -----------------------------------------

_host_chars = st.sampled_from(list("abcxyz019-._") + ["xn--bcher-kva", "ü", "。", "%41", "@", ":", "[", "]", "\\", " "])
_hosts = st.lists(_host_chars, min_size=1, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ws"]),
    userinfo=st.sampled_from(["", "u@", "u:p@", "a@b@"]),
    host=_hosts,
    port=st.sampled_from(["", ":", ":80", ":8080", ":443", ":0", ":99999", ":8_0"]),
    path=st.sampled_from(["", "/", "/a/../b", "/x?y=1", "?q", "#f", "/%2e%2e/"]),
)
def test_split_agrees_with_httpx(scheme: str, userinfo: str, host: str, port: str, path: str) -> None:
    url = f"{scheme}://{userinfo}{host}{port}{path}"
    try:
        ours = parse_url(url, allow_userinfo=True)
    except UrlError:
        return  # we refuse more than httpx does; refusing is always safe
    theirs = httpx.URL(url.strip(" "))  # if we accept, httpx must accept too (we strip like WHATWG) ...
    assert theirs.scheme == ours.scheme
    # ... and reach the same host and port.
    raw = theirs.raw_host.decode("ascii").rstrip(".")
    assert canonical_host(f"[{raw}]" if ":" in raw else raw).name == ours.host.name
    assert (theirs.port or {"http": 80, "https": 443, "ws": 80}[theirs.scheme]) == ours.port
