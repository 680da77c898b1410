"""Certificates made at test time with the `openssl` command: a CA, a server and a client it signs, a stranger CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise RuntimeError("the TLS tests need the openssl command: `apt-get install -y openssl`")
    return path


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run([_openssl(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Pki:
    """Everything a TLS test needs, as PEM files in one folder."""

    directory: Path
    ca: Path
    server: KeyPair
    client: KeyPair
    # A CA that signed nothing of the above, and a server certificate it signed.
    stranger_ca: Path
    stranger_server: KeyPair
    # The server's key, encrypted with a passphrase.
    encrypted_server_key: Path

    @property
    def chain_for_storescp(self) -> list[str]:
        """DCMTK's `+tls KEY CERT +cf CA` for the server side."""
        return ["+tls", str(self.server.private_key), str(self.server.certificate), "+cf", str(self.ca)]

    @property
    def chain_for_storescu(self) -> list[str]:
        """DCMTK's `+tls KEY CERT +cf CA` for the client side."""
        return ["+tls", str(self.client.private_key), str(self.client.certificate), "+cf", str(self.ca)]


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], usage: str, san: str) -> KeyPair:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName={san}\n"
    )
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
         cwd=directory)  # fmt: skip
    _run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-out", str(cert), "-extfile", str(extensions),
        cwd=directory,
    )  # fmt: skip
    return KeyPair(cert, key)


def make_pki(directory: Path) -> Pki:
    """A small PKI for one test module (RSA 2048, valid two days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "karnak-test-ca")
    server = _leaf(directory, "server", ca, "serverAuth", "DNS:localhost,IP:127.0.0.1")
    client = _leaf(directory, "client", ca, "clientAuth", "DNS:modality.example")
    stranger = _ca(directory, "stranger-ca")
    stranger_server = _leaf(directory, "stranger-server", stranger, "serverAuth", "DNS:localhost,IP:127.0.0.1")
    encrypted = directory / "server-encrypted.key"
    _run("pkey", "-in", str(server.private_key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted),
         cwd=directory)  # fmt: skip
    return Pki(directory, ca[0], server, client, stranger[0], stranger_server, encrypted)
