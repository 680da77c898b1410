"""The gateway's configuration: one YAML file read by every service (DESIGN.md sections 5 and 14).

`load_config` reads the file, resolves `${ENV}` and `${file:/path}` references, validates it with the
pydantic models below and raises `ConfigError` whose lines name the field and the line of the file, e.g.
``forward_nodes[0].destinations[1].port: must be between 1 and 65535 (line 12)``.

The configuration has two layers (DESIGN.md section 14): the *service settings* (`ServiceSettings`:
listener, broker, database, ...) are read from the file at start-up; the *routing configuration*
(`RoutingConfig`: forward nodes, projects, auth configs) is a versioned document, a revision in the database
(`karnak_shared.revisions`) or the file itself in file mode. `GatewayConfig` is both together: what a
service runs. `read_config_file` reads a file as the two layers, the routing part left as written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from karnak_dicom.conditions import Condition
from karnak_dicom.located_yaml import FieldPath as FieldPath  # the revisions name fields as errors do
from karnak_dicom.located_yaml import LocatedYaml, as_mapping, load_located_yaml
from karnak_dicom.located_yaml import format_path as format_path
from karnak_shared.errors import ConfigError

CONFIG_ENV = "KARNAK_CONFIG"


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not 1 <= len(stripped) <= 16:
        raise ValueError("an AE title must have 1 to 16 characters")
    if "\\" in stripped or any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise ValueError("an AE title may not contain a backslash or control characters")
    return stripped


_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _check_uid(value: str) -> str:
    if len(value) > 64 or not _UID.match(value):
        raise ValueError(f"'{value}' is not a DICOM UID (dot-separated numbers, at most 64 characters)")
    return value


_DESTINATION_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def _check_destination_id(value: str) -> str:
    if not _DESTINATION_ID.match(value):
        raise ValueError(
            "must be 1 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-' "
            "(it names the destination's queue)"
        )
    return value


_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value.strip()):
        raise ValueError(f"'{value}' is not an email address")
    return value.strip()


def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"'{value}' is not an http:// or https:// URL")
    return value


Port = Annotated[int, AfterValidator(_check_port)]
AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Uid = Annotated[str, AfterValidator(_check_uid)]
DestinationId = Annotated[str, AfterValidator(_check_destination_id)]
Email = Annotated[str, AfterValidator(_check_email)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
PositiveInt = Annotated[int, Field(gt=0)]


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key and hang the service.
    raise ValueError("the key is encrypted: give an unencrypted key, protected by its file permissions")


@contextmanager
def _pem_path(value: str, field: str, what: str) -> Iterator[tuple[str, str]]:
    """(path, name for messages) of a TLS setting: a file's path, or PEM text given inline.

    Inline PEM comes from `${file:...}` or `${ENV}` (a Kubernetes secret, say): it goes to a private
    temporary file for OpenSSL and is never quoted in an error.
    """
    if not value.lstrip().startswith("-----BEGIN"):
        try:
            with open(value, "rb"):
                pass
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise ConfigError(f"{field}: cannot read {value!r}: {getattr(exc, 'strerror', None) or exc}") from None
        yield value, value
        return
    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.NamedTemporaryFile("w", suffix=".pem", dir=scratch) as handle:  # created 0600
        handle.write(value)
        handle.flush()
        yield handle.name, f"the {what} given as PEM text"


def _load_tls_files(
    context: ssl.SSLContext, where: str, certificate: str | None, private_key: str | None, ca_certificates: str | None
) -> None:
    """Load PEM files (or PEM text) into `context`; raise `ConfigError` naming the field that is wrong."""
    if certificate is not None and private_key is not None:
        with (
            _pem_path(certificate, f"{where}.certificate", "certificate") as (cert_path, cert_name),
            _pem_path(private_key, f"{where}.private_key", "key") as (key_path, key_name),
        ):
            try:
                # A certificate file is also a valid CA file: loading it as one checks it alone.
                ssl.create_default_context(cafile=cert_path)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"{where}.certificate: {cert_name} holds no PEM certificate ({exc})") from None
            try:
                context.load_cert_chain(cert_path, key_path, password=_no_password)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    f"{where}.private_key: {key_name} is not the unencrypted PEM key of {cert_name} ({exc})"
                ) from None
    if ca_certificates is not None:
        with _pem_path(ca_certificates, f"{where}.ca_certificates", "CA certificates") as (ca_path, ca_name):
            try:
                context.load_verify_locations(cafile=ca_path)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"{where}.ca_certificates: {ca_name} holds no PEM certificate ({exc})") from None


class ListenerTls(StrictModel):
    """DICOM TLS on the listener: paths to PEM files (or PEM text); the receiver loads them at start-up."""

    certificate: str
    # A path, or the key itself through ${file:...}: kept out of reprs either way.
    private_key: SecretStr
    require_client_certificate: bool = False
    # CA certificates that sign the modalities' client certificates.
    ca_certificates: Annotated[str | None, Field(validate_default=True)] = None

    @field_validator("ca_certificates")
    @classmethod
    def _needed_for_client_certificates(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("require_client_certificate"):
            raise ValueError("is required when require_client_certificate is true (the CA of the modalities)")
        return value

    def server_context(self, context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        """The listener's SSL context; raises `ConfigError` naming the field of a file that cannot be used."""
        context = context_class(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        key = self.private_key.get_secret_value()
        _load_tls_files(context, "listener.tls", self.certificate, key, self.ca_certificates)
        if self.ca_certificates is not None:
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
        return context


class ListenerConfig(StrictModel):
    """The DICOM port: where it listens, and the limits that keep one peer from taking it over."""

    host: str = "0.0.0.0"
    port: Port = 11112
    # The longest P-DATA-TF PDU we accept, advertised in our A-ASSOCIATE-AC; a longer one is aborted unread.
    max_pdu_bytes: PositiveInt = 131072
    # An A-ASSOCIATE-RQ (or any PDU other than P-DATA) longer than this is refused unread: real ones are a
    # few KiB, even with every storage SOP class proposed in several transfer syntaxes.
    max_associate_request_bytes: Annotated[int, Field(ge=4096)] = 1048576
    # Associations at once (admitted ones: a TCP connection counts once its request is accepted).
    max_associations: PositiveInt = 32
    # Admitted associations at once from one peer address, unless the caller is a source bound to a hostname.
    max_associations_per_peer: PositiveInt = 8
    # Of `max_associations`, kept for callers listed in a forward node's `sources`.
    reserved_for_sources: Annotated[int, Field(ge=0)] = 4
    # TCP connections whose A-ASSOCIATE-RQ has not arrived yet; each is closed by its request deadline.
    max_pending_connections: PositiveInt = 256
    # Seconds from the TCP connection to the whole A-ASSOCIATE-RQ (a slow or silent peer is closed).
    association_request_timeout: Annotated[float, Field(gt=0)] = 10.0
    # Seconds without a PDU, and the longest the reading of one PDU may take, before the association is aborted.
    idle_timeout: Annotated[float, Field(gt=0)] = 60.0
    tls: ListenerTls | None = None

    @model_validator(mode="after")
    def _reserve_leaves_room(self) -> ListenerConfig:
        if self.reserved_for_sources >= self.max_associations:
            raise ValueError("reserved_for_sources must be smaller than max_associations")
        return self


class Source(StrictModel):
    ae_title: AETitle
    hostname: str | None = None
    # Karnak's "Check the hostname": with a hostname, false accepts the AE title from any address.
    check_hostname: bool = True
    description: str = ""


class Notifications(StrictModel):
    emails: list[Email]
    error_prefix: str = "ERROR"
    rejection_prefix: str = "REJECTED"
    subject_pattern: str = "[Karnak Notification] %s %.30s"
    subject_values: list[Literal["PatientID", "StudyDescription", "StudyDate", "StudyInstanceUID"]] = [
        "PatientID",
        "StudyDescription",
    ]
    interval: PositiveInt = 45

    @field_validator("emails", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(",")) if part]
        return value


