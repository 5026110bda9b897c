"""TLS and SASL for every Kafka client, from the `KAFKA_*` environment.

| variable | meaning |
|---|---|
| `KAFKA_SECURITY_PROTOCOL` | `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT`, `SASL_SSL` |
| `KAFKA_SASL_MECHANISM` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (required with SASL_*) |
| `KAFKA_SASL_USERNAME` | the principal's name (required with SASL_*) |
| `KAFKA_SASL_PASSWORD` / `KAFKA_SASL_PASSWORD_FILE` | its password, or a file holding it (one of them) |
| `KAFKA_SSL_CAFILE` | CA bundle to verify the brokers (default: the system's CAs) |
| `KAFKA_SSL_CERTFILE` / `KAFKA_SSL_KEYFILE` | client certificate and key for mutual TLS |

A combination that cannot work raises `KafkaSecurityError` at once, saying what to set. The
password is held in a `Secret`, which never shows it in a repr, a log line or an exception.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV_VARS = (
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
)


class KafkaSecurityError(ValueError):
    """The KAFKA_* security settings cannot work together; the message says what to fix."""


class Secret:
    """A string that is never printed: repr and str show `***`; `reveal()` gives it to a client."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Reads the KAFKA_* security variables (os.environ by default) and checks them."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        protocol = (get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        mechanism = get("KAFKA_SASL_MECHANISM")
        password = get("KAFKA_SASL_PASSWORD")
        password_file = get("KAFKA_SASL_PASSWORD_FILE")
        if password and password_file:
            raise KafkaSecurityError(
                "both KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are set; keep only one of them"
            )
        if password_file:
            password = _read_password(Path(password_file))
        if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
            stray = [n for n in ENV_VARS[1:5] if get(n)]
            if stray:
                raise KafkaSecurityError(
                    f"{', '.join(stray)} set but KAFKA_SECURITY_PROTOCOL={protocol}: set "
                    "KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) to use SASL, or unset them"
                )
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism.upper() if mechanism else None,
            sasl_username=get("KAFKA_SASL_USERNAME"),
            sasl_password=Secret(password) if password else None,
            ssl_cafile=_path(get("KAFKA_SSL_CAFILE")),
            ssl_certfile=_path(get("KAFKA_SSL_CERTFILE")),
            ssl_keyfile=_path(get("KAFKA_SSL_KEYFILE")),
        )

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def principal(self) -> str:
        """How the cluster will know this client, for messages: `User:name`, or the transport."""
        if self.uses_sasl:
            return f"User:{self.sasl_username}"
        if self.ssl_certfile is not None:
            return f"the certificate {self.ssl_certfile}"
        return "User:ANONYMOUS"

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, object] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked by _validate
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.reveal()
        return options

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile is not None else None)
            if self.ssl_certfile is not None:
                context.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile is not None else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"KAFKA_SSL_CAFILE/CERTFILE/KEYFILE: cannot load them ({exc}); they must be PEM files"
            ) from None
        return context

    def describe(self) -> dict[str, str | None]:
        """The settings for display, the password masked."""
        return {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": "***" if self.sasl_password is not None else None,
            "ssl_cafile": str(self.ssl_cafile) if self.ssl_cafile else None,
            "ssl_certfile": str(self.ssl_certfile) if self.ssl_certfile else None,
            "ssl_keyfile": str(self.ssl_keyfile) if self.ssl_keyfile else None,
        }


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read_password(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KafkaSecurityError(f"KAFKA_SASL_PASSWORD_FILE={path}: cannot read it ({exc.strerror})") from None
    if not value:
        raise KafkaSecurityError(f"KAFKA_SASL_PASSWORD_FILE={path}: the file is empty")
    return value


def _validate(s: KafkaSecurity) -> None:
    if s.protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"KAFKA_SECURITY_PROTOCOL={s.protocol}: use one of {', '.join(PROTOCOLS)}")
    if s.uses_sasl:
        if s.sasl_mechanism is None:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL={s.protocol} needs KAFKA_SASL_MECHANISM ({', '.join(MECHANISMS)})"
            )
        if s.sasl_mechanism not in MECHANISMS:
            raise KafkaSecurityError(f"KAFKA_SASL_MECHANISM={s.sasl_mechanism}: use one of {', '.join(MECHANISMS)}")
        if not s.sasl_username:
            raise KafkaSecurityError(f"KAFKA_SECURITY_PROTOCOL={s.protocol} needs KAFKA_SASL_USERNAME")
        if s.sasl_password is None:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL={s.protocol} needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"
            )
    elif s.sasl_mechanism or s.sasl_username or s.sasl_password is not None:
        raise KafkaSecurityError(
            f"SASL settings given but KAFKA_SECURITY_PROTOCOL={s.protocol}: set "
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) to use SASL, or unset them"
        )
    ssl_given = [
        name
        for name, value in (
            ("KAFKA_SSL_CAFILE", s.ssl_cafile),
            ("KAFKA_SSL_CERTFILE", s.ssl_certfile),
            ("KAFKA_SSL_KEYFILE", s.ssl_keyfile),
        )
        if value is not None
    ]
    if ssl_given and not s.uses_tls:
        raise KafkaSecurityError(
            f"{', '.join(ssl_given)} set but KAFKA_SECURITY_PROTOCOL={s.protocol} does not use TLS: "
            "set KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset them"
        )
    if s.ssl_keyfile is not None and s.ssl_certfile is None:
        raise KafkaSecurityError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the certificate that goes with the key)")
    for name, value in (
        ("KAFKA_SSL_CAFILE", s.ssl_cafile),
        ("KAFKA_SSL_CERTFILE", s.ssl_certfile),
        ("KAFKA_SSL_KEYFILE", s.ssl_keyfile),
    ):
        if value is not None and not value.is_file():
            raise KafkaSecurityError(f"{name}={value}: no such file")
