"""Who may open a session: credentials, anonymous loopback, and the session's identity.

A credential is known to the gateway only as the SHA-256 digest of its token: tokens are
hashed once at start-up, a presented token is hashed and compared (in constant time) with
*every* known digest, and a session remembers the digest of the credential that opened it,
never the token. Anonymous mode (no tokens configured) admits only what is plainly a local
client: a loopback peer, no forwarding header (behind a reverse proxy on the same host every
client would look like loopback), and no browser ``Origin`` other than the gateway's own page
(or one the operator allows), so that no other web page a user visits can stream into it.

Session ids are minted by :mod:`streaming.session_ids` (UUIDv7s: 48 bits of Unix milliseconds,
74 random bits), so they sort by creation and never repeat across restarts or machines.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.typing import Subprotocol

from streaming.gateway import protocol as proto
from streaming.gateway.protocol import ProtocolError

ANONYMOUS = "anonymous"
"""Credential id of clients admitted without a token (anonymous loopback mode)."""
TOKEN_SUBPROTOCOL = "token"
"""``Sec-WebSocket-Protocol: token, <key>``: how browser-based Deepgram clients authenticate."""
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
RESUME_TOKEN_BYTES = 24
"""Random bytes in a resume secret (192 bits; 32 URL-safe characters)."""

UNAUTHORIZED = "missing or unknown token; send 'Authorization: Token <key>' or ?token="


def digest(secret: str) -> str:
    """SHA-256 hex digest: what the gateway keeps instead of a token or resume secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_resume_token() -> str:
    return secrets.token_urlsafe(RESUME_TOKEN_BYTES)


@dataclass(frozen=True)
class Credential:
    """Who opened a connection: the digest of its token, or :data:`ANONYMOUS`."""

    id: str

    @property
    def anonymous(self) -> bool:
        return self.id == ANONYMOUS

    @property
    def device_id(self) -> str | None:
        """The device a client that names none streams as (Deepgram clients send no device)."""
        return None if self.anonymous else proto.device_for_digest(self.id)


def _is_loopback(address: Any) -> bool:
    try:
        host = address[0] if isinstance(address, tuple) else str(address)
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def presented_tokens(path: str, headers: Headers) -> set[str]:
    """Every token the request carries: ``Authorization``, ``?token=``, the subprotocol."""
    tokens: set[str] = set()
    for value in headers.get_all("Authorization"):
        token = proto.token_from_header(value)
        # An Authorization header in a scheme we do not take is still a credential presented.
        tokens.add(token if token is not None else "\x00unsupported-scheme")
    tokens.update(value for key, value in parse_qsl(urlsplit(path).query) if key == "token")
    offered = [
        part.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for part in value.split(",")
    ]
    if TOKEN_SUBPROTOCOL in offered:
        index = offered.index(TOKEN_SUBPROTOCOL)
        tokens.add(offered[index + 1] if index + 1 < len(offered) else "")
    return tokens


def own_origins(host: str, port: int, *, tls: bool) -> frozenset[str]:
    """The origins of the gateway's own browser page as loopback clients load it."""
    scheme = "https" if tls else "http"
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host not in ("0.0.0.0", "::", ""):
        names.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"{scheme}://{name}:{port}" for name in names)


class Admission:
    """Decides, per handshake, which credential a connection has, or refuses it (1008)."""

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        allow_anonymous_loopback: bool,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._known = tuple(digest(token) for token in tokens)
        self.allow_anonymous_loopback = allow_anonymous_loopback
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)

    @property
    def anonymous_mode(self) -> bool:
        return not self._known

    def _matches(self, token: str) -> bool:
        presented = digest(token)
        matched = False
        for known in self._known:  # no early exit: the time does not tell which one matched
            matched |= same_digest(presented, known)
        return matched

    def authenticate(
        self, path: str, headers: Headers, remote_address: Any, own: frozenset[str]
    ) -> Credential:
        """The connection's credential; raises ``unauthorized`` (1008) otherwise."""
        tokens = presented_tokens(path, headers)
        if tokens:
            # A presented token must be valid in every mode, and one connection has one.
            if len(tokens) > 1:
                raise ProtocolError(
                    "unauthorized", "more than one different token presented", proto.CLOSE_POLICY
                )
            (token,) = tokens
            if not self._matches(token):
                raise ProtocolError("unauthorized", UNAUTHORIZED, proto.CLOSE_POLICY)
            return Credential(digest(token))
        if not self.anonymous_mode:
            raise ProtocolError("unauthorized", UNAUTHORIZED, proto.CLOSE_POLICY)
        if not (self.allow_anonymous_loopback and _is_loopback(remote_address)):
            raise ProtocolError(
                "unauthorized",
                "this server takes no clients without a token from this address; "
                "configure auth tokens",
                proto.CLOSE_POLICY,
            )
        forwarded = [name for name in FORWARDING_HEADERS if name in headers]
        if forwarded:
            raise ProtocolError(
                "unauthorized",
                f"anonymous loopback mode refuses proxied requests ({forwarded[0]} header); "
                "configure auth tokens to serve through a proxy",
                proto.CLOSE_POLICY,
            )
        origins = headers.get_all("Origin")
        if origins and not all(o.rstrip("/") in own | self.allowed_origins for o in origins):
            raise ProtocolError(
                "unauthorized",
                f"origin {origins[0][:80]!r} may not use this gateway without a token; "
                "add it to SONOLAKE_GATEWAY_ALLOWED_ORIGINS or configure auth tokens",
                proto.CLOSE_POLICY,
            )
        return Credential(ANONYMOUS)


def select_subprotocol(_connection: Any, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
    """Answer ``token`` to a client that authenticates with it; no subprotocol otherwise."""
    return Subprotocol(TOKEN_SUBPROTOCOL) if TOKEN_SUBPROTOCOL in subprotocols else None
