"""Sink configuration: a small YAML file (or CLI options), secrets only from the environment.

```yaml
sinks:
  - name: audit-file
    type: jsonl
    path: exports/evidence.jsonl      # format: native (default) | ocsf | cef
  - name: splunk
    type: hec
    endpoint: https://splunk.example:8088
    index: ai-agents                  # token from $FIVEPLANE_HEC_TOKEN (token_env: to change the name)
  - name: siem
    type: syslog
    endpoint: tls://siem.example:6514 # udp:// | tcp:// | tls://  (CEF in RFC 5424)
    ca_file: /etc/ssl/certs/siem-ca.pem
  - name: traces
    type: otel
    protocol: http                    # http | grpc (OTLP) | console
    endpoint: http://otel-collector:4318/v1/traces
  - name: soar
    type: webhook
    endpoint: https://soar.example/hooks/fiveplane   # HMAC key from $FIVEPLANE_WEBHOOK_SECRET
```

A key that looks like a secret (``token``, ``secret``, ``password``…) is refused: name the
environment variable instead (``token_env``, ``secret_env``, ``headers_env``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._cef import CefFormat
from ._format import EventFilter, Formatter, NativeFormat
from ._ocsf import OcsfFormat
from ._sinks import FatalSinkError, HecSink, JsonlSink, Sink, SyslogSink, WebhookSink

__all__ = ["CONFIG_ENV", "ExportConfig", "ExportConfigError", "FilterConfig", "SinkConfig", "build_sink", "load_export_config"]

CONFIG_ENV = "FIVEPLANE_EXPORT_CONFIG"
_SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey", "authorization", "headers", "key")


class ExportConfigError(ValueError):
    """The sinks file or options cannot be used (the message names the file and the sink)."""


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = Field(default_factory=list)
    verdicts: list[str] = Field(default_factory=list)
    points: list[str] = Field(default_factory=list)


class SinkConfig(BaseModel):
    """One sink. Only the keys of its ``type`` apply; secrets come from the named environment variables."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["jsonl", "hec", "syslog", "otel", "webhook"]
    format: Literal["native", "ocsf", "cef"] | None = None
    """Event format (default: jsonl native, hec ocsf, syslog cef, webhook native; otel has its own)."""
    include_content: bool = True
    """ocsf / native: the arguments as stored in the ledger (after redaction). otel: see ``capture_content``."""
    filter: FilterConfig | None = None
    path: str | None = None
    """jsonl: the file to append to."""
    endpoint: str | None = None
    """hec: https://host:8088 · syslog: udp|tcp|tls://host:port · otel: the OTLP endpoint · webhook: the URL."""
    token_env: str = "FIVEPLANE_HEC_TOKEN"
    secret_env: str = "FIVEPLANE_WEBHOOK_SECRET"
    headers_env: str = "FIVEPLANE_OTLP_HEADERS"
    """otel: ``key=value,key=value`` headers for OTLP (e.g. an API key), from this variable."""
    index: str | None = None
    source: str = "fiveplane"
    sourcetype: str | None = None
    verify: bool = True
    ca_file: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    confirm: Literal["close", "none"] = "close"
    facility: int = Field(default=13, ge=0, le=23)
    app_name: str = "fiveplane"
    protocol: Literal["http", "grpc", "console"] = "http"
    service_name: str = "fiveplane"
    capture_content: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                k = str(key).lower()
                if k in _SECRET_KEYS or (k not in cls.model_fields and any(s in k for s in ("token", "secret", "password"))):
                    name = data.get("name", "?")
                    raise ValueError(
                        f"sink {name}: {key!r} looks like a secret; secrets never go in this file — "
                        f"put it in an environment variable and name it ({'secret_env' if 'secret' in k else 'token_env'}: MY_VAR)"
                    )
        return data

    @model_validator(mode="after")
    def _needs(self) -> SinkConfig:
        if self.type == "jsonl" and not self.path:
            raise ValueError(f"sink {self.name}: jsonl needs path")
        if self.type in ("hec", "syslog", "webhook") and not self.endpoint:
            raise ValueError(f"sink {self.name}: {self.type} needs endpoint")
        if self.type == "otel" and self.protocol != "console" and not self.endpoint:
            raise ValueError(f"sink {self.name}: otel over OTLP needs endpoint (or protocol: console)")
        if self.type == "syslog":
            parts = urlsplit(self.endpoint or "")
            if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname or not parts.port:
                raise ValueError(
                    f"sink {self.name}: syslog endpoint must be udp://, tcp:// or tls://host:port, not {self.endpoint!r}"
                )
        if self.type in ("hec", "webhook"):
            parts = urlsplit(self.endpoint or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"sink {self.name}: {self.type} endpoint must be an http(s) URL, not {self.endpoint!r}")
        return self


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sinks: list[SinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ExportConfig:
        names = [s.name for s in self.sinks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink names must be unique: {', '.join(dup)}")
        return self

    def sink(self, name: str) -> SinkConfig:
        for s in self.sinks:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sinks) or "none"
        raise ExportConfigError(f"no sink named {name!r} (configured: {known})")


def load_export_config(path: str | Path | None = None) -> ExportConfig:
    """Read a sinks file (default ``$FIVEPLANE_EXPORT_CONFIG``; an empty config when neither is given)."""
    p = path or os.environ.get(CONFIG_ENV)
    if not p:
        return ExportConfig()
    file = Path(p)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ExportConfigError(f"{file}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ExportConfigError(f"{file}: not valid YAML: {exc}") from exc
    try:
        return ExportConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{file}: " + ".".join(str(x) for x in e["loc"]) + f": {e['msg']}" for e in exc.errors()]
        raise ExportConfigError("\n".join(lines)) from exc


def _formatter(cfg: SinkConfig, default: str) -> Formatter:
    fmt = cfg.format or default
    if fmt == "ocsf":
        return OcsfFormat(include_content=cfg.include_content)
    if fmt == "cef":
        return CefFormat(syslog=cfg.type == "syslog", app_name=cfg.app_name, facility=cfg.facility)
    if fmt == "native":
        if cfg.type == "syslog":
            return _SyslogJson(NativeFormat(), cfg)
        return NativeFormat()
    raise ExportConfigError(f"sink {cfg.name}: unknown format {fmt!r}")


class _SyslogJson:
    """A JSON format wrapped in an RFC 5424 header (syslog sinks with ``format: native`` or ``ocsf``)."""

    def __init__(self, inner: Formatter, cfg: SinkConfig) -> None:
        self.inner = inner
        self.name = inner.name
        self.cfg = cfg

    def format(self, rec: Any, ctx: Any) -> list[Any]:
        import json
        from dataclasses import replace

        from ._cef import syslog_line
        from ._read import parse_time

        out = []
        for ev in self.inner.format(rec, ctx):
            line = syslog_line(
                json.dumps(ev.data, ensure_ascii=False, separators=(",", ":"), default=str),
                facility=self.cfg.facility,
                timestamp=parse_time(ev.time),
                hostname=ctx.host,
                app_name=self.cfg.app_name,
                msgid=ev.kind,
            )
            out.append(replace(ev, text=line))
        return out


def _verify(cfg: SinkConfig) -> bool | str:
    if cfg.ca_file:
        return cfg.ca_file
    return cfg.verify


def build_sink(
    cfg: SinkConfig, environ: Mapping[str, str] | None = None, *, transport: httpx.BaseTransport | None = None
) -> Sink:
    """Make the sink a config describes, reading its secrets from ``environ`` (default ``os.environ``).

    Raises :class:`ExportConfigError` for a missing secret or an unusable option.
    """
    env = os.environ if environ is None else environ
    flt = EventFilter.of(**cfg.filter.model_dump()) if cfg.filter else None
    if cfg.type == "jsonl":
        assert cfg.path is not None
        return JsonlSink(cfg.name, cfg.path, _formatter(cfg, "native"), filter=flt)
    if cfg.type == "hec":
        token = env.get(cfg.token_env, "")
        if not token:
            raise ExportConfigError(f"sink {cfg.name}: set the HEC token in ${cfg.token_env}")
        assert cfg.endpoint is not None
        return HecSink(
            cfg.name,
            cfg.endpoint,
            token,
            _formatter(cfg, "ocsf"),
            index=cfg.index,
            source=cfg.source,
            sourcetype=cfg.sourcetype,
            verify=_verify(cfg),
            timeout=cfg.timeout,
            filter=flt,
            transport=transport,
        )
    if cfg.type == "syslog":
        parts = urlsplit(cfg.endpoint or "")
        assert parts.hostname is not None and parts.port is not None
        tls_ctx = None
        if parts.scheme == "tls":
            tls_ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else ssl.create_default_context()
            if not cfg.verify:
                tls_ctx.check_hostname = False
                tls_ctx.verify_mode = ssl.CERT_NONE
        try:
            return SyslogSink(
                cfg.name,
                parts.hostname,
                parts.port,
                _formatter(cfg, "cef"),
                protocol=parts.scheme,
                confirm=cfg.confirm,
                tls_context=tls_ctx,
                timeout=cfg.timeout,
                filter=flt,
            )
        except FatalSinkError as exc:
            raise ExportConfigError(str(exc)) from exc
    if cfg.type == "webhook":
        assert cfg.endpoint is not None
        return WebhookSink(
            cfg.name,
            cfg.endpoint,
            _formatter(cfg, "native"),
            secret=env.get(cfg.secret_env) or None,
            verify=_verify(cfg),
            timeout=cfg.timeout,
            filter=flt,
            transport=transport,
        )
    # otel
    from ._otel import OtelFormat, OtelSink, otlp_exporter

    try:
        if cfg.protocol == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter: Any = ConsoleSpanExporter()
        else:
            headers = dict(item.split("=", 1) for item in (env.get(cfg.headers_env) or "").split(",") if "=" in item)
            exporter = otlp_exporter(cfg.protocol, cfg.endpoint, headers or None, cfg.timeout)
    except ImportError as exc:
        raise ExportConfigError(
            f"sink {cfg.name}: the OpenTelemetry SDK is not installed: pip install 'fiveplane[otel]'"
        ) from exc
    except FatalSinkError as exc:
        raise ExportConfigError(f"sink {cfg.name}: {exc}") from exc
    return OtelSink(
        cfg.name, exporter, formatter=OtelFormat(capture_content=cfg.capture_content), service_name=cfg.service_name, filter=flt
    )