class Pseudonym(StrictModel):
    type: Literal["hash", "cache", "tag", "api"] = "hash"
    tag: str | None = None
    delimiter: str | None = None
    position: Annotated[int, Field(ge=0)] | None = None
    url: HttpUrl | None = None
    method: Literal["GET", "POST"] = "GET"
    body: str | None = None
    response_path: str | None = None
    timeout: float = 10.0
    # OAuth2 client credentials for the `api` source (token fetched from token_url, cached until expiry).
    token_url: HttpUrl | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    # Or the code of one of `auth_configs` (Karnak's "Authentication Config Code"), shared by destinations.
    auth_config: str | None = None

    @model_validator(mode="after")
    def _one_credentials_source(self) -> Pseudonym:
        if self.auth_config is not None and (self.token_url or self.client_id or self.client_secret):
            raise ValueError("auth_config and token_url/client_id/client_secret are mutually exclusive")
        return self


class AuthConfig(StrictModel):
    """OAuth2 client credentials for the `api` pseudonym source, named by a code (Karnak's auth configs)."""

    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    type: Literal["oauth2"] = "oauth2"
    access_token_url: HttpUrl
    client_id: SecretStr
    client_secret: SecretStr
    scope: str | None = None


class Deidentification(StrictModel):
    project: str
    pseudonym: Pseudonym = Pseudonym()
    issuer_of_patient_id: str | None = None


