"""A test OpenID Connect provider: keys generated here, a JWKS and discovery document served over HTTP on 127.0.0.1
from a thread, and tokens signed with those keys (or deliberately wrong ones)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "cbr-api"


def new_key(kind: str):
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RSA" \
        else ec.generate_private_key(ec.SECP256R1())


def public_jwk(kid: str, private_key) -> dict:
    public = private_key.public_key()
    as_json = RSAAlgorithm.to_jwk(public) if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm.to_jwk(public)
    return {**json.loads(as_json), "kid": kid, "use": "sig"}


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


class Provider:
    """keys: kid -> private key, the ones published; requests: paths asked for, in order."""

    def __init__(self):
        self.keys: dict[str, object] = {"rsa-1": new_key("RSA"), "ec-1": new_key("EC")}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                with provider._lock:
                    provider.requests.append(self.path)
                    documents = {"/.well-known/openid-configuration":
                                 {"issuer": provider.issuer, "jwks_uri": provider.jwks_url},
                                 "/jwks": {"keys": [public_jwk(kid, key) for kid, key in provider.keys.items()]}}
                document = documents.get(self.path)
                body = json.dumps(document).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider", daemon=True)
        self._thread.start()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def jwks_fetches(self) -> int:
        with self._lock:
            return self.requests.count("/jwks")

    def rotate(self, kid: str, kind: str = "RSA") -> None:
        """Publishes a new key (the old ones stay published, as providers do during a rotation)."""
        with self._lock:
            self.keys[kid] = new_key(kind)

    def settings(self, **changes) -> dict:
        """The Settings fields of a service trusting this provider (keys found by discovery)."""
        return {"oidc_issuer": self.issuer, "oidc_audience": AUDIENCE, **changes}

    def claims(self, project: str, ttl: int = 600, **changes) -> dict:
        """A good token's claims for `project` with full access; `changes` replace some (None removes one)."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": f"user-{uuid.uuid4().hex[:6]}",
                  "project_id": project, "roles": ["cbr_full_access"], "iat": now, "exp": now + ttl}
        claims.update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, project: str, kid: str = "rsa-1", alg: str | None = None, key=None, **changes) -> str:
        """A token signed with key `kid` (or `key`, e.g. one the provider never published); claims changed by
        `changes` (None removes one)."""
        private = key or self.keys[kid]
        alg = alg or ("RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(self.claims(project, **changes), private, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def hmac_token(claims: dict, secret: bytes, headers: dict | None = None, alg: str = "HS256") -> str:
    """A JWS made by hand: PyJWT refuses to use a PEM public key as an HMAC secret, which is the attack
    (alg confusion) a verifier must refuse. alg "none" gives an empty signature."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = ".".join([b64(json.dumps({"typ": "JWT", "alg": alg, **(headers or {})}).encode()),
                              b64(json.dumps(claims).encode())])
    signature = b"" if alg == "none" else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"
