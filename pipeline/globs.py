"""One glob semantics for the pipeline: [slim] keep patterns and the rules of
builder/slim_rules.toml, the library and distribution names of
validate/libraries.json, and [validate] waive patterns.

A pattern matches a whole "/"-separated path relative to a tree (or a bare
name). By default ("segment" semantics):

- ``*`` matches any run of characters except "/" (within one folder or name);
- ``?`` matches one character except "/";
- ``**/`` matches zero or more whole folders (``a/**/b`` matches ``a/b`` and
  ``a/x/y/b``); ``**`` elsewhere matches anything, "/" included (``a/**``
  matches everything below ``a``);
- ``[abc]``, ``[a-z]``, ``[!abc]`` match one character of (not of) the set,
  never "/"; a ``[`` without its ``]`` is itself;
- anything else matches itself.

``crossing=True`` is what [validate] waive patterns have always meant (they were
matched by ``fnmatch``, and users' waivers rely on ``efs:torch/*`` covering the
whole folder): ``*``, ``?`` and classes match "/" too, so ``**`` is the same as
``*`` and ``**/`` needs at least one folder. docs/validate.md ("invoke validate") and
tests/unit/test_globs.py pin both.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache


def _class(pattern: str, i: int, crossing: bool) -> tuple[str, int] | None:
    """The regex of the class opening at ``pattern[i] == "["`` and the index after it, or None (no closing "]")."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] == "!"
    if negate:
        j += 1
    if j < len(pattern) and pattern[j] == "]":  # a "]" first is a member
        j += 1
    end = pattern.find("]", j)
    if end < 0:
        return None
    body = "".join("\\" + ch if ch in "\\[]^&~|" else ch for ch in pattern[i + 1 + negate:end])
    if negate:
        return f"[^{body}{'' if crossing else '/'}]", end + 1
    return (f"[{body}]" if crossing else f"(?!/)[{body}]"), end + 1


@cache
def compile_glob(pattern: str, *, crossing: bool = False) -> re.Pattern[str]:
    """The regular expression matching what ``pattern`` matches (see the module's docstring)."""
    any_char = "." if crossing else "[^/]"
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if not crossing and pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif not crossing and pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append(any_char + "*")
            i += 1
        elif c == "?":
            out.append(any_char)
            i += 1
        elif c == "[" and (found := _class(pattern, i, crossing)):
            out.append(found[0])
            i = found[1]
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(path: str, patterns: Iterable[str], *, crossing: bool = False) -> bool:
    """Whether ``path`` matches any of ``patterns``."""
    return any(compile_glob(p, crossing=crossing).match(path) for p in patterns)