class TagMorphing(StrictModel):
    project: str


class KheopsAlbum(StrictModel):
    url_api: HttpUrl
    token_destination: SecretStr
    token_source: SecretStr
    # Compiled once, with the configuration; written back as its text.
    condition: Condition = Condition("")


class _DestinationBase(StrictModel):
    id: DestinationId
    description: str = ""
    # Compiled once, with the configuration; written back as its text.
    condition: Condition = Condition("")
    enabled: bool = True
    authorized_sop_classes: list[Uid] = []
    transfer_syntax: str = "keep"
    transcode_only_uncompressed: bool = True
    deidentification: Deidentification | None = None
    tag_morphing: TagMorphing | None = None
    notifications: Notifications | None = None

    @field_validator("transfer_syntax")
    @classmethod
    def _keep_or_encodable(cls, value: str) -> str:
        # The processor's list: a configuration that validates is one the processor runs.
        from karnak_dicom.syntaxes import KEEP, requested_syntax_problem

        if value != KEEP:
            _check_uid(value)
        problem = requested_syntax_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_transformation(self) -> _DestinationBase:
        if self.deidentification is not None and self.tag_morphing is not None:
            raise ValueError("deidentification and tag_morphing are mutually exclusive")
        return self


class DestinationTls(StrictModel):
    """DICOM TLS towards a destination: paths to PEM files (or PEM text); the dicom-sender loads them at start-up."""

    # CA certificates that sign the destination's certificate (default: the system's trust store).
    ca_certificates: str | None = None
    verify_hostname: bool = True
    # Our client certificate and its key, for a destination that asks for one: both or neither.
    certificate: str | None = None
    private_key: Annotated[SecretStr | None, Field(validate_default=True)] = None

    @field_validator("private_key")
    @classmethod
    def _with_the_certificate(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("certificate") is not None:
            raise ValueError("is required with certificate")
        if value is not None and "certificate" in info.data and info.data["certificate"] is None:
            raise ValueError("needs certificate (the client certificate it belongs to)")
        return value

    def client_context(self, where: str) -> ssl.SSLContext:
        """The SSL context towards the destination (`where` is its path in the configuration, for errors)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.verify_hostname
        key = self.private_key.get_secret_value() if self.private_key is not None else None
        _load_tls_files(context, where, self.certificate, key, self.ca_certificates)
        if self.ca_certificates is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context


class DicomDestination(_DestinationBase):
    type: Literal["dicom"]
    ae_title: AETitle
    hostname: str
    port: Port
    use_aetitle_destination: bool = False
    tls: DestinationTls | None = None

    @property
    def queue_kind(self) -> str:
        return "dicom"


class StowDestination(_DestinationBase):
    type: Literal["stow"]
    url: HttpUrl
    # Authorization headers carry credentials: revisions store them like the SecretStr fields.
    headers: Annotated[str | dict[str, str], Field(json_schema_extra={"secret": True})] = {}
    kheops_albums: list[KheopsAlbum] = []

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        from karnak_shared.headers import HeaderError, parse_headers

        try:
            parse_headers(value)
        except HeaderError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def queue_kind(self) -> str:
        return "stow"


Destination = Annotated[DicomDestination | StowDestination, Field(discriminator="type")]


class ForwardNode(StrictModel):
    ae_title: AETitle
    description: str = ""
    sources: list[Source] = []
    destinations: list[Destination] = []

    def accepts(self, calling_ae_title: str, peer_host: str | None) -> bool:
        """Whether a sender with this calling AE title (and address) may send to this node."""
        return not self.sources or self.matching_source(calling_ae_title, peer_host) is not None

    def matching_source(self, calling_ae_title: str, peer_host: str | None) -> Source | None:
        """The entry of `sources` this caller matches (None when it matches none, or there are none)."""
        for source in self.sources:
            if source.ae_title == calling_ae_title.strip() and (
                source.hostname is None or not source.check_hostname or _host_matches(source.hostname, peer_host)
            ):
                return source
        return None


def _host_matches(expected: str, peer_host: str | None) -> bool:
    if peer_host is None:
        return False
    if expected == peer_host:
        return True
    import socket

    try:
        return peer_host in {info[4][0] for info in socket.getaddrinfo(expected, None)}
    except OSError:
        return False


def is_profile_text(value: str) -> bool:
    """Whether a project's `profile` is the profile's YAML text (as in a revision) rather than a file's path."""
    return "\n" in value or value.lstrip().startswith("{")


class Project(StrictModel):
    name: str
    secret: SecretStr
    # The path of a Karnak profile file (relative to the configuration file), or its YAML text: a revision
    # carries the text, so every service runs the same profile whatever its file system holds.
    profile: str

    def profile_source(self, base_dir: Path) -> str | Path:
        """The profile's YAML text, or the path of its file resolved against `base_dir`."""
        if is_profile_text(self.profile):
            return self.profile
        path = Path(self.profile)
        return path if path.is_absolute() else base_dir / path

    @field_validator("secret")
    @classmethod
    def _sixteen_bytes(cls, value: SecretStr) -> SecretStr:
        digits = value.get_secret_value().replace("-", "")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", digits):
            raise ValueError("must be 32 hexadecimal digits (dashes allowed)")
        return value


class StoredProfile(StrictModel):
    """A Karnak profile kept in the routing configuration under a name that projects refer to."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    # The profile file's YAML text, as Karnak writes it.
    yaml: str


class SmtpConfig(StrictModel):
    host: str = "localhost"
    port: Port = 25
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: Email = "karnak@localhost.localdomain"


class DatabaseConfig(StrictModel):
    url: SecretStr = SecretStr("sqlite:///karnak.db")


class BrokerConfig(StrictModel):
    url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
    # Every exchange and queue name starts with this, so test runs (or two gateways) can share a broker.
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "karnak"
    prefetch: Annotated[int, Field(ge=1, le=1000)] = 20
    delivery_limit: Annotated[int, Field(ge=1)] = 20
    retry_delays: Annotated[list[PositiveInt], Field(min_length=1)] = [5, 30, 120, 600, 3600]
    heartbeat: Annotated[int, Field(ge=0)] = 30
    confirm_timeout: Annotated[float, Field(gt=0)] = 30.0
    # A handler that crashed on the same message this many times parks it itself (with the exception's
    # type), before RabbitMQ's delivery limit would dead-letter it without a word.
    crash_limit: Annotated[int, Field(ge=1)] = 3
    # False with per-service broker users: `karnak broker setup` (the operator's user) declares the topology
    # and the services only check that it is there (passive declares need no permission).
    declare_topology: bool = True

    @field_validator("retry_delays")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("retry delays must be distinct (each names a delay queue)")
        return value


# An S3 bucket name (the rules every S3-compatible store accepts) and an optional key prefix.
_S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[A-Za-z0-9!_.*'()/-]*))?$")


class BlobStoreConfig(StrictModel):
    """A directory shared by the services (`path`), or an S3-compatible bucket (`url`; DESIGN.md section 17)."""

    path: str = "/var/lib/karnak/blobs"
    max_inline_bytes: Annotated[int, Field(ge=0)] = 65536
    # s3://bucket/prefix. The endpoint and region are optional (AWS's defaults apply); credentials are
    # given by reference (${ENV}, ${file:...}) or left out for the usual AWS environment and instance roles.
    url: str | None = None
    endpoint_url: str | None = None
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")] | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URL.match(value):
            raise ValueError(
                "must be s3://bucket or s3://bucket/prefix (bucket: 3-63 lower-case letters, digits, dots, hyphens)"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?", value):
            raise ValueError("must be an http:// or https:// URL of the S3 server (scheme, host, optional port)")
        return value

    @model_validator(mode="after")
    def _one_store(self) -> BlobStoreConfig:
        s3_only = ("endpoint_url", "region", "access_key_id", "secret_access_key")
        if self.url is None:
            given = [name for name in s3_only if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{given[0]} is an S3 setting: give url (s3://bucket/prefix) too")
        elif "path" in self.model_fields_set:
            raise ValueError("path and url are exclusive: blobs go to a directory or to a bucket, not both")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together (or neither, for AWS's own chain)")
        return self

    @property
    def bucket(self) -> str:
        match = _S3_URL.match(self.url or "")
        assert match is not None, "only an S3 store has a bucket"
        return match.group("bucket")

    @property
    def key_prefix(self) -> str:
        """The prefix of every object's key, ending with '/' (empty for the bucket's root)."""
        match = _S3_URL.match(self.url or "")
        prefix = (match.group("prefix") or "").strip("/") if match else ""
        return f"{prefix}/" if prefix else ""


class DicomSenderConfig(StrictModel):
    dimse_timeout: Annotated[float, Field(gt=0)] = 30.0
    acse_timeout: Annotated[float, Field(gt=0)] = 30.0
    network_timeout: Annotated[float, Field(gt=0)] = 30.0
    idle_release_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_pdu_bytes: PositiveInt = 131072


class MetricsConfig(StrictModel):
    # Loopback unless said otherwise: /metrics and the health endpoints are for the local Prometheus and
    # probes; a deployment that scrapes across hosts sets `host: 0.0.0.0` on purpose (compose, Kubernetes).
    host: str = "127.0.0.1"
    ports: dict[str, Port] = {
        "receiver": 9101,
        "processor": 9102,
        "dicom-sender": 9103,
        "stow-sender": 9104,
        "kheops-sharer": 9105,
        "notifier": 9106,
        "monitor": 9107,
        # The console serves its API, pages and ops endpoints on one port (console.port when none is given).
        "console": 8081,
    }


class OidcConfig(StrictModel):
    """OpenID Connect login to the console: the provider, this client, and the claim that carries roles."""

    issuer: HttpUrl
    client_id: str
    client_secret: SecretStr
    # Dotted path of the roles in the ID token (or userinfo) claims, e.g. resource_access.karnak.roles.
    roles_claim: str = "roles"
    scope: str = "openid profile email"
    # Shown on the login page's button.
    label: str = "Single sign-on"


class ConsoleConfig(StrictModel):
    """The console service (DESIGN.md section 15): where it listens and how it signs people in."""

    host: str = "127.0.0.1"
    port: Port = 8081
    # The address people reach the console at (behind a proxy): OpenID Connect redirects come back to it.
    public_url: HttpUrl | None = None
    # Minutes without a request after which a browser session ends.
    session_idle_minutes: PositiveInt = 30
    # Cookies only over HTTPS: leave true behind a TLS proxy; false only for plain-HTTP development.
    secure_cookies: bool = False
    # Failed logins allowed per minute from one address (and for one account name) before 429.
    login_attempts_per_minute: PositiveInt = 5
    # Where the first start writes the generated admin password (owner-only); default ~/.karnak/.
    admin_password_file: str | None = None
    oidc: OidcConfig | None = None


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["kv", "json"] = "kv"


class ConfigurationSettings(StrictModel):
    """Where the routing configuration comes from (DESIGN.md section 14)."""

    # database: revisions in SQL, changed by `karnak config apply` or the console; the file's routing keys
    # only bootstrap an empty database. file: the file is the source of truth, each change a revision.
    source: Literal["database", "file"] = "database"


def _decode_key(text: str) -> bytes | None:
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    import base64
    import binascii

    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


class SecretsSettings(StrictModel):
    """The key that encrypts the secrets stored in configuration revisions (AES-256-GCM)."""

    # 32 bytes, as base64 (`openssl rand -base64 32`) or 64 hex digits; give it as ${file:...} or ${ENV}.
    key: SecretStr | None = None

    @field_validator("key")
    @classmethod
    def _thirty_two_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _decode_key(value.get_secret_value()) is None:
            raise ValueError("must be 32 bytes as base64 (openssl rand -base64 32) or as 64 hexadecimal digits")
        return value

    def key_bytes(self) -> bytes | None:
        """The key's 32 bytes, or None when no key is configured."""
        return None if self.key is None else _decode_key(self.key.get_secret_value())


