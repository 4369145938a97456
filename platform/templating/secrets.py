"""Per-project secrets, generated once at creation and stored encrypted (Project.secrets).

Rendering reads them and never generates any, so the same project renders byte-identical
files every time. Nothing here logs a value.
"""

import base64
import datetime
import hashlib
import hmac
import re
import secrets
import time

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth.password_validation import CommonPasswordValidator
from django.core.exceptions import ValidationError

# Supabase's API keys are long-lived HS256 JWTs; they are rotated by re-generating
# the project's secrets, never by expiry in the middle of its life.
API_KEY_LIFETIME_S = 10 * 365 * 24 * 3600
JWT_ISSUER = "supabase"

# Keys whose values are not secret (they may appear in output and diffs).
PUBLIC_KEYS = frozenset({"dashboard_username", "jwt_iat", "jwt_exp", "tls_cert"})
TLS_LIFETIME_DAYS = 3650


def _api_key(role: str, secret: str, iat: int, exp: int) -> str:
    return jwt.encode({"role": role, "iss": JWT_ISSUER, "iat": iat, "exp": exp}, secret, algorithm="HS256")


def generate_project_secrets(*, now: float | None = None) -> dict:
    """Fresh secrets for one project. Hex only: every value is safe unquoted in env
    files, URLs, YAML and SQL. Lengths meet each service's minimum (realtime's
    SECRET_KEY_BASE 64, supavisor's VAULT_ENC_KEY exactly 32)."""
    iat = int(time.time() if now is None else now)
    exp = iat + API_KEY_LIFETIME_S
    jwt_secret = secrets.token_hex(32)
    return {
        "postgres_password": secrets.token_hex(24),
        "jwt_secret": jwt_secret,
        "jwt_iat": iat,
        "jwt_exp": exp,
        "anon_key": _api_key("anon", jwt_secret, iat, exp),
        "service_role_key": _api_key("service_role", jwt_secret, iat, exp),
        "dashboard_username": "supabase",
        "dashboard_password": secrets.token_hex(16),
        "secret_key_base": secrets.token_hex(32),
        "vault_enc_key": secrets.token_hex(16),
        "pg_meta_crypto_key": secrets.token_hex(16),
        "logflare_public_access_token": secrets.token_hex(32),
        "logflare_private_access_token": secrets.token_hex(32),
        "s3_protocol_access_key_id": secrets.token_hex(16),
        "s3_protocol_access_key_secret": secrets.token_hex(32),
    }


def new_style_api_keys(ref: str, jwt_secret: str) -> dict[str, str]:
    """The platform's new-style keys (`sb_publishable_...`, `sb_secret_...`) of a project, derived
    from its JWT secret: stable without being stored, and replaced when the JWT secret is."""

    def derived(kind: str) -> str:
        digest = hmac.new(jwt_secret.encode(), f"{kind}:{ref}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]

    return {"publishable": f"sb_publishable_{derived('publishable')}", "secret": f"sb_secret_{derived('secret')}"}


def key_hash(api_key: str) -> str:
    """An API key's `hash` as the platform lists it: its sha256, base64url without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(api_key.encode()).digest()).decode().rstrip("=")


SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for `password` (RFC 7677, as PostgreSQL
    writes it): sent instead of the password, so no statement or log line ever holds it."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def redact(text: str, project_secrets: dict) -> str:
    """`text` with every secret value replaced by its name, for anything shown to people."""
    # Longest first, so a secret that contains another is replaced whole.
    for key, value in sorted(project_secrets.items(), key=lambda kv: -len(str(kv[1]))):
        if key not in PUBLIC_KEYS and isinstance(value, str) and len(value) >= 8:
            text = text.replace(value, f"<secret:{key}>")
            # A multi-line secret (a PEM key) shows up in diffs line by line.
            for line in value.splitlines():
                if len(line) >= 16 and not line.startswith("-----"):
                    text = text.replace(line, f"<secret:{key}>")
    return text


# A password set by a person (the Management API's db_pass) goes where generated ones go:
# runtime.toml strings, env files, connection URLs. Characters that are safe unquoted in all
# of them (URL-unreserved), and long enough not to be weak.
DATABASE_PASSWORD_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{12,128}$")


def validate_database_password(password: str) -> None:
    """Refuse a malformed or weak database password with a ValidationError keyed `db_pass`."""
    if not DATABASE_PASSWORD_PATTERN.fullmatch(password or ""):
        raise ValidationError(
            {"db_pass": "The database password must be 12-128 characters of letters, digits and . _ ~ -"}
        )
    if len(set(password)) < 6 or password.isdigit():
        raise ValidationError({"db_pass": "The database password is too weak: use more varied characters."})
    try:
        CommonPasswordValidator().validate(password)
    except ValidationError:
        raise ValidationError({"db_pass": "The database password is too common."}) from None


def generate_tls_secrets(ref: str, database_domain: str) -> dict:
    """A self-signed certificate and its key for the project's database (`tls_cert`, `tls_key`, PEM).

    Clients that require TLS without verifying it (the Supabase CLI, sslmode=require) connect
    to the connection string Berth shows as it is; the names are the ones Berth publishes.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"db.{ref}.{database_domain}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=TLS_LIFETIME_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"db.{ref}.{database_domain}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return {
        "tls_cert": cert.public_bytes(serialization.Encoding.PEM).decode().strip(),
        "tls_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
        .strip(),
    }
