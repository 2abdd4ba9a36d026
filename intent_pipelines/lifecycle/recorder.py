"""What every phase shares: the request's records in the store and the chain, and what a step is given."""

from collections.abc import Callable, Mapping
from typing import Any

from intent_pipelines import secrets
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.finish import Ending, end_request
from intent_pipelines.plan import namespace, request_view
from intent_pipelines.spec.loader import parse_intent
from intent_pipelines.spec.models import IntentSpec, SandboxSpec
from intent_pipelines.spec.params import resolve_params
from intent_pipelines.store import StateStore


def print_line(prefix: str) -> Callable[[str], None]:
    """An emitter that prints ``[prefix] line``: what the step log viewer in Dagster shows."""
    def emit(line: str) -> None:
        print(secrets.mask(f"[{prefix}] {line}"), flush=True)

    return emit


def secret_values(spec: IntentSpec, ns: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the intent's secret params, to mask wherever text leaves the step."""
    return tuple(str(ns["params"][name]) for name, p in spec.params.items()
                 if p.secret and ns["params"].get(name) not in (None, ""))


class Recorder:
    """One INTENT_HOME and state store: records state changes and builds the namespace of a request."""

    def __init__(self, home: IntentHome, store: StateStore) -> None:
        self.home, self.store = home, store

    def event(self, event: ev.Event, request_id: str, run_id: str) -> None:
        self.store.append_event(event, request_id=request_id, run_id=run_id)

    def set_phase(self, request_id: str, run_id: str, phase: str, *, attempt: int | None = None) -> None:
        """Record the phase (also a heartbeat) in the store and the audit chain."""
        self.store.update_request(request_id, phase=phase, attempt=attempt)
        self.event(ev.PhaseChange(phase=phase, attempt=attempt), request_id, run_id)

    def end(self, request_id: str, run_id: str, ending: Ending) -> None:
        end_request(self.store, self.home, request_id, run_id=run_id, ending=ending)

    def request(self, request_id: str) -> dict[str, Any]:
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

    def app_view(self, spec: IntentSpec, params: Mapping[str, Any]) -> dict[str, Any] | None:
        if "app" not in spec.params or not params.get("app"):
            return None
        fleet_file = self.home.fleet_file
        app = load_fleet(fleet_file).app(str(params["app"]))
        view = app.model_dump()
        if app.source:
            view["source"] = str(app.source_path(fleet_file))
        return view

    def namespace(self, spec: IntentSpec, row: Mapping[str, Any]) -> dict[str, Any]:
        """What a running request's templates see: params, context, app, request and step outputs."""
        given = {k: v for k, v in row["params"].items() if not spec.params[k].secret}
        values = resolve_params(spec, given)
        # A dry run produces no outputs: later steps show where their values would come from.
        outputs = None if row["dry_run"] else self.store.outputs(row["request_id"])
        return namespace(params=values, context=row["context"], outputs=outputs,
                         app=self.app_view(spec, values),
                         request=request_view(row["request_id"], dry_run=row["dry_run"], reason=row["reason"]),
                         step_ids=[s.id for s in spec.steps])

    def action_context(self, request_id: str, step_id: str, emit: Callable[[str], None] | None,
                       *, dry_run: bool = False, timeout_s: float | None = None,
                       secrets: tuple[str, ...] = (), inherit: tuple[str, ...] = (),
                       sandbox: SandboxSpec | None = None) -> ActionContext:
        def record_process(pgid: int) -> None:
            self.store.heartbeat(request_id, pgid=pgid)

        return ActionContext(request_id=request_id, step_id=step_id, home=self.home,
                             log_path=self.home.step_log(request_id, step_id), dry_run=dry_run,
                             timeout_s=timeout_s, emit=emit or (lambda line: None), secrets=secrets,
                             inherit=inherit, sandbox=sandbox, on_process=record_process)