class MonitoringSettings(StrictModel):
    """Transfer monitoring (DESIGN.md section 16)."""

    # Keep the original PatientID and AccessionNumber in the monitoring tables (shown to operators and
    # admins only; viewers see the values as sent). False: only the values as sent are ever stored.
    original_identifiers: bool = True
    retention_days: int = Field(30, ge=1, le=3650)


# The keys of the file that form the routing configuration; every other key is a service setting.
ROUTING_KEYS = ("forward_nodes", "projects", "profiles", "auth_configs")


class ServiceSettings(StrictModel):
    """The service settings: read from the file at start-up, never part of a revision."""

    listener: ListenerConfig = ListenerConfig()
    smtp: SmtpConfig = SmtpConfig()
    database: DatabaseConfig = DatabaseConfig()
    broker: BrokerConfig = BrokerConfig()
    blob_store: BlobStoreConfig = BlobStoreConfig()
    dicom_sender: DicomSenderConfig = DicomSenderConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    configuration: ConfigurationSettings = ConfigurationSettings()
    secrets: SecretsSettings = SecretsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    console: ConsoleConfig = ConsoleConfig()
    # Where the file was read from: relative paths in it (profiles) are relative to its folder.
    _source: Path | None = PrivateAttr(default=None)
    # The YAML it was read from, with lines: problems found later (a profile file) name their line too.
    _document: LocatedYaml | None = PrivateAttr(default=None)

    def locate(self, path: FieldPath, message: str, *, name: str | None = None) -> str:
        """``path: message (line N)``, the line being the field's in the file read (when there is one)."""
        return (self._document or LocatedYaml(None)).locate(path, message, name=name)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths of the configuration (e.g. profiles) are resolved against."""
        return self._source.parent if self._source is not None else Path.cwd()

    @property
    def source_path(self) -> Path | None:
        """The file these settings were read from, if any."""
        return self._source


class RoutingConfig(StrictModel):
    """The routing configuration: the versioned document of a revision (DESIGN.md section 14)."""

    forward_nodes: Annotated[list[ForwardNode], Field(min_length=1)]
    projects: list[Project] = []
    # Profiles by name: a project's `profile` may name one instead of giving a path or the text.
    profiles: list[StoredProfile] = []
    auth_configs: list[AuthConfig] = []

    @model_validator(mode="before")
    @classmethod
    def _resolve_names(cls, data: Any) -> Any:
        """Put the named profile's text into each project.

        The document keeps the names (what a person edits); the validated configuration carries the text
        the services run, so nothing downstream needs to know about names.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        profiles = data.get("profiles")
        texts = {
            p["name"]: p["yaml"]
            for p in (profiles if isinstance(profiles, list) else [])
            if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("yaml"), str)
        }
        projects = data.get("projects")
        if isinstance(projects, list) and texts:
            data["projects"] = [
                {**p, "profile": texts[p["profile"]]}
                if isinstance(p, dict) and isinstance(p.get("profile"), str) and p["profile"] in texts
                else p
                for p in projects
            ]
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> RoutingConfig:
        problems: list[str] = []
        codes: dict[str, int] = {}
        for a, auth in enumerate(self.auth_configs):
            if auth.code in codes:
                problems.append(
                    f"auth_configs[{a}].code: '{auth.code}' is already the code of auth_configs[{codes[auth.code]}]"
                )
            codes.setdefault(auth.code, a)
        names = [p.name for p in self.profiles]
        for index, name in enumerate(names):
            if name in names[:index]:
                problems.append(f"profiles[{index}].name: '{name}' is already used by profiles[{names.index(name)}]")
        seen_nodes: dict[str, int] = {}
        seen_destinations: dict[str, str] = {}
        seen_projects: dict[str, int] = {}
        for p, project in enumerate(self.projects):
            if project.name in seen_projects:
                first = seen_projects[project.name]
                problems.append(f"projects[{p}].name: '{project.name}' is already the name of projects[{first}]")
            seen_projects.setdefault(project.name, p)
        for n, node in enumerate(self.forward_nodes):
            if node.ae_title in seen_nodes:
                problems.append(
                    f"forward_nodes[{n}].ae_title: '{node.ae_title}' is already the AE title of "
                    f"forward_nodes[{seen_nodes[node.ae_title]}]"
                )
            seen_nodes.setdefault(node.ae_title, n)
            for d, dest in enumerate(node.destinations):
                here = f"forward_nodes[{n}].destinations[{d}]"
                if dest.id in seen_destinations:
                    problems.append(
                        f"{here}.id: '{dest.id}' is already used by {seen_destinations[dest.id]} "
                        "(destination ids name queues and must be unique)"
                    )
                seen_destinations.setdefault(dest.id, here)
                for field, ref in (("deidentification", dest.deidentification), ("tag_morphing", dest.tag_morphing)):
                    if ref is not None and ref.project not in seen_projects:
                        problems.append(f"{here}.{field}.project: no project named '{ref.project}' in projects")
                code = dest.deidentification.pseudonym.auth_config if dest.deidentification else None
                if code is not None and code not in codes:
                    problems.append(
                        f"{here}.deidentification.pseudonym.auth_config: no auth config '{code}' in auth_configs"
                    )
        if problems:
            # Raised as a ValueError so pydantic reports it beside the field errors.
            raise ValueError("\n".join(problems))
        return self

    def pseudonym_with_credentials(self, pseudonym: Pseudonym) -> Pseudonym:
        """The pseudonym source with the OAuth2 client credentials of its `auth_config` filled in."""
        auth = next((a for a in self.auth_configs if a.code == pseudonym.auth_config), None)
        if auth is None:
            return pseudonym
        credentials = {
            "token_url": auth.access_token_url,
            "client_id": auth.client_id.get_secret_value(),
            "client_secret": auth.client_secret,
            "scope": auth.scope,
            "auth_config": None,
        }
        return pseudonym.model_copy(update=credentials)

    def forward_node(self, ae_title: str) -> ForwardNode | None:
        """The forward node whose AE title is the given called AE title, if any."""
        wanted = ae_title.strip()
        return next((node for node in self.forward_nodes if node.ae_title == wanted), None)

    def destinations(self) -> Iterator[tuple[ForwardNode, DicomDestination | StowDestination]]:
        """Every (forward node, destination) pair of the configuration."""
        for node in self.forward_nodes:
            for dest in node.destinations:
                yield node, dest

    def destination(self, destination_id: str) -> DicomDestination | StowDestination | None:
        return next((d for _, d in self.destinations() if d.id == destination_id), None)


