"""Executes a request phase by phase (preflight, steps, finish) against the state store; no Dagster here.

The Dagster layer calls one method per op. Every state change goes through the store and the audit
chain, so a request can be followed, resumed and proven without Dagster's own run history.
"""

import dataclasses
import getpass
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from intent_pipelines.actions import registry
from intent_pipelines.actions.base import ActionContext, Outputs
from intent_pipelines.actions.runner import run_command
from intent_pipelines.audit import events as ev
from intent_pipelines.confirmation import check_confirmation, parse_confirm, plan_json
from intent_pipelines.errors import (
    ApprovalRequired,
    ConfirmationRequired,
    GateRejected,
    IntentError,
    LeaseLost,
    RollbackFailed,
    RolledBack,
    StepFailed,
    StepStopped,
    StepTimeout,
    UsageError,
    VerifyFailed,
)
from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.crash import reap_dead_owners
from intent_pipelines.lifecycle.finish import Ending, end_request
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.plan import ExecutionPlan, RenderedCall, build_plan, namespace, render_call, request_view
from intent_pipelines.rendering import evaluate
from intent_pipelines.retries import FailureClass, RetryOn, should_retry
from intent_pipelines.settings import settings
from intent_pipelines.spec.loader import LoadedIntent, parse_intent
from intent_pipelines.spec.models import ActionCall, IntentSpec, StepSpec
from intent_pipelines.spec.params import REDACTED, redact, resolve_params
from intent_pipelines.status import Reason, RequestStatus, StepStatus
from intent_pipelines.store import StateStore

LOCK_TTL_S = 60.0
# How long a step whose lease was lost gets between SIGTERM and SIGKILL.
LEASE_LOST_GRACE_S = 2.0
HEARTBEAT_S = 5.0
# For bench/heartbeat_overhead.py only: INTENT_HEARTBEAT=off runs steps without the heartbeat
# thread, so no heartbeats, no lease renewal and no stop polling. Never set it in production.
# A re-execution may continue a request that failed or was stopped (its completed steps stand).
RESUMABLE = frozenset(s.value for s in RequestStatus if s.resumable)
OUTPUT_FILE_ENV = "INTENT_OUTPUT"


def _print_line(prefix: str) -> Callable[[str], None]:
    def emit(line: str) -> None:
        print(f"[{prefix}] {line}", flush=True)

    return emit


@dataclass(frozen=True)
class LaunchRequest:
    """What an operator asked for: which intent, with which params, and how."""

    params: Mapping[str, Any]
    dry_run: bool = False
    # True, or the hash of the plan being confirmed (see confirmation.py).
    confirm: bool | str = False
    reason: str = ""
    who: str = ""
    # A replay names the request it repeats; its recorded context is reused unless fresh_context.
    replay_of: str = ""
    fresh_context: bool = False
    # The hash of a plan already shown (the CLI, a dry run): its captured context is reused, so the
    # plan that runs is exactly the plan that was shown and confirmed.
    plan: str = ""


