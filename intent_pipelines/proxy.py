"""The login in front of the Dagster UI: the nginx site that asks for it, and the htpasswd file it checks.

Dagster OSS has no authentication; nginx (Debian's package) does HTTP basic auth and passes
everything else through, the /graphql websocket included (deploy/nginx-site.conf.j2 says why each
line is there). Passwords are stored as SHA-512 crypt (``$6$``, salted, 5000 rounds), which nginx
checks through the system's crypt(3); computed here (Python 3.13 has no ``crypt`` module) and
checked against ``openssl passwd -6`` and a real nginx by the tests. The rounds stay at crypt's
default because nginx hashes the password again on every request, in its event loop, and the UI
sends many.
"""

import hashlib
import ipaddress
import os
import re
import secrets as random
from dataclasses import dataclass
from pathlib import Path

import jinja2

from intent_pipelines.deploy import NGINX_SITE, template_text
from intent_pipelines.errors import UsageError

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_UPSTREAM = "127.0.0.1:3000"
DEFAULT_HTPASSWD = "/etc/nginx/intent.htpasswd"
REALM = "Dagster"
# New htpasswd files: readable by the group, so that nginx's workers (www-data) can be let in.
HTPASSWD_MODE = 0o640

_ADDRESS = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):)?(?P<port>\d{1,5})$")
_SERVER_NAME = re.compile(r"^(?:_|[A-Za-z0-9*][A-Za-z0-9.*-]*)$")
# Characters that would end or escape an nginx directive if they were in a path.
_UNSAFE_IN_CONFIG = re.compile(r"[\s;{}'\"$\\#]")
_USER = re.compile(r"^[^:\s#][^:\s]*$")