class GatewayConfig(RoutingConfig, ServiceSettings):
    """What a service runs: the service settings and one routing configuration (the whole file, or the
    file's settings with a revision's routing: `RevisionStore.gateway_config`)."""

    @classmethod
    def combine(cls, settings: ServiceSettings, routing: RoutingConfig) -> GatewayConfig:
        """The settings of a file with a routing configuration (already validated, checked again together)."""
        values = {name: getattr(settings, name) for name in ServiceSettings.model_fields}
        values.update({name: getattr(routing, name) for name in RoutingConfig.model_fields})
        config = cls.model_validate(values)
        config._source = settings.source_path
        return config


# --- loading ---------------------------------------------------------------------------------------

# `${ENV}`, `${file:/path}`, and `${encrypted:...}` (a secret a revision stores encrypted with secrets.key).
_REFERENCE = re.compile(r"\$\{(file:|encrypted:)?([^}]*)\}")

# Turns the body of an `${encrypted:...}` reference into the secret; raises ValueError when it cannot.
Decrypt = Callable[[str], str]


def has_reference(value: str) -> bool:
    """Whether a string holds an `${ENV}`, `${file:...}` or `${encrypted:...}` reference."""
    return _REFERENCE.search(value) is not None


def _resolve_references(
    value: Any,
    path: FieldPath,
    problems: list[tuple[FieldPath, str]],
    secrets: set[str],
    decrypt: Decrypt | None,
) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_references(v, (*path, str(k)), problems, secrets, decrypt) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_references(v, (*path, i), problems, secrets, decrypt) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2).strip()
        if kind == "encrypted:":
            if decrypt is None:
                problems.append((path, "an ${encrypted:...} secret can only be read with secrets.key set"))
                return ""
            try:
                secret = decrypt(name)
            except ValueError as exc:
                problems.append((path, str(exc)))
                return ""
            secrets.add(secret)
            return secret
        if kind == "file:":
            try:
                Path(name).stat()
            except OSError as exc:
                problems.append((path, f"cannot read secret file {name}: {exc.strerror or exc}"))
                return ""
            secret = Path(name).read_text(encoding="utf-8").rstrip("\r\n")
            secrets.add(secret)
            return secret
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append((path, f"'${{{name}}}' is not a valid environment variable reference"))
            return ""
        if name not in os.environ:
            problems.append((path, f"environment variable {name} is not set"))
            return ""
        secrets.add(os.environ[name])
        return os.environ[name]

    return _REFERENCE.sub(substitute, value)


