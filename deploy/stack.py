"""CloudFormation through change sets: read the stack, plan a change set, execute it.

``describe`` and ``plan`` only read or prepare: a change set changes nothing
until it is executed, and ``discard`` removes it (and the empty placeholder
stack a CREATE change set leaves behind). ``execute`` streams the stack's
events until a terminal state and turns a failure into the reasons AWS gave.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline import aws
from pipeline.errors import DeployError

# CloudFormation's TemplateBody limit; larger templates would need an S3 URL
TEMPLATE_BODY_LIMIT = 51_200
CAPABILITIES = ["CAPABILITY_IAM"]
SUCCESS = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE", "DELETE_COMPLETE"}
# states a change set cannot start from, with what to do
BLOCKED = {
    "ROLLBACK_COMPLETE": ("its first creation failed and was rolled back; such a stack cannot be updated", "delete it with `invoke teardown`, then deploy again"),
    "ROLLBACK_FAILED": ("its first creation failed and so did the rollback", "delete it with `invoke teardown` (or in the console), then deploy again"),
    "CREATE_FAILED": ("its creation failed", "delete it with `invoke teardown`, then deploy again"),
    "DELETE_FAILED": ("a deletion failed", "run `invoke teardown` again, or remove the resources the stack events name"),
    "UPDATE_ROLLBACK_FAILED": ("an update failed and so did its rollback",
                               "aws cloudformation continue-update-rollback --stack-name <stack> (skip the resources the events name), then deploy again"),
}
NO_CHANGES = ("didn't contain changes", "No updates are to be performed", "The submitted information didn't contain changes")


@dataclass(frozen=True)
class StackState:
    name: str
    status: str | None  # None: no such stack
    outputs: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def exists(self) -> bool:
        return self.status is not None and self.status != "REVIEW_IN_PROGRESS"


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    resource_type: str
    replacement: str  # True | False | Conditional | "" (adds and removes)
    details: tuple[str, ...] = ()  # the properties that change


@dataclass(frozen=True)
class ChangeSetPlan:
    stack: str
    change_set_type: str  # CREATE | UPDATE
    change_set_id: str | None  # None: nothing to change
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes


DEFAULT_FIX = "read AWS's message and the stack events in the console"


def _call(cfn, op: str, **params):
    return aws.call(cfn, op, error=DeployError, context="cloudformation", default_fix=DEFAULT_FIX, **params)


def _paginate(cfn, op: str, starting_token: dict[str, str] | None = None, **params):
    return aws.paginate(cfn, op, error=DeployError, context="cloudformation", default_fix=DEFAULT_FIX, starting_token=starting_token, **params)


def describe(cfn, name: str) -> StackState:
    found = aws.call(cfn, "describe_stacks", error=DeployError, context="cloudformation", absent=("ValidationError:does not exist",), StackName=name)
    if found is None:
        return StackState(name=name, status=None)
    s = found["Stacks"][0]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in s.get("Outputs", [])}
    return StackState(name=name, status=s["StackStatus"], outputs=outputs, reason=s.get("StackStatusReason", ""))


def change_set_type(state: StackState) -> str:
    """CREATE for a new stack (or the placeholder a CREATE change set left), UPDATE for a live one."""
    if state.status in (None, "REVIEW_IN_PROGRESS"):
        return "CREATE"
    if state.status in BLOCKED:
        what, fix = BLOCKED[state.status]
        raise DeployError(f"stack {state.name} is {state.status}: {what}" + (f" ({state.reason})" if state.reason else ""), where=f"stack {state.name}", fix=fix)
    if state.status.endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {state.name} is {state.status}: another operation is running", where=f"stack {state.name}", fix="wait for it to finish (the console shows its events), then deploy again")
    return "UPDATE"


def plan(cfn, state: StackState, template_body: str, *, description: str = "hoist deploy", poll_s: float = 2.0, timeout_s: float = 600,
         role_arn: str | None = None) -> ChangeSetPlan:
    """Create a change set for ``template_body`` and read what it would do. ``role_arn``: the service role
    CloudFormation acts as for this stack (RoleARN; CloudFormation uses it for this and later operations), so the
    caller needs no rights on the resources themselves (deploy/iam.py)."""
    if len(template_body.encode()) > TEMPLATE_BODY_LIMIT:
        raise DeployError(f"the template is {len(template_body.encode()):,} bytes, over CloudFormation's {TEMPLATE_BODY_LIMIT:,} for a TemplateBody",
                          where=f"stack {state.name}", fix="fewer subnets, or upload the template to S3 (not supported yet)")
    kind = change_set_type(state)
    name = f"hoist-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    created = _call(cfn, "create_change_set", StackName=state.name, ChangeSetName=name, ChangeSetType=kind, TemplateBody=template_body,
                    Capabilities=CAPABILITIES, Description=(description or "hoist deploy")[:1024], Tags=[{"Key": "hoist:stack", "Value": state.name}],
                    **({"RoleARN": role_arn} if role_arn else {}))
    cs_id = created["Id"]
    deadline = time.monotonic() + timeout_s
    while True:
        desc = _call(cfn, "describe_change_set", ChangeSetName=cs_id, StackName=state.name)
        if desc["Status"] == "CREATE_COMPLETE":
            break
        if desc["Status"] == "FAILED":
            reason = desc.get("StatusReason", "")
            if any(text in reason for text in NO_CHANGES):
                _call(cfn, "delete_change_set", ChangeSetName=cs_id, StackName=state.name)
                return ChangeSetPlan(stack=state.name, change_set_type=kind, change_set_id=None, changes=())
            raise DeployError(f"CloudFormation rejected the change set: {reason}", where=f"stack {state.name}, change set {name}", fix="fix what the reason names in pipeline.toml [deploy]")
        if time.monotonic() > deadline:
            raise DeployError(f"the change set is still {desc['Status']} after {timeout_s:.0f} s", where=f"stack {state.name}", fix="look at it in the console; run again")
        time.sleep(poll_s)
    changes = _changes(desc)
    if desc.get("NextToken"):  # the pages after the one the wait read, through boto3's paginator
        rest = _paginate(cfn, "describe_change_set", starting_token={"NextToken": desc["NextToken"]}, ChangeSetName=cs_id, StackName=state.name)
        changes += [c for page in rest for c in _changes(page)]
    return ChangeSetPlan(stack=state.name, change_set_type=kind, change_set_id=cs_id, changes=tuple(changes))


def _changes(desc: dict) -> list[Change]:
    out = []
    for c in desc.get("Changes", []):
        rc = c.get("ResourceChange", {})
        details = tuple(sorted({d["Target"].get("Name", d["Target"].get("Attribute", "")) for d in rc.get("Details", []) if "Target" in d} - {""}))
        out.append(Change(action=rc.get("Action", ""), logical_id=rc.get("LogicalResourceId", ""), resource_type=rc.get("ResourceType", ""),
                          replacement=rc.get("Replacement", ""), details=details))
    return out


def mount_target_conflicts(cs: ChangeSetPlan, live_zones: set[str], zone_of) -> list[str]:
    """What in the change set would make CloudFormation create a second mount target in a zone: EFS allows one per
    zone, and CloudFormation creates a replacement (or an added resource) before it deletes the old one
    ("Update requires: Replacement" on AWS::EFS::MountTarget's SubnetId, IpAddress and FileSystemId; CloudFormation
    User Guide, "Update behaviors of stack resources"). ``zone_of(logical id)``: the zone a mount target is for."""
    problems = []
    for c in cs.changes:
        if c.resource_type != "AWS::EFS::MountTarget":
            continue
        if c.action == "Modify" and c.replacement in ("True", "Conditional"):
            problems.append(f"{c.logical_id} would be replaced ({', '.join(c.details) or 'a property that requires replacement'})")
        elif c.action == "Add" and zone_of(c.logical_id) in live_zones:
            problems.append(f"{c.logical_id} would be added in {zone_of(c.logical_id)}, whose mount target still exists")
    return problems


def discard(cfn, cs: ChangeSetPlan) -> None:
    """Delete the change set; a CREATE change set also leaves an empty stack in REVIEW_IN_PROGRESS, deleted too."""
    if cs.change_set_id:
        _call(cfn, "delete_change_set", ChangeSetName=cs.change_set_id, StackName=cs.stack)
    if cs.change_set_type == "CREATE" and describe(cfn, cs.stack).status == "REVIEW_IN_PROGRESS":
        _call(cfn, "delete_stack", StackName=cs.stack)


def _wait(cfn, name: str, since_event: str | None, on_event, poll_s: float, timeout_s: float, gone_ok: bool = False) -> StackState:
    """Stream events newer than ``since_event`` until the stack reaches a terminal state."""
    seen = since_event
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            events = _new_events(cfn, name, seen)
        except DeployError:
            if gone_ok and describe(cfn, name).status is None:  # deleted between two polls
                return StackState(name=name, status=None)
            raise
        if events:
            seen = events[0]["EventId"]
        for ev in reversed(events):  # oldest first
            status, reason = ev.get("ResourceStatus", ""), ev.get("ResourceStatusReason", "")
            if status.endswith("_FAILED") and reason and "cancelled" not in reason.lower():
                failures.append(f"{ev.get('LogicalResourceId')} ({ev.get('ResourceType')}): {reason}")
            if on_event:
                on_event(ev)
        state = describe(cfn, name)
        if state.status is None and gone_ok:
            return state
        if state.status and not state.status.endswith("_IN_PROGRESS"):
            if state.status in SUCCESS:
                return state
            raise DeployError(f"stack {name} ended {state.status}" + (":\n  " + "\n  ".join(failures) if failures else f" ({state.reason})"),
                              where=f"stack {name}", fix="fix the first failure above; an update that rolled back left the previous version live")
        if time.monotonic() > deadline:
            raise DeployError(f"stack {name} is still {state.status} after {timeout_s:.0f} s", where=f"stack {name}", fix="it goes on in AWS: watch it in the console")
        time.sleep(poll_s)


def _new_events(cfn, name: str, seen: str | None) -> list[dict]:
    """Events newer than ``seen``, newest first (the order AWS returns them)."""
    events: list[dict] = []
    for page in _event_pages(cfn, name):
        for ev in page:
            if ev["EventId"] == seen:
                return events
            events.append(ev)
    return events


def _event_pages(cfn, name: str):
    for page in _paginate(cfn, "describe_stack_events", StackName=name):
        yield page.get("StackEvents", [])


def _latest_event(cfn, name: str) -> str | None:
    for page in _event_pages(cfn, name):
        return page[0]["EventId"] if page else None
    return None


def execute(cfn, cs: ChangeSetPlan, *, on_event=None, poll_s: float = 5.0, timeout_s: float = 3600) -> StackState:
    """Execute the change set and wait; the stack's outputs when it converged."""
    if cs.change_set_id is None:
        return describe(cfn, cs.stack)
    since = _latest_event(cfn, cs.stack)
    _call(cfn, "execute_change_set", ChangeSetName=cs.change_set_id, StackName=cs.stack)
    return _wait(cfn, cs.stack, since, on_event, poll_s, timeout_s)


def resources(cfn, name: str) -> list[dict]:
    return list(aws.pages(cfn, "list_stack_resources", "StackResourceSummaries", error=DeployError, context="cloudformation", default_fix=DEFAULT_FIX, StackName=name))


def delete(cfn, name: str, *, on_event=None, poll_s: float = 5.0, timeout_s: float = 3600) -> StackState:
    since = _latest_event(cfn, name)
    _call(cfn, "delete_stack", StackName=name)
    return _wait(cfn, name, since, on_event, poll_s, timeout_s, gone_ok=True)
