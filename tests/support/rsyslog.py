"""A real rsyslog receiver on loopback for the SIEM-forwarding tests.

Debian's ``rsyslog`` (``imtcp``) and ``rsyslog-gnutls`` (the ``gtls`` stream driver for RFC 5425
TLS). Each receiver has its own config, port, work directory and output file, and runs as
``rsyslogd -n -f CONF -i PIDFILE`` (a child process, never a daemon). What arrives is written one
line per message: ``PRI<TAB>APP-NAME<TAB>PROCID<TAB>MSGID<TAB>MSG`` as rsyslog parsed it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.polling import wait_until
from tests.support.servers import free_port

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
)
GTLS = any(
    Path(d).joinpath("lmnsd_gtls.so").exists()
    for d in (
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
        "/usr/lib/rsyslog",
    )
)

needs_rsyslog = pytest.mark.skipif(
    RSYSLOGD is None, reason="rsyslogd not installed (CI installs rsyslog and rsyslog-gnutls)"
)
needs_gtls = pytest.mark.skipif(
    RSYSLOGD is None or not GTLS,
    reason="rsyslog's gtls driver not installed (CI installs rsyslog-gnutls)",
)


@dataclass(frozen=True)
class Received:
    pri: int
    app: str
    procid: str
    msgid: str
    msg: str


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host`` (IP and ``localhost`` SANs):
    ``(ca.pem, cert.pem, key.pem)``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit-ledger test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


class Rsyslog:
    """One rsyslogd listening on ``127.0.0.1:port`` (TCP, or TLS through ``gtls``)."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        assert RSYSLOGD is not None
        self.directory = directory
        self.tls = tls
        self.port = free_port()
        self.output = directory / "received.log"
        self.pidfile = directory / "rsyslogd.pid"
        self.conf = directory / "rsyslog.conf"
        self.stderr = directory / "rsyslogd.stderr"
        self.ca_file: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        (directory / "work").mkdir(parents=True, exist_ok=True)
        self._write_conf()

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        driver = ""
        tls_globals = ""
        if self.tls:
            ca, cert, key = make_tls_files(self.directory / "tls")
            self.ca_file = ca
            tls_globals = (
                f'  defaultNetstreamDriverCAFile="{ca}"\n'
                f'  defaultNetstreamDriverCertFile="{cert}"\n'
                f'  defaultNetstreamDriverKeyFile="{key}"\n'
            )
            # RFC 5425 server: TLS required (mode 1); clients are not asked for a certificate.
            driver = ' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"'
        self.conf.write_text(
            f'global(workDirectory="{self.directory / "work"}" maxMessageSize="64k"\n'
            f"{tls_globals})\n"
            'module(load="imtcp" maxSessions="100")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}"{driver})\n'
            'template(name="fields" type="string" '
            'string="%pri%\\t%app-name%\\t%procid%\\t%msgid%\\t%msg%\\n")\n'
            f'action(type="omfile" file="{self.output}" template="fields" '
            'flushOnTXEnd="on" asyncWriting="off")\n',
            encoding="utf-8",
        )

    def start(self) -> Rsyslog:
        assert RSYSLOGD is not None
        self.pidfile.unlink(missing_ok=True)
        with self.stderr.open("ab") as err:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=err,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        wait_until(self._listening, timeout=15, message=f"rsyslogd listening on {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"rsyslogd exited {self.process.returncode}: "
                + self.stderr.read_text(encoding="utf-8", errors="replace")[-2000:]
            )
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def received(self) -> list[Received]:
        if not self.output.exists():
            return []
        out = []
        for line in self.output.read_text(encoding="utf-8", errors="replace").splitlines():
            pri, app, procid, msgid, msg = line.split("\t", 4)
            out.append(Received(int(pri), app, procid, msgid, msg))
        return out

    def raw(self) -> bytes:
        return self.output.read_bytes() if self.output.exists() else b""

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived; return them all."""

        def enough() -> list[Received] | None:
            got = self.received()
            return got if len(got) >= count else None

        return wait_until(enough, timeout=timeout, interval=0.1, message=f"{count} messages")

    def settle(self, quiet: float = 0.5) -> list[Received]:
        """What arrived once the output file stops growing for ``quiet`` seconds."""
        size = -1
        while True:
            now = self.output.stat().st_size if self.output.exists() else 0
            if now == size:
                return self.received()
            size = now
            time.sleep(quiet)