class RetryStep(Exception):
    """The step failed transiently and should run again after ``wait_s`` seconds."""

    def __init__(self, error: StepFailed, wait_s: float, max_attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait_s = wait_s
        self.max_attempts = max_attempts


class _Heartbeat:
    """While a step, check or rollback runs: signs of life, lock lease renewal, and stop requests.

    Every second it looks for a stop request (`intent stop`, the watchdog) and, when there is one,
    tells the action runner to terminate its process group; every HEARTBEAT_S it records a
    heartbeat with the last output line, so a silent command still shows it is alive.
    """

    def __init__(self, store: StateStore, request_id: str, lock_key: str | None,
                 ctx: ActionContext | None = None, *, run_id: str = "") -> None:
        self.store, self.request_id, self.lock_key, self.ctx = store, request_id, lock_key, ctx
        self.run_id = run_id or request_id
        self.lost = False  # the lease could not be renewed: the step is being stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_beat = last_renew = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if self.ctx is not None and not self.ctx.cancel.is_set():
                cancel = self.store.cancel_request_of(self.request_id)
                if cancel is not None:
                    self.ctx.cancel_grace_s = cancel[0]
                    self.ctx.cancel.set()
            if now - last_beat >= HEARTBEAT_S:
                self.store.heartbeat(self.request_id, last_log_line=self.ctx.last_line if self.ctx else None)
                last_beat = now
            if self.lock_key and not self.lost and now - last_renew >= LOCK_TTL_S / 4:
                if not self.store.renew_lock(self.lock_key, request_id=self.request_id, ttl_s=LOCK_TTL_S):
                    self._lease_lost()
                last_renew = now

    def _lease_lost(self) -> None:
        """Someone else holds (or freed) the lock: the step must not go on without it."""
        self.lost = True
        holder = self.store.lock_holder(self.lock_key) if self.lock_key else None
        step = self.ctx.step_id if self.ctx else ""
        self.store.append_event(ev.LockLost(lock=self.lock_key or "", step=step,
                                            holder=holder.request_id if holder else None),
                                request_id=self.request_id, run_id=self.run_id)
        if self.ctx is not None:
            self.ctx.cancel_grace_s = LEASE_LOST_GRACE_S
            self.ctx.cancel.set()

    def __enter__(self) -> "_Heartbeat":
        if settings().heartbeat:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()


class Engine:
    """Runs the phases of requests for one INTENT_HOME and state store."""

    def __init__(self, home: IntentHome, store: StateStore | None = None) -> None:
        self.home = home.ensure()
        self.store = store or StateStore(home.store_url())

    # --- planning ------------------------------------------------------------------------------

    def _app_view(self, spec: IntentSpec, params: Mapping[str, Any]) -> dict[str, Any] | None:
        if "app" not in spec.params or not params.get("app"):
            return None
        fleet_file = self.home.fleet_file
        app = load_fleet(fleet_file).app(str(params["app"]))
        view = app.model_dump()
        if app.source:
            view["source"] = str(app.source_path(fleet_file))
        return view

    def capture_context(self, spec: IntentSpec, params: Mapping[str, Any], *, request_id: str,
                        emit: Callable[[str], None] | None = None) -> dict[str, str]:
        """Run the intent's context commands once and return their trimmed output."""
        ns = namespace(params=params, context={}, outputs=None, app=self._app_view(spec, params),
                       request=request_view(request_id), step_ids=[])
        values: dict[str, str] = {}
        for name, capture in spec.context.items():
            call = render_call(ActionCall(run=capture.run), ns, where=f"context.{name}")
            ctx = self._action_context(request_id, "_context", emit, secrets=_secret_values(spec, ns))
            try:
                result = run_command(ctx, call.argv, timeout_s=capture.timeout)
                values[name] = result.tail.strip().splitlines()[-1] if result.tail.strip() else ""
            except StepFailed as exc:
                if not capture.optional:
                    raise StepFailed(f"context {name!r} could not be captured: {exc.message}",
                                     detail=exc.detail, hint=exc.hint) from None
                values[name] = ""
        return values

    def plan(self, loaded: LoadedIntent, given: Mapping[str, Any], *, request_id: str = "plan",
             context: Mapping[str, str] | None = None,
             emit: Callable[[str], None] | None = None) -> tuple[ExecutionPlan, dict[str, Any]]:
        """Validate params and policy and render the plan; returns (plan, real param values).

        Raises ParamError, FleetError, PolicyDenied or TemplateError before anything runs.
        """
        spec = loaded.spec
        values = resolve_params(spec, given)
        app = self._app_view(spec, values)
        if context is None:
            context = self.capture_context(spec, values, request_id=request_id, emit=emit)
        shown = redact(spec, values, salt=None)
        plan = build_plan(spec, intent_sha256=loaded.sha256, params=shown, context=dict(context), app=app)
        self.store.save_plan(plan.plan_hash, plan_json(plan))
        return plan, values

    # --- preflight -----------------------------------------------------------------------------

    def preflight(self, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
                  run_id: str, owner: Owner | None = None) -> ExecutionPlan:
        """Validate, plan, record ``request.start`` and take the lock. Idempotent per request."""
        existing = self.store.request(request_id)
        if existing is not None and existing["status"] != RequestStatus.RUNNING.value \
                and existing["status"] not in RESUMABLE:
            # Re-executing a finished request (e.g. "all steps" after success) must not take its lock again.
            raise UsageError(f"request {request_id} already ended {existing['status']}",
                             hint=f"Start a new request, or `intent replay {request_id}`.")
        emit = _print_line("preflight")
        original = self._replayed(launch.replay_of) if launch.replay_of else None
        _, bound = parse_confirm(launch.confirm)
        # A confirmation given in another command (--confirm=HASH) is checked against a fresh capture:
        # the world may have changed since. Within one command the plan shown is the plan run.
        context = existing["context"] if existing else self.shown_context(launch.plan)
        if context is None and original is not None and not launch.fresh_context:
            context = original["context"]
        plan, values = self.plan(loaded, launch.params, request_id=request_id, context=context, emit=emit)
        check_confirmation(plan, launch.confirm, dry_run=launch.dry_run,
                           confirmed_plan_body=self.store.plan_body(bound) if bound else None)
        if original is not None and original.get("confirmed") and not parse_confirm(launch.confirm)[0] \
                and not launch.dry_run:
            raise ConfirmationRequired(f"request {launch.replay_of} needed confirmation, so its replay does too",
                                       hint=f"Pass --confirm={plan.plan_hash[:12]} (or --confirm).")
        who = launch.who or getpass.getuser()
        recorded_params = redact(loaded.spec, values, salt=request_id)
        created = self.store.create_request(
            request_id=request_id, intent=plan.intent, run_id=run_id, params=recorded_params,
            context=plan.context, plan_hash=plan.plan_hash, intent_sha256=loaded.sha256,
            lock_key=plan.lock, dry_run=launch.dry_run, reason=launch.reason, who=who,
            replay_of=launch.replay_of or None)
        if owner is not None:
            self.store.set_owner(request_id, host=owner.host, pid=owner.pid, token=owner.token)
        if created:
            self._record_intent_file(loaded, request_id, run_id)
            self._event(ev.RequestStart(
                intent=plan.intent, version=plan.version, intent_sha256=loaded.sha256,
                params=recorded_params, context=plan.context, plan_hash=plan.plan_hash, who=who,
                reason=launch.reason, dry_run=launch.dry_run, confirmed=parse_confirm(launch.confirm)[0],
                lock=plan.lock, replay_of=launch.replay_of if original is not None else None,
                replay_mode=_replay_mode(original, recorded_params, launch.fresh_context,
                                         drifted=original.get("intent_sha256") != loaded.sha256)
                if original is not None else None), request_id, run_id)
        if plan.lock and not launch.dry_run:
            self._take_lock(plan.lock, request_id, run_id, wait_s=plan.lock_wait_s)
        emit(f"plan {plan.plan_hash[:12]} for {plan.intent}: {len(plan.steps)} steps"
             + (" (dry run)" if launch.dry_run else ""))
        return plan

    def shown_context(self, plan_hash: str) -> dict[str, str] | None:
        """The context captured for a plan shown earlier (by hash or unique prefix); None if not given.

        Context captures run once per request: a plan that was shown (and confirmed) is run with
        the values it was shown with, never captured again.
        """
        if not plan_hash:
            return None
        body = self.store.plan_body(plan_hash)
        if body is None:
            raise UsageError(f"no plan {plan_hash[:12]} in the store (or the prefix is ambiguous)",
                             hint="Show the plan again with `intent plan` or --dry-run and use its hash.")
        return dict(json.loads(body).get("context", {}))

    def _record_intent_file(self, loaded: LoadedIntent, request_id: str, run_id: str) -> None:
        """Keep the exact intent file, in the store and (first time only) in the audit chain."""
        if self.store.intent_file(loaded.sha256) is None:
            self.store.put_intent_file(loaded.sha256, loaded.spec.name, loaded.content)
            self._event(ev.IntentFile(intent=loaded.spec.name, intent_sha256=loaded.sha256,
                                      content=loaded.content), request_id, run_id)

    def _replayed(self, request_id: str) -> dict[str, Any]:
        """The request.start body of the request being replayed (refused if unknown)."""
        start = next((r for r in self.store.audit_records(request_id=request_id) if r.kind == "request.start"), None)
        if start is None:
            raise UsageError(f"request {request_id} has no request.start in the audit log",
                             hint="Check the id; only requests that started can be replayed.")
        return start.data()

    def _take_lock(self, key: str, request_id: str, run_id: str, *, wait_s: float) -> None:
        holder = self.store.lock_holder(key)
        if holder is not None and holder.request_id != request_id:
            # A holder whose process died on this host is ended now, so its lock is free at once.
            reap_dead_owners(self.store, self.home, seen_by=f"preflight of {request_id}")
        try:
            self.store.acquire_lock(key, request_id=request_id, run_id=run_id, ttl_s=LOCK_TTL_S,
                                    wait_s=wait_s)
        except IntentError as exc:
            holder = self.store.lock_holder(key)
            self._event(ev.LockBusyEvent(lock=key, error=exc.message,
                                         holder=holder.request_id if holder else None), request_id, run_id)
            self._end(request_id, run_id, Ending.of(exc, step="preflight"))
            raise
        self._event(ev.LockAcquire(lock=key), request_id, run_id)

    # --- steps ---------------------------------------------------------------------------------

    def _request(self, request_id: str) -> dict[str, Any]:
        row = self.store.request(request_id)
        if row is None:
            raise IntentError(f"request {request_id} has no preflight record",
                              hint="Re-execute the whole run; the preflight step must run first.")
        return row

    def spec_of(self, row: Mapping[str, Any]) -> IntentSpec:
        # The exact file the request started with, so a mid-request edit can't change what runs.
        content = self.store.intent_file(row["intent_sha256"])
        if content is None:
            raise IntentError(f"intent file {row['intent_sha256'][:12]} of request "
                              f"{row['request_id']} is missing from the store",
                              hint="Start a new request.")
        return parse_intent(content, f"<stored {row['intent']}>")

    def _namespace(self, spec: IntentSpec, row: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        given = {k: v for k, v in row["params"].items() if not spec.params[k].secret}
        values = resolve_params(spec, given)
        # A dry run produces no outputs: later steps show where their values would come from.
        outputs = None if row["dry_run"] else self.store.outputs(request_id)
        return namespace(params=values, context=row["context"], outputs=outputs,
                         app=self._app_view(spec, values),
                         request=request_view(request_id, dry_run=row["dry_run"], reason=row["reason"]),
                         step_ids=[s.id for s in spec.steps])

    def _resume_if_needed(self, row: dict[str, Any], run_id: str, owner: Owner | None = None) -> None:
        """A re-execution of a failed request continues it: re-open it and re-take its lock."""
        if owner is not None and (row["owner_pid"], row["owner_host"]) != (owner.pid, owner.host):
            self.store.set_owner(row["request_id"], host=owner.host, pid=owner.pid, token=owner.token)
        if row["status"] == RequestStatus.RUNNING.value:
            if row["run_id"] != run_id:
                self.store.update_request(row["request_id"], run_id=run_id)
            return
        if row["status"] in (RequestStatus.ROLLED_BACK.value, RequestStatus.ROLLBACK_FAILED.value):
            raise IntentError(
                f"request {row['request_id']} was rolled back; resuming would skip undone steps",
                hint="Start a new request (a new run of the intent) instead.")
        if row["status"] not in RESUMABLE:
            raise IntentError(f"request {row['request_id']} already ended {row['status']}",
                              hint="Start a new request.")
        if row["lock_key"] and not row["dry_run"]:
            self._take_lock(row["lock_key"], row["request_id"], run_id, wait_s=0)
        self.store.update_request(row["request_id"], status=RequestStatus.RUNNING, run_id=run_id,
                                  error="", exit_code=0)
        self.store.clear_cancel(row["request_id"])
        self._event(ev.RequestResume(previous_run_id=row["run_id"], previous_status=row["status"]),
                    row["request_id"], run_id)

    def run_step(self, request_id: str, step_id: str, *, run_id: str, attempt: int = 1,
                 owner: Owner | None = None) -> Outputs:
        """Run one step (attempt is 1-based). Raises RetryStep, or the final error after rollback.

        Any error on the way (a template that cannot render, an unknown app, a bug in an action)
        fails the request the same way a failing command does: nothing is left RUNNING.
        """
        row = self._request(request_id)
        self._resume_if_needed(row, run_id, owner)
        state = self.store.step_state(request_id, step_id)
        if state and state["status"] == StepStatus.SUCCEEDED.value:
            return dict(state["outputs"])  # already done in an earlier run of this request
        spec = self.spec_of(row)
        step = spec.step(step_id)
        emit = _print_line(step_id)
        self._set_phase(request_id, run_id, f"STEP {step_id}", attempt=attempt)
        started = time.monotonic()
        redact: Callable[[str], str] = str
        beat: _Heartbeat | None = None
        try:
            if self.store.cancel_request_of(request_id) is not None:
                raise StepStopped(f"{spec.name} was stopped before step {step_id} began",
                                  hint=f"See `intent explain {request_id}`.")
            ns = self._namespace(spec, row, request_id)
            ctx = self._action_context(request_id, step_id, emit, dry_run=row["dry_run"],
                                       timeout_s=self._step_timeout(spec, row, step.timeout),
                                       secrets=_secret_values(spec, ns))
            redact = ctx.redact
            if not self._step_enabled(step, ns):
                self.store.set_step(request_id, step_id, StepStatus.SKIPPED, run_id=run_id)
                self._event(ev.StepSkip(step=step_id, reason="when is false"), request_id, run_id)
                emit("skipped: `when` is false")
                return {}
            call = render_call(step, ns, where=f"steps.{step_id}")
            if step.gate == "manual" and not row["dry_run"]:
                self._pass_gate(row, step, run_id)
            if row["dry_run"]:
                gate = " after a manual approval" if step.gate == "manual" else ""
                emit(f"dry run: would{gate} {self.preview(call, ctx)}")
                self.store.set_step(request_id, step_id, StepStatus.SKIPPED, run_id=run_id)
                return {}
            self.store.set_step(request_id, step_id, StepStatus.RUNNING, run_id=run_id, attempt=attempt)
            self._event(ev.StepStart(step=step_id, attempt=attempt, action=redact(call.describe())),
                        request_id, run_id)
            beat = _Heartbeat(self.store, request_id, row["lock_key"], ctx, run_id=run_id)
            with beat:
                outputs = self.execute(call, ctx)
            self.store.clear_step_process(request_id)
        except IntentError as exc:
            error = exc
            if isinstance(exc, StepStopped) and beat is not None and beat.lost:
                error = LeaseLost(f"step {step_id} was stopped: the lease on lock {row['lock_key']} could not be "
                                  "renewed", hint="See `intent status` for who holds it now; resume when it is free.")
            self._step_failed(spec, row, step, run_id, attempt, error, started, redact)
            if error is exc:
                raise
            raise error from None
        except Exception as exc:  # a bug in an action must still end the request and free the lock
            error = StepFailed(f"internal error in step {step_id}: {type(exc).__name__}: {exc}",
                               hint="This is a bug; see the step log and report it.", internal=True)
            self._step_failed(spec, row, step, run_id, attempt, error, started, redact)
            raise error from exc
        except BaseException:
            # Dagster terminating the run (UI "Terminate", `intent stop`) interrupts the op; the
            # runner has already killed the command's process group, so end the request as stopped.
            self._stopped(spec, row, step, run_id, attempt,
                          StepStopped(f"step {step_id} was interrupted by run termination"), started)
            raise
        self.store.set_step(request_id, step_id, StepStatus.SUCCEEDED, run_id=run_id, attempt=attempt,
                            outputs=outputs)
        self._event(ev.StepComplete(step=step_id, attempt=attempt, outputs=sorted(outputs),
                                    duration_ms=int((time.monotonic() - started) * 1000)), request_id, run_id)
        return outputs

    def _step_enabled(self, step: StepSpec, ns: Mapping[str, Any]) -> bool:
        """`when` decides; a conditional gate can also be switched on with INTENT_ENABLE_<STEP_ID>."""
        if step.gate == "conditional" and os.environ.get(f"INTENT_ENABLE_{step.id.upper()}", "") not in ("", "0"):
            return True
        return step.when is None or evaluate(step.when, ns, where=f"steps.{step.id}.when")

    def _pass_gate(self, row: Mapping[str, Any], step: StepSpec, run_id: str) -> None:
        """Let an approved gate through; otherwise stop the request here until a person decides."""
        request_id = row["request_id"]
        decision = self.store.gate_decision(request_id, step.id)
        if decision is not None and decision["decision"] == "approved":
            self._event(ev.GatePassed(step=step.id, approved_by=decision["who"]), request_id, run_id)
            return
        if decision is not None:
            raise GateRejected(f"gate {step.id} was rejected by {decision['who']}: {decision['reason']}",
                               hint="Start a new request when the change is wanted again.")
        self._event(ev.GateApprovalRequired(step=step.id), request_id, run_id)
        waiting = ApprovalRequired(f"step {step.id} waits for approval",
                                   hint=f"Run `intent approve {request_id} --step {step.id} --reason ...`, "
                                        "then re-execute the run from failure (UI) or `intent resume`.")
        # Waiting for a person may take hours: the request ends (resumably) and frees its lock; the
        # re-execution takes the lock again.
        self._end(request_id, run_id, Ending.of(waiting, step=step.id))
        raise waiting

    def _step_failed(self, spec: IntentSpec, row: Mapping[str, Any], step: StepSpec, run_id: str, attempt: int,
                     error: IntentError, started: float, redact: Callable[[str], str]) -> None:
        """Retry a retryable failure (raises RetryStep); otherwise record it, roll back, end the request."""
        request_id = row["request_id"]
        if isinstance(error, ApprovalRequired):
            return  # not a failure: the request waits in NEEDS_APPROVAL
        if isinstance(error, StepStopped):
            self._stopped(spec, row, step, run_id, attempt, error, started)
            return
        transient = isinstance(error, StepFailed) and error.transient
        failure = FailureClass.TRANSIENT if transient else FailureClass.DETERMINISTIC
        retryable = isinstance(error, StepFailed) and should_retry(step.retry.on, failure) \
            and not _is_timeout_without_retry(error, step)
        if retryable and attempt < step.retry.attempts:
            assert isinstance(error, StepFailed)
            wait_s = step.retry.backoff_policy().wait_before(attempt)
            if row["lock_key"]:
                # Keep the lease through the backoff wait, when no op is running to renew it.
                self.store.renew_lock(row["lock_key"], request_id=request_id, ttl_s=LOCK_TTL_S + wait_s)
            self._event(ev.StepRetry(step=step.id, attempt=attempt, error=redact(error.message),
                                     failure_class=failure.value, wait_ms=int(wait_s * 1000)), request_id, run_id)
            _print_line(step.id)(f"attempt {attempt}/{step.retry.attempts} failed ({failure.value}); "
                                 f"retrying in {wait_s:.1f}s")
            raise RetryStep(error, wait_s, step.retry.attempts) from None
        detail = error.detail if isinstance(error, StepFailed) else None
        self.store.set_step(request_id, step.id, StepStatus.FAILED, run_id=run_id, attempt=attempt)
        self._event(ev.StepFail(
            step=step.id, attempt=attempt, error=redact(error.message), failure_class=failure.value,
            error_class=type(error).__name__, exit_code=detail.exit_code if detail else None,
            duration_ms=int((time.monotonic() - started) * 1000)), request_id, run_id)
        undone = self._rollback(spec, request_id, run_id)
        own = error.ending()[0]
        if own is RequestStatus.REFUSED:
            own = RequestStatus.FAILED  # past preflight, earlier steps may have run: a failure, not a refusal
        # Undone steps make the status ROLLED_BACK (or ROLLBACK_FAILED) whatever the cause; the reason keeps it.
        status = undone if undone is not RequestStatus.FAILED else own
        self._end(request_id, run_id, Ending.of(error, step=step.id, status=status, redact=redact))

    def _stopped(self, spec: IntentSpec, row: Mapping[str, Any], step: StepSpec, run_id: str, attempt: int,
                 error: StepStopped, started: float) -> None:
        """An operator or the watchdog stopped the step: no retry and no rollback (they decide next)."""
        request_id = row["request_id"]
        cancel = self.store.cancel_request_of(request_id)
        status = cancel[1] if cancel else error.status
        self.store.set_step(request_id, step.id, StepStatus.FAILED, run_id=run_id, attempt=attempt)
        self._event(ev.StepFail(
            step=step.id, attempt=attempt, error=error.message, failure_class="stopped",
            error_class=type(error).__name__, exit_code=error.detail.exit_code,
            duration_ms=int((time.monotonic() - started) * 1000)), request_id, run_id)
        requested_at = self._request(request_id)["cancel_requested_at"]
        if cancel is not None:  # a stop someone asked for (a lost lease was nobody's request)
            self._event(ev.RunCancelled(
                step=step.id, status=status.value,
                latency_ms=int((time.time() - requested_at) * 1000) if requested_at else 0), request_id, run_id)
        ending = Ending.of(error, step=step.id, status=status)
        if status is RequestStatus.WATCHDOG_STUCK:
            ending = dataclasses.replace(ending, reason=Reason.STUCK)
        self._end(request_id, run_id, ending)

    def _step_timeout(self, spec: IntentSpec, row: Mapping[str, Any], step_timeout: float | None) -> float | None:
        """The step's timeout, capped by what is left of the request's `policy.timeout`."""
        if spec.policy.timeout is None:
            return step_timeout
        left = spec.policy.timeout - (time.time() - float(row["started_at"]))
        if left <= 0:
            raise StepTimeout(f"{spec.name} ran past its policy timeout of {spec.policy.timeout:g}s",
                              hint="Raise policy.timeout or find out what is slow.")
        return left if step_timeout is None else min(step_timeout, left)

    def preview(self, call: RenderedCall, ctx: ActionContext) -> str:
        """What a call would do, without doing it (actions may read state to say more)."""
        if call.kind == "uses":
            assert call.action is not None
            action = registry()[call.action]
            return action.preview(ctx, action.input_model.model_validate(call.inputs))
        return f"run: {call.describe()}"

    def execute(self, call: RenderedCall, ctx: ActionContext) -> Outputs:
        """Run a rendered call: an action, or a command whose outputs come from $INTENT_OUTPUT."""
        if call.kind == "uses":
            assert call.action is not None
            action = registry()[call.action]
            try:
                inputs = action.input_model.model_validate(call.inputs)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise StepFailed(f"{call.action}: input {where}: {first['msg']}",
                                 hint="Fix the step's `with:` value or the param it comes from.") from None
            return action.run(ctx, inputs)
        output_file = ctx.log_path.with_suffix(".outputs")
        output_file.unlink(missing_ok=True)
        run_command(ctx, call.argv, cwd=Path(call.cwd) if call.cwd else None,
                    env={**call.env, OUTPUT_FILE_ENV: str(output_file)}, timeout_s=ctx.timeout_s)
        return _read_outputs(output_file)

    # --- failure, rollback and completion --------------------------------------------------------

    def _rollback(self, spec: IntentSpec, request_id: str, run_id: str) -> RequestStatus:
        done = [s for s in self.store.steps(request_id) if s["status"] == StepStatus.SUCCEEDED.value]
        undo = [s for s in reversed(done) if spec.step(s["step_id"]).rollback is not None]
        if not undo:
            return RequestStatus.FAILED
        row = self._request(request_id)
        self._set_phase(request_id, run_id, "ROLLBACK")
        ns = self._namespace(spec, row, request_id)
        with _Heartbeat(self.store, request_id, row["lock_key"]):
            return self._undo(spec, undo, ns, request_id, run_id)

    def _undo(self, spec: IntentSpec, undo: list[dict[str, Any]], ns: Mapping[str, Any], request_id: str,
              run_id: str) -> RequestStatus:
        status = RequestStatus.ROLLED_BACK
        for state in undo:
            step = spec.step(state["step_id"])
            assert step.rollback is not None
            ctx = self._action_context(request_id, f"{step.id}.rollback", _print_line(f"{step.id}.rollback"),
                                       timeout_s=step.rollback.timeout, secrets=_secret_values(spec, ns))
            self._event(ev.RollbackStart(step=step.id), request_id, run_id)
            try:
                self.execute(render_call(step.rollback, ns, where=f"steps.{step.id}.rollback"), ctx)
            except Exception as exc:  # any failure here, even a bug, must not stop the other rollbacks
                status = RequestStatus.ROLLBACK_FAILED
                message = exc.message if isinstance(exc, IntentError) else f"{type(exc).__name__}: {exc}"
                self.store.set_step(request_id, step.id, StepStatus.ROLLBACK_FAILED, run_id=run_id)
                self._event(ev.RollbackFail(step=step.id, error=ctx.redact(message)), request_id, run_id)
                continue
            self.store.set_step(request_id, step.id, StepStatus.ROLLED_BACK, run_id=run_id)
            self._event(ev.RollbackComplete(step=step.id), request_id, run_id)
        return status

    def finish(self, request_id: str, *, run_id: str, owner: Owner | None = None) -> RequestStatus:
        """Run verify checks, then end the request; a failed check rolls back and raises."""
        row = self._request(request_id)
        self._resume_if_needed(row, run_id, owner)
        if row["dry_run"]:
            self._end(request_id, run_id, Ending(RequestStatus.DRY_RUN))
            return RequestStatus.DRY_RUN
        spec = self.spec_of(row)
        ns = self._namespace(spec, row, request_id)
        self._set_phase(request_id, run_id, "VERIFY")
        for check in spec.verify:
            ctx = self._action_context(request_id, f"verify.{check.id}", _print_line(f"verify.{check.id}"),
                                       timeout_s=check.timeout, secrets=_secret_values(spec, ns))
            try:
                with _Heartbeat(self.store, request_id, row["lock_key"], ctx):
                    self.execute(render_call(check, ns, where=f"verify.{check.id}"), ctx)
            except Exception as exc:  # a failing check, or a bug in it, fails the request the same way
                if not isinstance(exc, IntentError):
                    exc = StepFailed(f"internal error in check {check.id}: {type(exc).__name__}: {exc}",
                                     internal=True)
                self._event(ev.VerifyFail(check=check.id, error=ctx.redact(exc.message)), request_id, run_id)
                status = self._rollback(spec, request_id, run_id)
                message = f"verify check {check.id!r} failed: {exc.message}"
                outcome: IntentError = VerifyFailed(message, hint="See the step logs.")
                if status is RequestStatus.ROLLED_BACK:
                    outcome = RolledBack(f"{message}; rolled back", hint="See the step logs.")
                elif status is RequestStatus.ROLLBACK_FAILED:
                    outcome = RollbackFailed(f"{message}; rollback failed too",
                                             hint="Inspect the app now; see the step logs.")
                cause = exc if isinstance(exc, StepFailed) and exc.internal else \
                    VerifyFailed(ctx.redact(exc.message))
                self._end(request_id, run_id, Ending.of(outcome, step=f"verify.{check.id}", status=status,
                                                        cause=cause, redact=ctx.redact))
                raise outcome from None
            self._event(ev.VerifyPass(check=check.id), request_id, run_id)
        self._end(request_id, run_id, Ending(RequestStatus.SUCCEEDED))
        return RequestStatus.SUCCEEDED

    def _end(self, request_id: str, run_id: str, ending: Ending) -> None:
        end_request(self.store, self.home, request_id, run_id=run_id, ending=ending)

    def abort_preflight(self, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
                        run_id: str, error: IntentError) -> None:
        """Record a request refused or failed in preflight, so every attempt is on the record.

        Params are not recorded: they did not validate, and an unknown key might hold a secret.
        """
        if self.store.request(request_id) is None:
            who = launch.who or getpass.getuser()
            self.store.create_request(
                request_id=request_id, intent=loaded.spec.name, run_id=run_id, params={}, context={},
                plan_hash="", intent_sha256=loaded.sha256, lock_key=None, dry_run=launch.dry_run,
                reason=launch.reason, who=who)
            self._event(ev.RequestRefused(
                intent=loaded.spec.name, intent_sha256=loaded.sha256, who=who, reason=launch.reason,
                dry_run=launch.dry_run, error=error.one_line(), error_class=type(error).__name__),
                request_id, run_id)
        self._end(request_id, run_id, Ending.of(error, step="preflight"))

    # --- helpers -------------------------------------------------------------------------------

    def _set_phase(self, request_id: str, run_id: str, phase: str, *, attempt: int | None = None) -> None:
        """Record the phase (also a heartbeat) in the store and the audit chain."""
        self.store.update_request(request_id, phase=phase, attempt=attempt)
        self._event(ev.PhaseChange(phase=phase, attempt=attempt), request_id, run_id)

    def _event(self, event: ev.Event, request_id: str, run_id: str) -> None:
        self.store.append_event(event, request_id=request_id, run_id=run_id)

    def _action_context(self, request_id: str, step_id: str, emit: Callable[[str], None] | None,
                        *, dry_run: bool = False, timeout_s: float | None = None,
                        secrets: tuple[str, ...] = ()) -> ActionContext:
        def record_process(pgid: int) -> None:
            self.store.heartbeat(request_id, pgid=pgid)

        return ActionContext(request_id=request_id, step_id=step_id, home=self.home,
                             log_path=self.home.step_log(request_id, step_id), dry_run=dry_run,
                             timeout_s=timeout_s, emit=emit or (lambda line: None), secrets=secrets,
                             on_process=record_process)


def _replay_mode(original: Mapping[str, Any], params: Mapping[str, Any], fresh_context: bool, *,
                 drifted: bool = False) -> str:
    """exact, or what differs from the original joined with '+': fresh_context, overrides, drift."""
    def visible(values: Mapping[str, Any]) -> dict[str, Any]:
        # Secrets are salted per request, so they never compare equal; they are not overrides.
        return {k: v for k, v in values.items() if not (isinstance(v, str) and v.startswith(REDACTED))}

    changed = visible(original.get("params", {})) != visible(params)
    modes = [m for m, on in (("fresh_context", fresh_context), ("overrides", changed), ("drift", drifted)) if on]
    return "+".join(modes) or "exact"


def _secret_values(spec: IntentSpec, ns: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the intent's secret params, to mask wherever text leaves the step."""
    return tuple(str(ns["params"][name]) for name, p in spec.params.items()
                 if p.secret and ns["params"].get(name) not in (None, ""))


def _is_timeout_without_retry(error: StepFailed, step: StepSpec) -> bool:
    # A timeout is retried only when the step opts into retrying any failure.
    return isinstance(error, StepTimeout) and step.retry.on is not RetryOn.ANY


def _read_outputs(path: Path) -> Outputs:
    """Parse ``key=value`` lines a command wrote to $INTENT_OUTPUT."""
    if not path.exists():
        return {}
    outputs: Outputs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            outputs[key.strip()] = value
    return outputs

