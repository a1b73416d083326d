"""The reference pages of the documentation site, generated from what they describe and committed in docs/reference/
(readable in a clone and on GitHub, not only on the built site); `python3 -m docsite.reference` writes them again, and
a test fails while a committed page differs from what this module generates, so they cannot drift:

- ``pipeline_toml()``: every table and key of pipeline.toml, from the pydantic models of pipeline/config.py (type,
  default, limits, the allowed values, description and example; a key's comment in the source when it has no
  description);
- ``task_reference()``: invoke's own help of every task of tasks.py's namespace (``invoke --help <task>``);
- ``permissions()``: each role and policy of deploy/policies/bootstrap.json (rendered by deploy/iam.py), its
  statements as tables.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
import invoke
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import tasks
from pipeline import config

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- pipeline.toml

# what a validator, not the type, allows: said from the same data the validator reads
ALLOWED: dict[tuple[type, str], Callable[[], str]] = {
    (config.TargetSpec, "runtime"): lambda: ", ".join(f"`{r}`" for r in config.facts()["runtimes"]),
    (config.TargetSpec, "arch"): lambda: ", ".join(f"`{a}`" for a in config.facts()["architectures"]),
    (config.DeployConfig, "log_retention_days"): lambda: ", ".join(map(str, config.LOG_RETENTION_DAYS)),
    (config.DeployConfig, "region"): lambda: f"an AWS region botocore knows ({len(config.aws_regions())}); for `package = \"efs\"` not where Lambda "
    "cannot mount EFS: " + ", ".join(f"`{r}`" for r in config.NO_EFS_FOR_LAMBDA) + "; for an image with SnapStart not where SnapStart is not: "
    + ", ".join(f"`{r}`" for r in config.NO_SNAPSTART),
    (config.DataSyncConfig, "region"): lambda: f"an AWS region botocore knows ({len(config.aws_regions())})",
}
# fields of a model that are not written in pipeline.toml (load sets them)
NOT_WRITTEN = {(config.DeployConfig, "model_dir")}
# the placeholder of a table's name, for tables of tables ([targets.<name>])
PLACEHOLDERS = {"targets": "<name>", "sets": "<set>", "packages": "<distribution>"}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The type inside Annotated/Optional, and whether None is allowed."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    inner, _ = _unwrap(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in typing.get_args(inner)) else "integer"
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(inner)[0])}"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(inner)[1])}"
    if _is_model(inner):
        return "table"
    return {str: "string", int: "integer", bool: "boolean", float: "number", Path: "path, relative to pipeline.toml"}.get(inner, "any")


def _toml(value: Any) -> str:
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    return json.dumps(value)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        made = info.default_factory()  # type: ignore[call-arg]
        return "(its keys' defaults)" if made == {} and _is_model(_unwrap(info.annotation)[0]) else f"`{_toml(made)}`"
    if info.default is None or info.default is PydanticUndefined:
        return "not set"
    if info.default == "":
        return '`""` (not set)'
    return f"`{_toml(info.default)}`"


# Each annotated_types bound the schema uses: its attribute and how the reference says it.
_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Ge, "ge", "at least {}"),
    (annotated_types.Gt, "gt", "more than {}"),
    (annotated_types.Le, "le", "at most {}"),
    (annotated_types.Lt, "lt", "less than {}"),
    (annotated_types.MinLen, "min_length", "at least {} long"),
    (annotated_types.MaxLen, "max_length", "at most {} long"),
)


def _limits(info: FieldInfo) -> list[str]:
    said = []
    for meta in info.metadata:
        bound = next(((attr, words) for kind, attr, words in _BOUNDS if isinstance(meta, kind)), None)
        if bound:
            said.append(bound[1].format(getattr(meta, bound[0])))
        elif getattr(meta, "pattern", None) and not info.description:
            said.append(f"matches `{meta.pattern}`")
    return said


def comments(model: type[BaseModel]) -> dict[str, str]:
    """Each key's comment in the model's source: the comment lines right above it and the one at its end."""
    source = textwrap.dedent(inspect.getsource(model))
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and line in by_line and lines[line - 1].strip().startswith("#"):
            above.insert(0, by_line[line])
            line -= 1
        end = [by_line[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in by_line]
        text = " ".join(above + end).strip()
        if text:
            out[node.target.id] = text
    return out


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no pipe ends the cell, no <placeholder> is taken for HTML."""
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _sections(model: type[BaseModel], path: str, array: bool, seen: dict[type, str]) -> Iterator[str]:
    """Markdown for the table at ``path`` and every table below it."""
    heading = f"`[[{path}]]`" if array else f"`[{path}]`" if path else "The top level"
    if model in seen:
        yield f"### {heading}\n\nThe same keys as {seen[model]}.\n"
        return
    seen[model] = heading
    rows, below = [], []
    notes = comments(model)
    for name, info in model.model_fields.items():
        if (model, name) in NOT_WRITTEN:
            continue
        key = info.alias or name
        inner, optional = _unwrap(info.annotation)
        origin = typing.get_origin(inner)
        child = f"{path}.{key}" if path else key
        if _is_model(inner):
            below.append((inner, child, False))
            continue
        if origin is tuple and _is_model(_unwrap(typing.get_args(inner)[0])[0]):
            below.append((_unwrap(typing.get_args(inner)[0])[0], child, True))
            continue
        if origin is dict and _is_model(_unwrap(typing.get_args(inner)[1])[0]):
            below.append((_unwrap(typing.get_args(inner)[1])[0], f"{child}.{PLACEHOLDERS.get(key, '<name>')}", False))
            continue
        allowed = []
        if typing.get_origin(inner) is Literal:
            allowed.append(", ".join(f"`{_toml(a)}`" for a in typing.get_args(inner)))
        if (model, name) in ALLOWED:
            allowed.append(ALLOWED[(model, name)]())
        allowed += _limits(info)
        described = "; ".join(t for t in (info.description, notes.get(name)) if t)
        example = f"`{key} = {_toml(info.examples[0])}`" if info.examples and not isinstance(info.examples[0], dict) else ""
        rows.append(f"| `{key}` | {_type_name(info.annotation)}{' or not set' if optional else ''} | {_default(info)} | "
                    f"{_cell(described)} | {_cell('; '.join(allowed))} | {_cell(example)} |")
    intro = _cell(inspect.cleandoc(model.__dict__.get("__doc__") or ""))
    text = f"### {heading}\n\n"
    if intro:
        text += intro + "\n\n"
    if array:
        text += f"An array of tables: write `[[{path}]]` once per entry.\n\n"
    if rows:
        text += "| key | type | default | what it is | allowed values | example |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    elif below:
        text += "Tables only: " + ", ".join(f"`[[{c}]]`" if many else f"`[{c}]`" for _, c, many in below) + ".\n"
    yield text
    for child_model, child_path, child_array in below:
        yield from _sections(child_model, child_path, child_array, seen)


