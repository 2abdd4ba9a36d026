"""The kubernetes platform: the same operations as local, done by ``kubectl`` on a deployment."""

import json
import re
import time
from datetime import UTC
from typing import Any

from intent_pipelines.errors import FleetError, StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.runner import run_command
from intent_pipelines.fleet import App, KubernetesTarget
from intent_pipelines.platforms.base import HealthResult, Release, ReplicaStatus, parse_since

ROLLOUT_TIMEOUT = "300s"


def _target(app: App) -> KubernetesTarget:
    if app.kubernetes is None:
        raise FleetError(
            f"app {app.name} is on kubernetes but has no `kubernetes:` section",
            hint="Add namespace, deployment and image to it in fleet.yaml.",
        )
    return app.kubernetes


def _tag(image: str) -> str:
    """Return the tag of ``registry:5000/name:tag`` (a colon before the last slash is a port)."""
    name = image.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else ""


class KubernetesPlatform:
    """Drives one deployment per app; a release is an image tag (CI builds and pushes images)."""

    def __init__(self, ctx: ActionContext) -> None:
        self.ctx = ctx

    def _kubectl(self, app: App, *args: str, capture: bool = False) -> str:
        """Run kubectl against the app's context and namespace; return its output if captured."""
        target = _target(app)
        argv = ["kubectl"]
        if target.context:
            argv += ["--context", target.context]
        argv += ["-n", target.namespace, *args]
        # kubectl finds its cluster through KUBECONFIG (or ~/.kube/config under HOME).
        return run_command(self.ctx, argv, timeout_s=self.ctx.timeout_s, capture=capture,
                           inherit=("KUBECONFIG", *app.inherit_env)).output

    def _deployment(self, app: App) -> dict[str, Any]:
        output = self._kubectl(
            app, "get", "deployment", _target(app).deployment, "-o", "json", capture=True
        )
        try:
            data: dict[str, Any] = json.loads(output)
        except ValueError:
            raise StepFailed(
                f"kubectl did not return JSON for deployment {_target(app).deployment}",
                hint="Check the kubectl context and version (see the step log).",
            ) from None
        return data

    def _container(self, app: App) -> str:
        target = _target(app)
        return target.container or target.deployment

    def _rollout_status(self, app: App) -> None:
        deployment = f"deployment/{_target(app).deployment}"
        self._kubectl(app, "rollout", "status", deployment, f"--timeout={ROLLOUT_TIMEOUT}")

    def build(self, app: App, ref: str) -> Release:
        """Name the image for ``ref``; building and pushing it is CI's job."""
        image = f"{_target(app).image}:{ref}"
        self.ctx.log(f"{app.name}: release {ref} is image {image}")
        return Release(id=ref, ref=ref, location=image)

    def current_release(self, app: App) -> str:
        """Return the image tag the deployment's container runs."""
        containers = self._deployment(app)["spec"]["template"]["spec"]["containers"]
        wanted = self._container(app)
        for container in containers:
            if container["name"] == wanted:
                return _tag(container["image"])
        raise StepFailed(
            f"deployment {_target(app).deployment} has no container {wanted!r}",
            hint="Set `kubernetes.container` in fleet.yaml.",
        )

    def switch(self, app: App, release: str) -> str:
        """Set the container image to ``<image>:<release>`` and wait for the rollout."""
        previous = self.current_release(app)
        target = _target(app)
        self._kubectl(
            app,
            "set",
            "image",
            f"deployment/{target.deployment}",
            f"{self._container(app)}={target.image}:{release}",
        )
        self._rollout_status(app)
        return previous

    def rollback(self, app: App, release: str = "") -> str:
        """``rollout undo`` to the previous revision, or switch to ``release``."""
        if release:
            self.switch(app, release)
            return release
        self._kubectl(app, "rollout", "undo", f"deployment/{_target(app).deployment}")
        self._rollout_status(app)
        return self.current_release(app)

    def scale(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Set the deployment's replica count and wait for the rollout."""
        deployment = f"deployment/{_target(app).deployment}"
        self._kubectl(app, "scale", deployment, f"--replicas={replicas}")
        self._rollout_status(app)
        return self.status(app)

    def start(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Scale to ``replicas`` (a deployment has no separate start)."""
        return self.scale(app, replicas)

    def stop(self, app: App) -> None:
        """Scale to zero."""
        self._kubectl(app, "scale", f"deployment/{_target(app).deployment}", "--replicas=0")

    def restart(self, app: App) -> list[ReplicaStatus]:
        """``rollout restart`` and wait for it."""
        self._kubectl(app, "rollout", "restart", f"deployment/{_target(app).deployment}")
        self._rollout_status(app)
        return self.status(app)

    def status(self, app: App) -> list[ReplicaStatus]:
        """One entry per desired replica; the first ``readyReplicas`` of them are alive."""
        deployment = self._deployment(app)
        desired = int(deployment.get("spec", {}).get("replicas", 0))
        ready = int(deployment.get("status", {}).get("readyReplicas", 0))
        release = _tag(deployment["spec"]["template"]["spec"]["containers"][0]["image"])
        name = _target(app).deployment
        return [
            ReplicaStatus(name=f"{name}/{i + 1}", alive=i < ready, release=release)
            for i in range(desired)
        ]

    def logs(self, app: App, *, since: str = "", pattern: str = "", lines: int = 100) -> list[str]:
        """``kubectl logs`` of the deployment, filtered here by ``pattern``."""
        args = ["logs", f"deployment/{_target(app).deployment}", "-c", self._container(app)]
        cutoff = parse_since(since)
        if cutoff is not None:
            args.append(f"--since-time={cutoff.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
        # kubectl's --tail counts before our filter, so it is only exact without a pattern.
        if not pattern:
            args.append(f"--tail={lines}")
        output = self._kubectl(app, *args, capture=True)
        regex = re.compile(pattern) if pattern else None
        matched = [line for line in output.splitlines() if regex is None or regex.search(line)]
        return matched[-lines:] if lines > 0 else []

    def health(
        self, app: App, *, path: str | None = None, expect_status: int = 200, timeout_s: float = 20
    ) -> list[HealthResult]:
        """Wait until every replica is ready; the cluster's readiness probe is the health check."""
        deadline = time.monotonic() + timeout_s
        while True:
            replicas = self.status(app)
            remaining = deadline - time.monotonic()
            if all(r.alive for r in replicas) or remaining <= 0:
                break
            time.sleep(min(2.0, remaining))
        return [
            HealthResult(r.name, ok=r.alive, error="" if r.alive else "pod is not ready")
            for r in replicas
        ]

    def version(self, app: App) -> str:
        """Return the running image tag."""
        return self.current_release(app)
