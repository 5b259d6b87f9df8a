#!/usr/bin/env python3
"""Writes the values table of README.md from the "# --" comments of values.yaml.

    python3 tools/readme.py           rewrites the table between the markers of README.md
    python3 tools/readme.py --check   exits 1 if README.md's table is not the one values.yaml makes

Reads the subset of YAML that values.yaml is written in (two-space indents, `key: value`,
flow lists and maps, no block lists), with the standard library only. Every key whose value
is not a map with keys of its own needs a "# --" comment on the line above it (a map with
such a comment is one row, its keys its default, and each of them a row of its own); a key
without one is an error.
"""

import re
import sys
from pathlib import Path

CHART = Path(__file__).resolve().parent.parent
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
START = "<!-- values table: made by tools/readme.py from values.yaml; do not edit by hand -->"
END = "<!-- end of values table -->"

KEY = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?$")
DOC = re.compile(r"^( *)# -- (.*)$")


def kind(default: str) -> str:
    if default in ("true", "false"):
        return "bool"
    if default.startswith("["):
        return "list"
    if default.startswith("{"):
        return "object"
    if re.fullmatch(r"-?[0-9]+", default):
        return "int"
    return "string"


def rows(lines):
    """(path, type, default, description) of every documented key, in file order."""
    stack = []  # (indent, key)
    doc = None
    documented_maps = {}  # path -> [description, children]
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            doc = None
            continue
        match = DOC.match(line)
        if match:
            doc = match.group(2).strip()
            continue
        if line.lstrip().startswith("#"):
            continue
        match = KEY.match(line)
        if not match:
            raise SystemExit(f"values.yaml:{number}: not a `key: value` line: {line!r}")
        indent, key, rest = len(match.group(1)), match.group(2), (match.group(3) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        parent = ".".join(k for _, k in stack)
        inside = next((p for p in documented_maps if parent == p or parent.startswith(p + ".")), None)
        if inside is not None:
            if rest:
                documented_maps[inside][1].append(f"{path[len(inside) + 1:]}: {rest}")
                out.append([path, kind(rest), rest, f"An entry of the default of `{inside}`."])
            stack.append((indent, key))
            doc = None
            continue
        if rest:
            if doc is None:
                raise SystemExit(f"values.yaml:{number}: `{path}` has no `# --` comment above it")
            out.append([path, kind(rest), rest, doc])
        elif doc is not None:
            documented_maps[path] = [doc, []]
            out.append([path, "object", None, doc])
        stack.append((indent, key))
        doc = None
    for row in out:
        if row[2] is None:
            row[2] = "{" + ", ".join(documented_maps[row[0]][1]) + "}"
    return out


def table(values_text: str) -> str:
    head = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    body = []
    for path, typ, default, description in rows(values_text.splitlines()):
        cell = default.replace("|", "\\|")
        text = description.replace("|", "\\|")
        body.append(f"| `{path}` | {typ} | `{cell}` | {text} |")
    return "\n".join(head + body)


def main() -> int:
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {START!r} and {END!r}")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    wanted = f"{before}{START}\n{table(VALUES.read_text())}\n{END}{after}"
    if "--check" in sys.argv[1:]:
        if wanted != readme:
            print("README.md's values table is not the one values.yaml makes: run python3 tools/readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