def pipeline_toml(schema: type[BaseModel] = config.PipelineFile) -> str:
    intro = ("# pipeline.toml\n\n"
             "Every table and key `pipeline.toml` may hold, generated at each build of this site from the schema, the pydantic models of "
             "`pipeline/config.py`. Unknown keys and tables are errors naming the closest known one, and every problem is reported at "
             "once, with its key and its fix. Paths are relative to the folder of `pipeline.toml`. TOML's types are checked as written: "
             '`"2048"` is not a number, nor `1` a boolean.\n\n')
    return intro + "\n".join(_sections(schema, "", False, {}))


# ---------------------------------------------------------------- tasks


def task_help(name: str) -> str:
    """What `invoke --help <name>` prints (invoke's own help, in this process)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        invoke.Program(namespace=tasks.ns, binary="inv[oke]").run(["invoke", "--help", name], exit=False)
    return out.getvalue()


def task_reference() -> str:
    names = list(tasks.ns.task_names)
    text = ("# Tasks\n\nEvery task, as `invoke --help <task>` prints it (generated at each build of this site from `tasks.py`). "
            "`invoke --list` lists them; a task's options come after its name, e.g. `invoke build --force`.\n\n")
    text += "| task | what it does |\n|---|---|\n" + "\n".join(
        f"| [`invoke {n}`](#invoke-{n}) | {_cell((inspect.getdoc(tasks.ns[n].body) or '').partition(chr(10))[0])} |" for n in names) + "\n\n"
    for name in names:
        text += f"## invoke {name}\n\n```text\n{task_help(name).rstrip()}\n```\n\n"
    return text


# ---------------------------------------------------------------- permissions


def _value(value: Any) -> str:
    """A CloudFormation value as written: ${...} of Fn::Sub kept, a Ref as <Name>."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return str(value["Fn::Sub"])
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    return json.dumps(value) if not isinstance(value, str) else value


