"""The fake internet's certificates: one test CA that the code under test may be told to trust, and an
unrelated CA whose certificates nothing trusts (for "bad certificate" servers).

Why: HTTPS tests (an egress proxy that verifies upstream certificates, a SOCKS5 proxy behind TLS) need real,
verifiable certificates for names in the fake zone, and a server whose certificate must fail verification.
``trustme`` makes both in memory; this module writes them as PEM files into a directory the servers read.
"""

from __future__ import annotations

from pathlib import Path

import trustme


class TestPki:
    """PEM files in ``directory``:

    * ``ca.pem``: the test CA's certificate (``ca_pem_path``), the one trust anchor for every good server here;
    * ``<name>.pem``: private key + certificate chain (issued by the test CA) for each ``issue()``d name;
    * ``bad-<name>.pem``: key + chain for ``name`` from a CA nobody trusts (``issue_untrusted()``).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name="cloche test CA")
        self._untrusted = trustme.CA(organization_name="cloche untrusted CA")
        self.ca_pem_path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))

    @property
    def ca_pem(self) -> str:
        """The test CA's certificate, PEM text."""
        return self.ca_pem_path.read_text()

    def issue(self, name: str, *more: str) -> Path:
        """Key and chain for name (and more names or IP addresses), from the test CA."""
        path = self.directory / f"{name}.pem"
        self.ca.issue_cert(name, *more).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def issue_untrusted(self, name: str) -> Path:
        """Key and chain for name from a CA that is nowhere trusted: valid dates, matching name, bad issuer."""
        path = self.directory / f"bad-{name}.pem"
        self._untrusted.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path
