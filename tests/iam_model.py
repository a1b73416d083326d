"""A small model of IAM's policy evaluation, written from AWS's documentation, for tests that cannot reach AWS.

What it follows (IAM user guide):
- "Policy evaluation logic" and "How AWS enforcement code logic evaluates requests to allow or deny access"
  (reference_policies_evaluation-logic_policy-eval-denyallow.html): every request is denied unless allowed; an explicit
  Deny in any applicable policy beats every Allow.
- "Policy evaluation for requests within a single account" (reference_policies_evaluation-logic_policy-eval-basics.html):
  within one account an Allow in *either* the identity-based or the resource-based policy allows. A resource-based
  policy that names the account (``arn:...:root``) delegates to the account's identity policies: it allows nothing by
  itself (IAM user guide, "AWS JSON policy elements: Principal", AWS account principals). A permissions boundary limits
  what identity policies grant: the action must be allowed by both ("Permissions boundaries for IAM entities"); this
  model also lets it limit a resource policy's grant to a role ARN, the stricter reading.
- "IAM JSON policy elements: Condition operators": a condition whose key is missing from the request is false, except
  for the negated operators (StringNotEquals, StringNotLike, ArnNotEquals, ArnNotLike, NotIpAddress), which are true;
  ``...IfExists`` is true when the key is missing; ``Null: true`` holds when the key is missing.

Values may hold CloudFormation's Fn::Sub / Fn::GetAtt / Ref: ``resolve`` fills them from a table, so a policy is
evaluated as the rendered template states it.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

ALLOW, DENY, IMPLICIT = "Allow", "Deny", "ImplicitDeny"
NEGATED = {"StringNotEquals", "StringNotLike", "ArnNotEquals", "ArnNotLike", "NotIpAddress", "StringNotEqualsIgnoreCase"}


def resolve(value, names: dict[str, str]):
    """Fill Fn::Sub / Fn::GetAtt / Ref from ``names`` (``AWS::AccountId``, ``SyncRole.Arn``, ``FileSystem``...)."""
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: names.get(m.group(1), m.group(1)), value["Fn::Sub"])
        if set(value) == {"Fn::GetAtt"}:
            logical, attr = value["Fn::GetAtt"]
            return names.get(f"{logical}.{attr}", f"{logical}.{attr}")  # one no policy here names stays a placeholder
        if set(value) == {"Ref"}:
            return names.get(value["Ref"], value["Ref"])
        return {k: resolve(v, names) for k, v in value.items()}
    return value


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, case: bool = True) -> bool:
    """IAM's wildcards: * any run of characters, ? one character (case-sensitive unless told)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, 0 if case else re.IGNORECASE) is not None


def action_matches(patterns, action: str) -> bool:
    return any(_like(p, action, case=False) for p in _list(patterns))  # action names are not case-sensitive


def resource_matches(patterns, arn: str) -> bool:
    return any(_like(p, arn) for p in _list(patterns))


def _test(op: str, want, have) -> bool:
    base = op.removesuffix("IfExists")
    if base in ("StringEquals", "ArnEquals"):
        return have in _list(want)
    if base in ("StringNotEquals", "ArnNotEquals"):
        return have not in _list(want)
    if base in ("StringLike", "ArnLike"):
        return any(_like(w, have) for w in _list(want))
    if base in ("StringNotLike", "ArnNotLike"):
        return not any(_like(w, have) for w in _list(want))
    if base == "Bool":
        return str(have).lower() in [str(w).lower() for w in _list(want)]
    if base in ("IpAddress", "NotIpAddress"):
        inside = any(ipaddress.ip_address(have) in ipaddress.ip_network(w) for w in _list(want))
        return inside if base == "IpAddress" else not inside
    raise ValueError(f"condition operator {op} is not modelled")


def condition_holds(condition: dict | None, context: dict) -> bool:
    for op, tests in (condition or {}).items():
        for key, want in tests.items():
            if op == "Null":
                if (key not in context) != (str(want).lower() == "true"):
                    return False
                continue
            if key not in context:
                if op.endswith("IfExists") or op.removesuffix("IfExists") in NEGATED:
                    continue
                return False
            if not _test(op, want, context[key]):
                return False
    return True


@dataclass(frozen=True)
class Request:
    principal: str  # the caller's role ARN (or a service principal such as "datasync.amazonaws.com")
    action: str
    resource: str = "*"
    context: dict = field(default_factory=dict)


def _principal_named(statement: dict, principal: str, account: str) -> str | None:
    """'direct' when the statement names the caller (its ARN, "*", or its service); 'account' when it names the
    caller's account root (a delegation to identity policies); None otherwise."""
    named = statement.get("Principal")
    if named == "*":
        return "direct"
    values = [v for kind in ("AWS", "Service") for v in _list((named or {}).get(kind, []))]
    if "*" in values or principal in values:
        return "direct"
    if any(v in (account, f"arn:aws:iam::{account}:root") for v in values):
        return "account"
    return None


def _applies(statement: dict, req: Request) -> bool:
    if "Action" in statement and not action_matches(statement["Action"], req.action):
        return False
    if "NotAction" in statement and action_matches(statement["NotAction"], req.action):
        return False
    if "Resource" in statement and not resource_matches(statement["Resource"], req.resource):
        return False
    return condition_holds(statement.get("Condition"), req.context)


def _statements(policy) -> list[dict]:
    if policy is None:
        return []
    if isinstance(policy, dict) and "Statement" in policy:
        return _list(policy["Statement"])
    return [st for doc in _list(policy) for st in _statements(doc)] if isinstance(policy, list) else [policy]


def decide(req: Request, *, identity=None, resource_policy=None, boundary=None, account: str = "111122223333") -> str:
    """ALLOW, DENY (an explicit deny) or IMPLICIT for one request within one account.

    ``identity``: the caller's identity policies (documents or statements); ``resource_policy``: the resource's policy
    (statements carry Principal); ``boundary``: the caller's permissions boundary, None for none."""
    mine = [st for st in _statements(identity) if _applies(st, req)]
    theirs = [(st, _principal_named(st, req.principal, account)) for st in _statements(resource_policy)]
    theirs = [(st, how) for st, how in theirs if how and _applies(st, req)]
    bound = [st for st in _statements(boundary) if _applies(st, req)]
    if any(st["Effect"] == "Deny" for st in mine) or any(st["Effect"] == "Deny" for st, _ in theirs) \
            or any(st["Effect"] == "Deny" for st in bound):
        return DENY
    within_boundary = boundary is None or any(st["Effect"] == "Allow" for st in bound)
    if any(st["Effect"] == "Allow" and how == "direct" for st, how in theirs) and within_boundary:
        return ALLOW
    if any(st["Effect"] == "Allow" for st in mine) and within_boundary:
        return ALLOW  # an account-root grant in the resource policy adds nothing beyond this
    return IMPLICIT
