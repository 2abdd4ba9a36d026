"""The users file nginx checks: SHA-512 crypt hashes as crypt(3) and openssl make them, lines kept, bad input refused."""

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from intent_pipelines.errors import UsageError
from intent_pipelines.proxy import HTPASSWD_MODE, add_user, password_matches, sha512_crypt
from intent_pipelines.testing import invoke_cli

# Ulrich Drepper's specification of SHA-crypt, its published test vectors for $6$.
SPEC_VECTORS = [
    ("Hello world!", "saltstring", None,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltstring", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
     "YTBmSK6H9qs/y3RnOaw5v."),
    ("This is just a test", "toolongsaltstring", 5000,
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/"
     "e1JSbq3y6JMxxl8audkUEm0"),
    ("we have a short salt string but not a short password", "short", 77777,
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"),
]
PASSWORDS = ["pw", "correct horse:battery staple", "ünïcødé-пароль", "x" * 200, "q'uote$(id)`%40\\"]


@pytest.mark.parametrize(("password", "salt", "rounds", "expected"), SPEC_VECTORS, ids=lambda v: str(v)[:12])
def test_hash_matches_the_specification_vectors(password: str, salt: str, rounds: int | None, expected: str) -> None:
    """sha512_crypt gives the specification's hashes, salt truncation and rounds= prefix included."""
    assert sha512_crypt(password, salt, rounds=rounds) == expected
    assert password_matches(password, expected) and not password_matches(password + "!", expected)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("password", PASSWORDS, ids=range(len(PASSWORDS)))
def test_hash_equals_openssl_passwd_6(password: str) -> None:
    """For the same salt, the hash is the one `openssl passwd -6` prints (long, unicode and shell-special passwords)."""
    salt = "AbCdEfGh12345678"
    done = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password.encode() + b"\n",
                          capture_output=True, check=True)
    assert sha512_crypt(password, salt) == done.stdout.decode().strip()


def test_fresh_hashes_are_salted_differently() -> None:
    """Two hashes of one password differ (random 16-character salts) and both verify."""
    first, second = sha512_crypt("same"), sha512_crypt("same")
    assert first != second and first.startswith("$6$") and len(first.split("$")[2]) == 16
    assert password_matches("same", first) and password_matches("same", second)


def test_a_malformed_hash_never_matches() -> None:
    """Another scheme, a bad rounds field or a truncated hash is no match, not an error."""
    for hashed in ("{SHA}abc", "$apr1$x$y", "$6$rounds=x$salt$hash", "$6$", "plain"):
        assert not password_matches("pw", hashed)


def test_add_user_creates_the_file_group_readable_and_keeps_other_lines(tmp_path: Path) -> None:
    """A new file gets mode 0640; a second user is appended, a changed password replaces only that line."""
    path = tmp_path / "intent.htpasswd"
    assert add_user(path, "ops", "first") is True
    assert stat.S_IMODE(path.stat().st_mode) == HTPASSWD_MODE
    path.write_text(path.read_text() + "# a comment nginx skips\n")
    assert add_user(path, "dev", "devpw") is True
    assert add_user(path, "ops", "second") is False
    lines = path.read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["ops", "# a comment nginx skips", "dev"]
    assert password_matches("second", lines[0].split(":", 1)[1])
    assert password_matches("devpw", lines[2].split(":", 1)[1])
    assert "second" not in path.read_text() and list(tmp_path.iterdir()) == [path]


def test_add_user_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    """A file an admin made 0600 stays 0600 after a password change (replaced atomically, not rewritten)."""
    path = tmp_path / "users"
    add_user(path, "ops", "one")
    path.chmod(0o600)
    add_user(path, "ops", "two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("user", ["", "a:b", "with space", "#comment", "tab\tname"])
def test_user_names_the_format_cannot_hold_are_refused(tmp_path: Path, user: str) -> None:
    """A colon, whitespace, a leading # or an empty name is a UsageError, and no file is written."""
    with pytest.raises(UsageError, match="cannot go in an htpasswd file"):
        add_user(tmp_path / "users", user, "pw")
    assert not (tmp_path / "users").exists()


@pytest.mark.parametrize("password", ["", "two\nlines", "cr\r"])
def test_empty_or_multi_line_passwords_are_refused(tmp_path: Path, password: str) -> None:
    """No basic-auth header could carry these, so they are refused rather than stored."""
    with pytest.raises(UsageError, match="empty or has a line break"):
        add_user(tmp_path / "users", "ops", password)


def test_cli_add_user_reads_stdin_and_never_prints_the_password(tmp_path: Path) -> None:
    """`intent proxy add-user --password-stdin` stores a verifiable hash and says only who was added."""
    from click.testing import CliRunner

    from intent_pipelines.cli.main import main

    path = tmp_path / "users"
    result = CliRunner().invoke(main, ["proxy", "add-user", "ops", "--htpasswd", str(path), "--password-stdin"],
                                input="s3cret-from-stdin\nignored\n")
    assert result.exit_code == 0, result.output
    assert result.output == f"added ops to {path}\n"
    assert password_matches("s3cret-from-stdin", path.read_text().strip().split(":", 1)[1])


def test_cli_add_user_asks_twice_and_refuses_a_mismatch(tmp_path: Path) -> None:
    """The prompt asks again until both entries agree; the file then holds the agreed password."""
    from click.testing import CliRunner

    from intent_pipelines.cli.main import main

    path = tmp_path / "users"
    result = CliRunner().invoke(main, ["proxy", "add-user", "ops", "--htpasswd", str(path)],
                                input="one\ntwo\nagreed\nagreed\n")
    assert result.exit_code == 0, result.output
    assert "Error: The two entered values do not match." in result.output
    assert "agreed" not in result.output and password_matches("agreed", path.read_text().split(":", 1)[1].strip())


def test_cli_add_user_with_a_bad_name_exits_2_in_one_line(tmp_path: Path) -> None:
    """A user name with a colon is refused before any prompt: exit 2, one stderr line, no file."""
    code, stdout, stderr = invoke_cli("proxy", "add-user", "a:b", "--htpasswd", str(tmp_path / "users"))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "cannot go in an htpasswd file" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "users").exists()
