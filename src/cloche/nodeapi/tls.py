"""The cluster's certificate authority and the node API's server certificates.

Why it exists: the node API is HTTPS only, and a control plane must know it talks to a
node of its cluster, not to whoever answers on the address. One EC P-256 CA lives in
the cluster directory (its key never leaves it); each `cloche node` gets a certificate
for the addresses it serves, and clients trust that CA alone (no system roots).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"
CA_DAYS, SERVER_DAYS = 3650, 90


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only, replacing any old one atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))  # fmt: skip


def ensure_ca(cluster_dir: Path) -> Path:
    """The cluster CA's certificate, made on first use; returns its path."""
    cert_path = cluster_dir / CA_CERT
    if cert_path.exists():
        return cert_path
    cluster_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloche cluster CA")])
    cert = (_builder("cloche cluster CA", name, key, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    write_private(cluster_dir / CA_KEY, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server_cert(cluster_dir: Path, out_dir: Path, hosts: list[str]) -> None:
    """A certificate for `hosts` (names or addresses), signed by the cluster CA, written
    to out_dir/server.pem and server-key.pem (replacing the old ones)."""
    ca_path = ensure_ca(cluster_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key((cluster_dir / CA_KEY).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(hosts[0], ca_cert.subject, key, SERVER_DAYS)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private(out_dir / SERVER_KEY, _key_pem(key))
    (out_dir / SERVER_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def client_context(ca_file: Path) -> ssl.SSLContext:
    """TLS for a node API client: the cluster CA is the only root, host names checked."""
    return ssl.create_default_context(cafile=str(ca_file))