def _listed(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    return "<br>".join(f"`{_value(i)}`" for i in items)


def _conditions(condition: dict | None) -> str:
    if not condition:
        return ""
    return "<br>".join(f"{op}: `{key}` = {_listed(v)}" for op, pairs in condition.items() for key, v in pairs.items())


def _statements(document: dict) -> str:
    rows = []
    for s in document["Statement"]:
        who = _listed(s["Principal"] if "Principal" in s else s.get("Resource", ""))
        if isinstance(s.get("Principal"), dict):
            who = "<br>".join(f"{k}: {_listed(v)}" for k, v in s["Principal"].items())
        rows.append(f"| {s.get('Sid', '')} | {'**Deny**' if s['Effect'] == 'Deny' else 'Allow'} | {_listed(s['Action'])} | {who} | {_conditions(s.get('Condition'))} |")
    return "| statement | effect | actions | resources | condition |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"


def permissions(path: Path | None = None) -> str:
    path = path or REPO / "deploy" / "policies" / "bootstrap.json"
    doc = json.loads(path.read_text())
    text = ("# The deployer's permissions\n\n"
            f"What an administrator creates once, from `deploy/policies/bootstrap.json` (a CloudFormation template that `deploy/iam.py` renders; "
            "`python3 -m deploy.iam` writes it again, and a test fails when the file is stale). This page is generated from that file at each "
            f"build of the site.\n\n{doc.get('Description', '')}\n\n")
    text += "## Parameters\n\n| parameter | what it is |\n|---|---|\n" + "\n".join(
        f"| `{name}` | {_cell(p.get('Description', ''))} |" for name, p in doc.get("Parameters", {}).items()) + "\n\n"
    for name, resource in doc["Resources"].items():
        props = resource["Properties"]
        text += f"## {name}\n\n`{resource['Type']}`" + (f" named `{_value(props['RoleName'])}`" if "RoleName" in props else "") + \
            (f" named `{_value(props['ManagedPolicyName'])}`" if "ManagedPolicyName" in props else "") + f": {props.get('Description', '')}\n\n"
        if "MaxSessionDuration" in props:
            text += f"Sessions last at most {props['MaxSessionDuration']} s.\n\n"
        if "AssumeRolePolicyDocument" in props:
            text += "### Who may assume it\n\n" + _statements(props["AssumeRolePolicyDocument"]) + "\n"
        if "PolicyDocument" in props:
            text += "### What it allows\n\n" + _statements(props["PolicyDocument"]) + "\n"
        for policy in props.get("Policies", []):
            text += f"### Policy {policy['PolicyName']}\n\n" + _statements(policy["PolicyDocument"]) + "\n"
    text += "## Outputs\n\n| output | value | where it goes |\n|---|---|---|\n" + "\n".join(
        f"| `{name}` | `{_value(o['Value'])}` | {_cell(o.get('Description', ''))} |" for name, o in doc.get("Outputs", {}).items()) + "\n"
    return text


def pages() -> dict[str, str]:
    """The generated pages, by their path under docs/."""
    return {"reference/pipeline-toml.md": pipeline_toml(), "reference/tasks.md": task_reference(), "reference/permissions.md": permissions()}


DOCS = Path(__file__).resolve().parent.parent / "docs"


def write(docs: Path = DOCS) -> list[Path]:
    """Write the pages under ``docs``; the paths whose text changed."""
    changed = []
    for rel, text in pages().items():
        path = docs / rel
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


if __name__ == "__main__":
    written = write()
    print("\n".join(f"wrote {p}" for p in written) or "the reference pages in docs/reference/ are current")
