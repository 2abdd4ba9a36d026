"""Containment for a step's command (`sandbox:`): the bubblewrap command line around it, and its setup errors."""

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from intent_pipelines.errors import FailureDetail, StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.spec.models import SandboxSpec

# What programs need to run, visible read-only at the same paths; a merged-/usr link (/bin -> usr/bin)
# is recreated as the same link. Homes, /srv, /var, /run and INTENT_HOME stay out of sight.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Where systemd-resolved keeps the file /etc/resolv.conf links to: DNS needs it once the network is shared.
RESOLVER_PATHS = ("/run/systemd/resolve",)
INSTALL_HINT = "Install it (apt-get install bubblewrap), or remove sandbox: from the intent."
SETUP_HINT = ("Check that every path under sandbox: exists; where unprivileged user namespaces are disabled, "
              "enable them (sysctl kernel.unprivileged_userns_clone=1) or remove sandbox:.")


def work_dir(ctx: ActionContext) -> Path:
    """The writable directory a sandboxed command without a `cwd` runs in: one per request, shared by its steps."""
    path = ctx.home.root / "work" / ctx.request_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def wrap(ctx: ActionContext, sandbox: SandboxSpec, argv: Sequence[str], *, cwd: Path | None,
         search_path: str | None) -> list[str]:
    """``argv`` run by bwrap inside ``sandbox``, in ``cwd`` (else the request's work dir), which it may write.

    ``search_path`` is the PATH the command is started with. Raises StepFailed (deterministic) when
    bwrap is not on it.
    """
    bwrap = shutil.which("bwrap", path=search_path)
    if bwrap is None:
        raise StepFailed(f"step {ctx.step_id} declares sandbox: but bubblewrap (bwrap) is not installed",
                         hint=INSTALL_HINT)
    workdir = str(cwd.resolve() if cwd else work_dir(ctx))
    # Only the outputs file, not the log directory: the command must not rewrite the logs of its request.
    # bwrap binds only what exists, so it is created empty here.
    outputs = str(ctx.log_path.with_suffix(".outputs"))
    Path(outputs).touch()
    # No --new-session: the runner already made bwrap a session leader without a terminal, and staying in
    # its process group is what lets a stop or a timeout SIGTERM the command itself, with its grace.
    options = ["--unshare-all", "--die-with-parent", *(["--share-net"] if sandbox.network else [])]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    options += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if sandbox.network:
        options += [arg for path in RESOLVER_PATHS for arg in ("--ro-bind-try", path, path)]
    for path in sandbox.readable:
        options += ["--ro-bind", path, path]
    # Later mounts win: a declared writable path inside a readable one stays writable.
    for path in (*sandbox.writable, workdir, outputs):
        options += ["--bind", path, path]
    options += ["--chdir", workdir]
    ctx.log(f"sandbox: bwrap {' '.join(options)}")
    return [bwrap, *options, "--", *argv]


def setup_failure(ctx: ActionContext, command: str, exit_code: int, tail: str) -> StepFailed | None:
    """The error to raise when bwrap could not build the sandbox (the command never started), else None."""
    # bwrap exits 1 after one "bwrap: ..." line when a namespace or a mount cannot be set up.
    lines = tail.strip().splitlines()
    if exit_code != 1 or len(lines) != 1 or not lines[0].startswith("bwrap: "):
        return None
    reason = lines[0].removeprefix("bwrap: ")
    return StepFailed(f"step {ctx.step_id}: bubblewrap could not set up the sandbox: {reason}",
                      detail=FailureDetail(command=command, exit_code=exit_code, stderr_tail=tail,
                                           log_path=str(ctx.log_path)),
                      hint=SETUP_HINT)
