"""The SMTP mailer against a real SMTP server (aiosmtpd): plain, STARTTLS and implicit TLS, with login."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from karnak_notifier.smtp import SmtpMailer, SmtpServer, SmtpUnavailable
from karnak_shared.errors import TransientDeliveryError
from tests.notifier.test_notifier import MailServer
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-smtp-password"


def email(to: str = "team@hospital.org") -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "ERROR [Karnak Notification] PSEUDO-1 BRAIN"
    message["From"] = "karnak@hospital.org"
    message["To"] = to
    message.set_content("Instances: 1 sent, 1 failed, 0 rejected\n")
    return message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the openssl command: `apt-get install -y openssl`", pytrace=False)
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def plain_server() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


def test_an_email_is_handed_to_a_plain_smtp_server(plain_server: MailServer) -> None:
    refused = SmtpMailer(SmtpServer("127.0.0.1", plain_server.port)).send(email())
    assert refused == 0
    (received,) = plain_server.received
    assert received.sender == "karnak@hospital.org"
    assert received.recipients == ["team@hospital.org"]
    assert received.message["Subject"] == "ERROR [Karnak Notification] PSEUDO-1 BRAIN"


def test_every_address_of_the_to_header_receives_it(plain_server: MailServer) -> None:
    SmtpMailer(SmtpServer("127.0.0.1", plain_server.port)).send(email("a@hospital.org, b@university.ch"))
    assert plain_server.received[0].recipients == ["a@hospital.org", "b@university.ch"]


def test_starttls_with_login(certificate: tuple[Path, Path]) -> None:
    server = MailServer(tls_context=server_context(certificate), credentials=("karnak", PASSWORD)).start()
    try:
        mailer = SmtpMailer(
            SmtpServer("127.0.0.1", server.port, starttls=True, username="karnak", password=PASSWORD),
            ssl_context=client_context(certificate),
        )
        mailer.send(email())
        (received,) = server.received
        assert received.encrypted and received.login == "karnak"
    finally:
        server.stop()


# aiosmtpd warns because it only counts STARTTLS as TLS; this session is encrypted from its first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_login(certificate: tuple[Path, Path]) -> None:
    server = MailServer(
        tls_context=server_context(certificate), implicit_tls=True, credentials=("karnak", PASSWORD)
    ).start()
    try:
        mailer = SmtpMailer(
            SmtpServer("127.0.0.1", server.port, tls=True, username="karnak", password=PASSWORD),
            ssl_context=client_context(certificate),
        )
        mailer.send(email())
        (received,) = server.received
        assert received.encrypted and received.login == "karnak"
    finally:
        server.stop()


def test_a_certificate_the_client_does_not_trust_is_a_transient_error(certificate: tuple[Path, Path]) -> None:
    server = MailServer(tls_context=server_context(certificate), implicit_tls=True).start()
    try:
        mailer = SmtpMailer(SmtpServer("127.0.0.1", server.port, tls=True))  # the system trust store
        with pytest.raises(SmtpUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            mailer.send(email())
        assert server.received == []
    finally:
        server.stop()


def test_a_refused_login_is_a_transient_error_that_does_not_show_the_password(certificate: tuple[Path, Path]) -> None:
    server = MailServer(tls_context=server_context(certificate), credentials=("karnak", PASSWORD)).start()
    try:
        mailer = SmtpMailer(
            SmtpServer("127.0.0.1", server.port, starttls=True, username="karnak", password="wrong-password-77"),
            ssl_context=client_context(certificate),
        )
        with pytest.raises(TransientDeliveryError) as caught:
            mailer.send(email())
        assert "refused the login of karnak" in str(caught.value)
        assert "535" in str(caught.value)
        assert "wrong-password-77" not in str(caught.value)
        assert server.received == []
    finally:
        server.stop()


def test_no_server_listening_is_smtp_unavailable() -> None:
    port = free_port()
    with pytest.raises(SmtpUnavailable, match=rf"cannot connect to the SMTP server 127\.0\.0\.1:{port}"):
        SmtpMailer(SmtpServer("127.0.0.1", port, timeout=5)).send(email())


def test_a_server_that_refuses_the_recipient_is_a_transient_error() -> None:
    server = MailServer(refuse_recipients=True).start()
    try:
        with pytest.raises(TransientDeliveryError, match="refused the email") as caught:
            SmtpMailer(SmtpServer("127.0.0.1", server.port)).send(email())
        assert not isinstance(caught.value, SmtpUnavailable)
    finally:
        server.stop()


def test_a_server_that_never_answers_times_out_as_smtp_unavailable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(SmtpUnavailable, match=r"127\.0\.0\.1"):
            SmtpMailer(SmtpServer("127.0.0.1", port, timeout=1)).send(email())