def _pydantic_location(loc: tuple[str | int, ...]) -> FieldPath:
    # The discriminated union adds the tag ('dicom'/'stow') after a destination's index: drop it so the
    # path reads as the file does.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in ("dicom", "stow") and i > 0 and isinstance(loc[i - 1], int):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        # A plain union (`headers: str | dict[str, str]`) names the member type tried: not part of the file.
        if isinstance(part, str) and i > 0 and (part in _UNION_MEMBERS or re.fullmatch(r"[a-z]+\[.*\]", part)):
            continue
        out.append(part)
    return tuple(out)


_UNION_MEMBERS = frozenset({"str", "int", "float", "bool"})


def _pydantic_message(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling)"
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "union_tag_invalid":
        return "must be one of: dicom, stow"
    if error["type"] == "union_tag_not_found":
        return "is required (dicom or stow)"
    return message[:1].lower() + message[1:]


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[FieldPath, int]]:
    """The mapping of a YAML text and the line of each of its fields (karnak_dicom's located YAML)."""
    document = load_located_yaml(text, source)
    return as_mapping(document, source, "the configuration must be a YAML mapping"), dict(document.lines)


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_document(
    model: type[ModelT],
    data: dict[str, Any],
    lines: dict[FieldPath, int] | None = None,
    decrypt: Decrypt | None = None,
) -> ModelT:
    """Resolve the references of `data` and validate it as `model`; raise `ConfigError` naming every wrong
    field by its path (and its line, when `lines` come from a file). Secrets are never quoted."""
    document = LocatedYaml(data, lines or {})
    located = document.locate

    reference_problems: list[tuple[FieldPath, str]] = []
    secrets: set[str] = set()
    resolved = _resolve_references(data, (), reference_problems, secrets, decrypt)
    if reference_problems:
        raise ConfigError([located(p, m) for p, m in reference_problems])
    try:
        result = model.model_validate(resolved)
        if isinstance(result, GatewayConfig):
            result._document = document
        return result
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _pydantic_location(tuple(error["loc"]))
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                path = (*path, "type")
            message = _pydantic_message(error)
            for part in message.split("\n"):
                # Cross-reference problems carry their own path ("forward_nodes[0]...: message").
                if re.match(r"^[a-z_]+(\[\d+\])?(\.|\[|:)", part) and ": " in part and not path:
                    field, _, rest = part.partition(": ")
                    problems.append(document.locate(_field_path(field), rest, name=field))
                else:
                    problems.append(located(path, part))
        raise ConfigError([_redact(problem, secrets) for problem in problems]) from None


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate the YAML text of a configuration; raise `ConfigError` naming every wrong field."""
    data, lines = _read_yaml(text, source)
    return validate_document(GatewayConfig, data, lines)


def _redact(text: str, secrets: set[str]) -> str:
    """Hide every value that came from an ${ENV} or ${file:} reference: validators may quote values."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _field_path(field: str) -> FieldPath:
    """The path of a field written ``a.b[0].c``."""
    return tuple(int(index) if index else name for name, index in re.findall(r"([a-z_]+)|\[(\d+)\]", field))


