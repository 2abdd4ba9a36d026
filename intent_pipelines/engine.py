"""The facade the Dagster ops and the CLI call: one method per phase of a request; no Dagster here.

Each phase lives in its own lifecycle module (preflight, steps, verify; rollback, lease, resume and
finish beneath them). Every state change goes through the store and the audit chain, so a request
can be followed, resumed and proven without Dagster's own run history.
"""

from collections.abc import Callable, Mapping
from typing import Any

from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import IntentError
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle import preflight as pre
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.lifecycle.preflight import LaunchRequest
from intent_pipelines.lifecycle.recorder import Recorder
from intent_pipelines.lifecycle.steps import RetryStep, run_step
from intent_pipelines.lifecycle.verify import verify_and_end
from intent_pipelines.plan import ExecutionPlan
from intent_pipelines.spec.loader import LoadedIntent
from intent_pipelines.spec.models import IntentSpec
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore

__all__ = ["Engine", "LaunchRequest", "RetryStep"]


class Engine:
    """Runs the phases of requests for one INTENT_HOME and state store."""

    def __init__(self, home: IntentHome, store: StateStore | None = None) -> None:
        self.home = home.ensure()
        self.store = store or StateStore(home.store_url())
        self._rec = Recorder(self.home, self.store)

    def plan(self, loaded: LoadedIntent, given: Mapping[str, Any], *, request_id: str = "plan",
             context: Mapping[str, str] | None = None,
             emit: Callable[[str], None] | None = None) -> tuple[ExecutionPlan, dict[str, Any]]:
        """Validate params and policy and render the plan; returns (plan, real param values)."""
        return pre.make_plan(self._rec, loaded, given, request_id=request_id, context=context, emit=emit)

    def preflight(self, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
                  run_id: str, owner: Owner | None = None) -> ExecutionPlan:
        """Validate, plan, record ``request.start`` and take the lock. Idempotent per request."""
        return pre.preflight(self._rec, loaded, launch, request_id=request_id, run_id=run_id, owner=owner)

    def abort_preflight(self, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
                        run_id: str, error: IntentError) -> None:
        """Record a request refused or failed in preflight, so every attempt is on the record."""
        pre.abort_preflight(self._rec, loaded, launch, request_id=request_id, run_id=run_id, error=error)

    def run_step(self, request_id: str, step_id: str, *, run_id: str, attempt: int = 1,
                 owner: Owner | None = None) -> Outputs:
        """Run one step (attempt is 1-based). Raises RetryStep, or the final error after rollback."""
        return run_step(self._rec, request_id, step_id, run_id=run_id, attempt=attempt, owner=owner)

    def finish(self, request_id: str, *, run_id: str, owner: Owner | None = None) -> RequestStatus:
        """Run verify checks, then end the request; a failed check rolls back and raises."""
        return verify_and_end(self._rec, request_id, run_id=run_id, owner=owner)

    def spec_of(self, row: Mapping[str, Any]) -> IntentSpec:
        """The intent exactly as the request started with it."""
        return self._rec.spec_of(row)
