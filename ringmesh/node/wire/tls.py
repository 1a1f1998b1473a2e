"""Mutual TLS between peers: a cluster CA, one certificate per host, and the gRPC credentials.

A host's certificate names it (subjectAltName DNS name, and common name when it fits in 64
characters) and is signed by the cluster CA. Both sides of every peer connection show one:
the server requires a client certificate from the CA (`require_client_auth`), and a client
dialling host X at some IP:port overrides the TLS target name with X, so the server's
certificate must name X. The server then reads the client's verified name from the auth
context (`peer_identity`) and checks it against what the client claims to be.

Keys are EC P-256 (ECDSA with SHA-256), what every TLS stack and gRPC's BoringSSL handle.
Generation uses the `cryptography` package, not hand-built ASN.1.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ringmesh.core.catalog import is_node_id
from ringmesh.core.errors import RingmeshError

CA_KEY, CA_CERT = "ca.key", "ca.crt"
CA_DAYS = 3650
NODE_DAYS = 825
MAX_CN = 64  # X.509's upper bound for a common name; the SAN carries longer names
PLAINTEXT_WARNING = (
    "PLAINTEXT: peers talk without TLS (ringmesh.tls is off or absent): anyone who can reach a "
    "peer's port can read the cluster's data and pose as any host; use this only for tests and "
    "private networks (see `ringmesh certs init`)"
)


class TlsError(RingmeshError):
    """Certificates cannot be made or loaded; the message names the file and why."""


# -- making certificates -------------------------------------------------------------------------


def _x509():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - a dependency of the package
        raise TlsError("the 'cryptography' package is needed for certificates (pip install cryptography)") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _check_days(days: int) -> None:
    if not 1 <= days <= 100 * 365:
        raise TlsError(f"--days: expected 1 to {100 * 365} days, got {days}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never briefly readable by others); refuse to
    overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise TlsError(f"{path}: already exists; not overwriting it (move it away first)") from None
    except OSError as e:
        raise TlsError(f"{path}: cannot create: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)  # whatever the umask did


def _key_pem(key) -> bytes:
    _x, _h, serialization, *_ = _x509()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert) -> bytes:
    _x, _h, serialization, *_ = _x509()
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(directory: str | os.PathLike, days: int = CA_DAYS) -> tuple[Path, Path]:
    """A new cluster CA in `directory`: ca.key (mode 0600) and ca.crt. Refuses to overwrite."""
    x509, hashes, _s, ec, _eku, NameOID = _x509()
    _check_days(days)
    d = Path(directory)
    key_path, cert_path = d / CA_KEY, d / CA_CERT
    for p in (key_path, cert_path):
        if p.exists():
            raise TlsError(f"{p}: already exists; not overwriting the cluster CA (its certificates would stop working)")
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ringmesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ringmesh cluster CA {secrets.token_hex(4)}"),
        ]
    )
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write_pair(key_path, key, cert_path, cert)


def issue(
    ca_dir: str | os.PathLike, node: str, out_dir: str | os.PathLike | None = None, days: int = NODE_DAYS
) -> tuple[Path, Path]:
    """A key and certificate for host `node`, signed by the CA in `ca_dir`: <out>/<node>.key
    (mode 0600) and <out>/<node>.crt. Refuses to overwrite."""
    x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID = _x509()
    if not is_node_id(node):
        raise TlsError(f"{node!r}: not a host name (letters, digits, '.', '_' or '-'; at most 128)")
    _check_days(days)
    ca_dir = Path(ca_dir)
    out = Path(out_dir) if out_dir is not None else ca_dir
    ca_cert = _load_cert(ca_dir / CA_CERT, "the CA certificate")
    ca_key = _load_key(ca_dir / CA_KEY, "the CA key")
    if not _same_key(ca_cert, ca_key):
        raise TlsError(f"{ca_dir / CA_KEY}: does not belong to {ca_dir / CA_CERT}")
    key_path, cert_path = out / f"{node}.key", out / f"{node}.crt"
    for p in (key_path, cert_path):
        if p.exists():
            raise TlsError(f"{p}: already exists; not overwriting it (move it away to issue a new one)")
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ringmesh")]
    if len(node) <= MAX_CN:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, node))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _write_pair(key_path, key, cert_path, cert)


def _write_pair(key_path: Path, key, cert_path: Path, cert) -> tuple[Path, Path]:
    """The key (0600) and then its certificate, both new files; no key is left without its certificate."""
    _write_new(key_path, _key_pem(key), 0o600)
    try:
        _write_new(cert_path, _cert_pem(cert), 0o644)
    except TlsError:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, cert_path


# -- loading and checking ------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise TlsError(f"{path}: {what} is a directory, not a file") from None
    except OSError as e:
        raise TlsError(f"{path}: cannot read {what}: {e.strerror}") from None


def _load_cert(path: Path, what: str, data: bytes | None = None):
    x509 = _x509()[0]
    data = _read(path, what) if data is None else data
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsError(f"{path}: {what}: not a PEM certificate") from None


def _load_key(path: Path, what: str, data: bytes | None = None):
    serialization = _x509()[2]
    data = _read(path, what) if data is None else data
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsError(
            f"{path}: {what}: encrypted with a passphrase; ringmesh needs an unencrypted key (mode 0600)"
        ) from None
    except ValueError:
        raise TlsError(f"{path}: {what}: not a PEM private key") from None


def _same_key(cert, key) -> bool:
    serialization = _x509()[2]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def cert_names(cert) -> list[str]:
    """The names a certificate gives: its DNS subjectAltNames, else its common name."""
    x509, *_rest, NameOID = _x509()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)]
    return names


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    node: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    not_after: dt.datetime
    key_mode_warning: str | None = None  # the key file is readable by others


def load_node(
    paths: Mapping[str, str], node: str, sources: Mapping[str, str] | None = None, now: dt.datetime | None = None
) -> NodeCredentials:
    """Read and check this host's TLS files: every file readable and PEM, the key belongs to the
    certificate, the certificate names `node`, is signed by the CA and valid now."""
    x509 = _x509()[0]
    sources = sources or {}

    def where(k: str) -> str:
        return f"{sources[k]}: " if k in sources else ""

    files = {k: Path(paths[k]) for k in ("ca", "cert", "key")}
    what = {"ca": "the CA certificate", "cert": "this host's certificate", "key": "this host's key"}
    raw, parsed = {}, {}
    for k in ("ca", "cert", "key"):
        try:
            raw[k] = _read(files[k], what[k])
            parsed[k] = (_load_key if k == "key" else _load_cert)(files[k], what[k], raw[k])
        except TlsError as e:
            raise TlsError(f"{where(k)}{e}") from None
    ca, cert, key = parsed["ca"], parsed["cert"], parsed["key"]
    if not _same_key(cert, key):
        raise TlsError(f"{where('key')}{files['key']}: this key does not belong to the certificate {files['cert']}")
    names = cert_names(cert)
    if node not in names:
        raise TlsError(
            f"{where('cert')}{files['cert']}: the certificate names {', '.join(map(repr, names)) or 'no host'}, "
            f"not this host {node!r} (issue one with `ringmesh certs issue {node}`)"
        )
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:  # InvalidSignature has no message
        raise TlsError(
            f"{where('cert')}{files['cert']}: not signed by the CA in {files['ca']} "
            f"({type(e).__name__}{': ' + str(e) if str(e) else ''})"
        ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    for c, f, k in ((ca, files["ca"], "ca"), (cert, files["cert"], "cert")):
        if now < c.not_valid_before_utc:
            raise TlsError(
                f"{where(k)}{f}: not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
            )
        if now > c.not_valid_after_utc:
            raise TlsError(f"{where(k)}{f}: expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        ca_basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        ca_basic = None
    if ca_basic is None or not ca_basic.ca:
        raise TlsError(f"{where('ca')}{files['ca']}: not a CA certificate")
    mode_warning = None
    try:
        if stat.S_IMODE(files["key"].stat().st_mode) & 0o077:
            mode_warning = f"{files['key']}: the private key is readable by other users (chmod 600 it)"
    except OSError:
        pass
    return NodeCredentials(node, raw["ca"], raw["cert"], raw["key"], cert.not_valid_after_utc, mode_warning)


# -- gRPC ----------------------------------------------------------------------------------------


def server_credentials(creds: NodeCredentials):
    import grpc

    return grpc.ssl_server_credentials(
        [(creds.key_pem, creds.cert_pem)], root_certificates=creds.ca_pem, require_client_auth=True
    )


def channel_credentials(creds: NodeCredentials):
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=creds.ca_pem, private_key=creds.key_pem, certificate_chain=creds.cert_pem
    )


def channel_options(node: str) -> list[tuple[str, Any]]:
    """Dialling `node` by IP:port: its certificate must name `node`."""
    return [("grpc.ssl_target_name_override", node)]


def peer_identity(auth_context: Mapping[str, Any]) -> str | None:
    """The host a verified client certificate names, or None: the DNS subjectAltName that is a
    host name (exactly one), else the common name. gRPC fills the auth context only after it
    verified the chain against our CA."""

    def values(key: str) -> list[str]:
        out = []
        for v in auth_context.get(key, ()) or ():
            s = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            out.append(s)
        return out

    if not values("transport_security_type") or values("transport_security_type")[0] != "ssl":
        return None
    dns = [n for n in values("x509_subject_alternative_name") if is_node_id(n)]
    if "peer_dns" in auth_context:  # newer gRPC: DNS names apart from IP/URI/e-mail SANs
        dns = [n for n in values("peer_dns") if is_node_id(n)]
    if len(set(dns)) == 1:
        return dns[0]
    if dns:
        return None  # a certificate naming several hosts is no host's
    cn = values("x509_common_name")
    return cn[0] if len(cn) == 1 and is_node_id(cn[0]) else None


# -- relayed calls: the caller's signature -------------------------------------------------------


class CallSigner:
    """Signs relayed calls with this host's key (ECDSA P-256, SHA-256) and sends its certificate
    along, so that the host at the far end of a relay can tell who called it."""

    def __init__(self, creds: NodeCredentials) -> None:
        x509, hashes, serialization, ec, *_ = _x509()
        self._key = serialization.load_pem_private_key(creds.key_pem, password=None)
        self._algorithm = ec.ECDSA(hashes.SHA256())
        self.certificate = x509.load_pem_x509_certificate(creds.cert_pem).public_bytes(serialization.Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, self._algorithm)


class CallVerifier:
    """Checks a relayed call's signature: the certificate sent with it is issued by our CA, valid
    now and names exactly one host, and that host's key signed the call. Verified certificates
    are kept (by their bytes), so each call costs one ECDSA verification."""

    MAX_KEPT = 4096

    def __init__(self, ca_pem: bytes) -> None:
        x509, hashes, _serialization, ec, *_ = _x509()
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._algorithm = ec.ECDSA(hashes.SHA256())
        self._known: dict[bytes, tuple[str, Any, dt.datetime]] = {}  # DER -> (host, public key, not after)

    def caller(self, certificate: bytes, signature: bytes, data: bytes, now: dt.datetime | None = None) -> str:
        """The host that signed `data`; TlsError (with the reason) when it cannot be told."""
        from cryptography.exceptions import InvalidSignature

        now = now or dt.datetime.now(dt.timezone.utc)
        known = self._known.get(certificate)
        if known is None:
            known = self._check(certificate, now)
            if len(self._known) >= self.MAX_KEPT:
                self._known.clear()
            self._known[certificate] = known
        host, public_key, not_after = known
        if now > not_after:
            raise TlsError(f"the certificate of {host} expired on {not_after:%Y-%m-%d %H:%M} UTC")
        try:
            public_key.verify(signature, data, self._algorithm)
        except (InvalidSignature, ValueError, TypeError):
            raise TlsError(f"a call signed as {host} does not match its signature") from None
        return host

    def _check(self, certificate: bytes, now: dt.datetime) -> tuple[str, Any, dt.datetime]:
        x509 = _x509()[0]
        from cryptography.exceptions import InvalidSignature

        try:
            cert = x509.load_der_x509_certificate(certificate)
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise TlsError("a relayed call's certificate is not one our CA issued") from None
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise TlsError("a relayed call's certificate is not valid now")
        names = [n for n in cert_names(cert) if is_node_id(n)]
        if len(set(names)) != 1:
            raise TlsError(f"a relayed call's certificate names {len(set(names))} hosts, not one")
        return names[0], cert.public_key(), cert.not_valid_after_utc