@dataclass(frozen=True)
class ProxySite:
    """What the nginx site needs: where it listens, the webserver it guards, the users file, TLS."""

    listen: str = DEFAULT_LISTEN
    upstream: str = DEFAULT_UPSTREAM
    htpasswd: str = DEFAULT_HTPASSWD
    server_name: str = "_"
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        _address(self.listen, what="--listen", host_required=False)
        if self.upstream.startswith(("http://", "https://")):
            raise UsageError(f"--upstream {self.upstream!r} has a scheme",
                             hint=f"Give the webserver as HOST:PORT, e.g. {DEFAULT_UPSTREAM}.")
        _address(self.upstream, what="--upstream", host_required=True)
        if not _SERVER_NAME.match(self.server_name):
            raise UsageError(f"--server-name {self.server_name!r} is not a host name",
                             hint="Give one name such as ui.example.net, or _ for any.")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise UsageError("--tls-cert and --tls-key go together", hint="Give both files, or neither.")
        for option, path in (("--htpasswd", self.htpasswd), ("--tls-cert", self.tls_cert),
                             ("--tls-key", self.tls_key)):
            if path and (not Path(path).is_absolute() or _UNSAFE_IN_CONFIG.search(path)):
                raise UsageError(f"{option} {path!r} is not an absolute path nginx can take as written",
                                 hint="Give an absolute path without spaces, quotes, ; { } $ # or backslashes.")

    @property
    def upstream_host(self) -> str:
        """The webserver's host, as in --upstream."""
        return self.upstream.rpartition(":")[0]

    @property
    def upstream_is_loopback(self) -> bool:
        """Whether the webserver is reachable from this host only (else the login can be bypassed)."""
        host = self.upstream_host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def render_site(site: ProxySite) -> str:
    """The nginx site file for ``site`` (a ``map`` and a ``server``, for nginx's ``http`` block)."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True, autoescape=False)
    template = environment.from_string(template_text(NGINX_SITE))
    return template.render(listen=site.listen, upstream=site.upstream, upstream_host=site.upstream_host,
                           htpasswd=site.htpasswd, server_name=site.server_name, realm=REALM,
                           tls=bool(site.tls_cert), tls_cert=site.tls_cert, tls_key=site.tls_key)


def _address(value: str, *, what: str, host_required: bool) -> None:
    match = _ADDRESS.match(value)
    port = int(match.group("port")) if match else 0
    if match is None or not 0 < port < 65536 or (host_required and not match.group("host")):
        example = DEFAULT_UPSTREAM if host_required else DEFAULT_LISTEN
        raise UsageError(f"{what} {value!r} is not HOST:PORT", hint=f"E.g. {example} ([::1]:3000 for IPv6).")


# SHA-512 crypt, as specified by Ulrich Drepper ("Unix crypt using SHA-256 and SHA-512", 2007) and
# implemented by glibc/libxcrypt, which nginx calls.
_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DEFAULT_ROUNDS = 5000
# The order in which the spec takes the digest's bytes, three at a time, into the encoded hash.
_SHA512_ORDER = [(i, (i + 21) % 63, (i + 42) % 63) for i in (0, 22, 44, 3, 25, 47, 6, 28, 50, 9, 31, 53, 12, 34,
                                                              56, 15, 37, 59, 18, 40, 62)]


def sha512_crypt(password: str, salt: str | None = None, *, rounds: int | None = None) -> str:
    """``password`` hashed as crypt(3) ``$6$`` with ``salt`` (16 random characters when not given).

    Given ``rounds`` are written into the hash (``$6$rounds=N$``), as crypt(3) does; none means 5000, unwritten.
    """
    if salt is None:
        salt = "".join(random.choice(_CRYPT_ALPHABET) for _ in range(16))
    prefix = "$6$" if rounds is None else f"$6$rounds={min(max(rounds, 1000), 999_999_999)}$"
    rounds = _DEFAULT_ROUNDS if rounds is None else min(max(rounds, 1000), 999_999_999)
    key, salt_bytes = password.encode(), salt.encode()[:16]

    def sha(*parts: bytes) -> bytes:
        return hashlib.sha512(b"".join(parts)).digest()

    def stretch(digest: bytes, length: int) -> bytes:
        return (digest * (length // 64 + 1))[:length]

    alternate = sha(key, salt_bytes, key)
    first = hashlib.sha512(key + salt_bytes + stretch(alternate, len(key)))
    length = len(key)
    while length:
        first.update(alternate if length & 1 else key)
        length >>= 1
    digest = first.digest()
    key_sequence = stretch(sha(key * len(key)), len(key))
    salt_sequence = stretch(sha(salt_bytes * (16 + digest[0])), len(salt_bytes))
    for round_ in range(rounds):
        digest = sha(key_sequence if round_ & 1 else digest,
                     salt_sequence if round_ % 3 else b"",
                     key_sequence if round_ % 7 else b"",
                     digest if round_ & 1 else key_sequence)
    encoded = "".join(_base64_24(digest[a], digest[b], digest[c], 4) for a, b, c in _SHA512_ORDER)
    encoded += _base64_24(0, 0, digest[63], 2)
    return f"{prefix}{salt_bytes.decode()}${encoded}"


def _base64_24(high: int, middle: int, low: int, count: int) -> str:
    word = (high << 16) | (middle << 8) | low
    chars = []
    for _ in range(count):
        chars.append(_CRYPT_ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(chars)


def password_matches(password: str, hashed: str) -> bool:
    """Whether ``password`` is the one a ``$6$`` hash was made from."""
    parts = hashed.split("$")
    if len(parts) not in (4, 5) or parts[:2] != ["", "6"]:
        return False
    rounds = None
    if len(parts) == 5:
        if not re.fullmatch(r"rounds=\d{1,9}", parts[2]):
            return False
        rounds = int(parts[2].removeprefix("rounds="))
    return random.compare_digest(sha512_crypt(password, parts[-2], rounds=rounds), hashed)


def check_user(user: str) -> None:
    """Refuse a user name nginx's htpasswd format cannot hold (a colon, whitespace, a leading #)."""
    if not _USER.match(user):
        raise UsageError(f"user name {user!r} cannot go in an htpasswd file",
                         hint="Use a name without colons or whitespace that does not start with #.")


def check_password(password: str) -> None:
    """Refuse an empty password, or one with a line break (nothing could send it in a basic-auth header)."""
    if not password or "\n" in password or "\r" in password:
        raise UsageError("the password is empty or has a line break", hint="Give a non-empty password on one line.")


def add_user(path: Path, user: str, password: str) -> bool:
    """Set ``user``'s password in the htpasswd file at ``path`` (created when missing); whether the user is new.

    The file is replaced atomically, keeping its other lines, its mode and (as root) its owner, so
    a reload never sees half a file and a file made readable to nginx's workers stays so.
    """
    check_user(user)
    check_password(password)
    entry = f"{user}:{sha512_crypt(password)}"
    old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines: list[str] = []
    new = True
    for line in old:
        if line.split(":", 1)[0] != user:
            lines.append(line)
        elif new:  # the first entry of the user is replaced, later duplicates dropped
            lines.append(entry)
            new = False
    if new:
        lines.append(entry)
    previous = path.stat() if path.exists() else None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, previous.st_mode & 0o777 if previous else HTPASSWD_MODE)
        if previous and os.geteuid() == 0:
            os.chown(temporary, previous.st_uid, previous.st_gid)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return new
