"""TLS and mTLS for the gRPC port: the files read and checked at start-up, the server credentials.

Unset, the port speaks plaintext (for a mesh that terminates TLS). Errors are ValueErrors naming
the variable and the file; Settings turns them into a ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


@dataclass(frozen=True)
class TlsFiles:
    certificate_chain: bytes  # PEM, the server's certificate first
    private_key: bytes  # PEM, unencrypted
    client_ca: bytes | None  # PEM; set: every client must present a certificate it signed

    @classmethod
    def read(cls, cert_file: str | None, key_file: str | None, client_ca_file: str | None) -> TlsFiles | None:
        if cert_file is None and key_file is None:
            if client_ca_file is not None:
                raise ValueError(
                    "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: "
                    "client certificates are only asked for over TLS"
                )
            return None
        if cert_file is None or key_file is None:
            present, missing = (
                ("TLS_KEY_FILE", "TLS_CERT_FILE") if cert_file is None else ("TLS_CERT_FILE", "TLS_KEY_FILE")
            )
            raise ValueError(f"{missing} is required when {present} is set")
        chain = _read("TLS_CERT_FILE", cert_file)
        key = _read("TLS_KEY_FILE", key_file)
        certificates = _certificates("TLS_CERT_FILE", cert_file, chain)
        try:
            private_key = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise ValueError(f"TLS_KEY_FILE {key_file} holds no unencrypted PEM private key") from None
        if _public(certificates[0].public_key()) != _public(private_key.public_key()):
            raise ValueError(
                f"TLS_KEY_FILE {key_file} is not the key of the certificate in TLS_CERT_FILE {cert_file}"
            )
        client_ca = None
        if client_ca_file is not None:
            client_ca = _read("TLS_CLIENT_CA_FILE", client_ca_file)
            _certificates("TLS_CLIENT_CA_FILE", client_ca_file, client_ca)
        return cls(chain, key, client_ca)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path} ({exc.strerror or exc})") from None


def _certificates(variable: str, path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{variable} {path} holds no PEM certificate") from None


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