def _chosen_path(path: str | os.PathLike[str] | None) -> str:
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(f"no configuration file: pass --config FILE or set {CONFIG_ENV}")
    return str(chosen)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Load the configuration from `path`, or from the file named by $KARNAK_CONFIG."""
    chosen = _chosen_path(path)
    config = parse_config(_read_text(chosen), source=chosen)
    config._source = Path(chosen).resolve()
    return config


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file read as its two layers: validated service settings, routing keys as written."""

    path: Path
    settings: ServiceSettings
    # The file's routing keys (`ROUTING_KEYS`) as written: references unresolved, profiles as paths. Empty
    # when the file has none (database mode after bootstrap).
    routing: dict[str, Any]
    # The line of each field of the file, for errors about its routing part.
    lines: dict[FieldPath, int] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.settings.base_dir


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[FieldPath, int]]:
    """The mapping of a YAML configuration file and the line of each of its fields; `ConfigError` otherwise."""
    return _read_yaml(_read_text(str(path)), str(path))


def read_config_file(path: str | os.PathLike[str] | None = None) -> ConfigFile:
    """Read a configuration file (or $KARNAK_CONFIG) and validate its service settings.

    The file is read anew each time: a Kubernetes ConfigMap replaced through its `..data` symlink is seen.
    """
    chosen = _chosen_path(path)
    data, lines = read_yaml_file(chosen)
    settings_data = {key: value for key, value in data.items() if key not in ROUTING_KEYS}
    settings = validate_document(ServiceSettings, settings_data, lines)
    # Keep the path as given (not resolved): a symlinked ConfigMap file is read through its link.
    settings._source = Path(os.path.abspath(chosen))
    routing = {key: data[key] for key in ROUTING_KEYS if data.get(key) is not None}
    return ConfigFile(path=Path(os.path.abspath(chosen)), settings=settings, routing=routing, lines=lines)
