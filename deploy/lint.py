"""cfn-lint on the rendered template, with Hoist's own rules appended.

The same check runs from the shell: ``cfn-lint --append-rules deploy/lint_rules
dist/<target>/template.json``. Errors stop a deploy before any change set;
warnings are shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DeployError

from .template import dumps

RULES_DIR = Path(__file__).with_name("lint_rules")


@dataclass(frozen=True)
class LintFinding:
    rule: str  # E3012, E9001...
    level: str  # error | warning | informational
    message: str
    path: str  # Resources/Function/Properties/...

    def __str__(self) -> str:
        return f"{self.rule} {self.path}: {self.message}"


def lint(template: dict, region: str = "us-east-1") -> list[LintFinding]:
    from cfnlint.api import lint as cfn_lint

    matches = cfn_lint(dumps(template), config={"regions": [region], "append_rules": [str(RULES_DIR)]})
    return [LintFinding(rule=m.rule.id, level=m.rule.severity, message=m.message, path="/".join(map(str, m.path or ()))) for m in matches]


def check(template: dict, region: str, where: str) -> list[LintFinding]:
    """Lint; raise on errors, return the warnings."""
    findings = lint(template, region)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise DeployError("the template fails cfn-lint:\n  " + "\n  ".join(map(str, errors)), where=where,
                          fix="fix the [deploy]/[function]/[efs] values it names; to see it yourself: cfn-lint --append-rules deploy/lint_rules " + where)
    return findings
