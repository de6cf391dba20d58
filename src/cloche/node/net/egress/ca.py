"""The node's own certificate authority, which the egress proxy signs TLS leaves with.

To put a secret into an HTTPS request the proxy has to read and rewrite it, so it ends
the sandbox's TLS itself, with a certificate for the requested host signed by this CA;
sandboxes trust the CA (its PEM is installed into them) and nothing else trusts it. It is
a per-node key pair, created once and kept in the node's data directory: an EC P-256
key readable only by its owner, a CA limited to signing end-entity certificates
(pathlen 0), and short-lived leaves (7 days) minted on demand, cached per host in a
bounded LRU and minted again before they expire.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import tempfile
from collections import OrderedDict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=7)
LEAF_RENEW_BEFORE = datetime.timedelta(days=1)  # a cached leaf this close to expiry is minted again
CLOCK_SKEW = datetime.timedelta(hours=1)  # leaves start this long before now
LEAF_CACHE = 1024  # server contexts kept (one per host name)
KEY_FILE = "ca.key"
CERT_FILE = "ca.pem"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file beside `path` (created with `mode`), then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)  # fmt: skip


class NodeCA:
    """An EC P-256 CA (key and certificate) plus the TLS server contexts it signs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        self._leaves: OrderedDict[str, tuple[ssl.SSLContext, datetime.datetime]] = OrderedDict()

    @classmethod
    def load_or_create(cls, directory: Path, name: str) -> NodeCA:
        """The CA kept in `directory` (ca.key, mode 0600, and ca.pem), created when either
        file is missing, the pair does not match or the certificate is about to expire."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if (isinstance(key, ec.EllipticCurvePrivateKey) and cert.public_key() == key.public_key()
                    and cert.not_valid_after_utc > _now() + LEAF_VALIDITY):  # fmt: skip
                return cls(key, cert)
        key, cert = cls._create(name)
        _write_atomically(key_path, _key_pem(key), 0o600)
        _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(key, cert)

    @staticmethod
    def _create(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for `host` (TLS >= 1.2, ALPN http/1.1)."""
        cached = self._leaves.get(host)
        if cached is not None and cached[1] - LEAF_RENEW_BEFORE > _now():
            self._leaves.move_to_end(host)
            return cached[0]
        context, expires = self._mint(host)
        self._leaves[host] = (context, expires)
        self._leaves.move_to_end(host)
        while len(self._leaves) > LEAF_CACHE:
            self._leaves.popitem(last=False)
        return context

    def _mint(self, host: str) -> tuple[ssl.SSLContext, datetime.datetime]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        expires = now + LEAF_VALIDITY
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(expires)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        _load_chain_from_memory(context, cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
        return context, expires


def _load_chain_from_memory(context: ssl.SSLContext, pem: bytes) -> None:
    """`load_cert_chain` reads only files: hand it an anonymous memory file, so the leaf's
    private key never touches a disk."""
    fd = os.memfd_create("cloche-leaf", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
