# The values table of the chart's README.md, from values.yaml (the comment
# above each value is its description), values.schema.json (its type) and the
# chart's defaults as Helm reads them (helm-python-sdk).
#
# Usage: chart_readme.py CHART_DIR [--write]
#   prints README.md with the table between its markers regenerated, or
#   writes it. Fails when a value has no description or no schema, or when
#   the schema has a value that values.yaml lacks.
import json, re, sys
from pathlib import Path
from helm_python import Chart

BEGIN, END = "<!-- values: begin -->", "<!-- values: end -->"
KEY = re.compile(r"^( *)([A-Za-z0-9_.-]+):(.*)$")


def documented(values_yaml):
    """(dotted path, description) of every key, in file order."""
    out, stack, comment = [], [], []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            comment = []
            continue
        depth = len(match.group(1)) // 2
        stack[depth:] = [match.group(2)]
        out.append((".".join(stack), " ".join(comment)))
        comment = []
    return out


def schema_node(schema, path):
    node = schema
    for part in path.split("."):
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    return node


def is_section(node, value):
    """A map of values each documented (not a free-form map, not `{}`)."""
    return bool(node.get("properties")) and isinstance(value, dict) and bool(value)


def schema_leaves(schema, values, prefix=""):
    for key, node in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        value = values.get(key) if isinstance(values, dict) else None
        if is_section(node, value):
            yield from schema_leaves(node, value, path + ".")
        else:
            yield path


def type_of(node):
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type", "object")
    return " or ".join(kind) if isinstance(kind, list) else kind


def value_at(values, path):
    for part in path.split("."):
        values = values[part] if isinstance(values, dict) else None
    return values


def table(chart_dir):
    values_yaml = (chart_dir / "values.yaml").read_text()
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    with Chart.load(str(chart_dir)) as chart:
        values = chart.values
    errors, rows, seen = [], [], set()
    for path, description in documented(values_yaml):
        node = schema_node(schema, path)
        if any(path.startswith(leaf + ".") for leaf in seen):
            continue  # inside a free-form value (resources, labels)
        if node is None:
            errors.append(f"{path}: not in values.schema.json")
            continue
        if is_section(node, value_at(values, path)):
            continue
        seen.add(path)
        if not description:
            errors.append(f"{path}: no comment above it in values.yaml")
        cell = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {type_of(node)} | `{json.dumps(value_at(values, path))}` | {cell} |")
    for leaf in schema_leaves(schema, values):
        if leaf not in seen:
            errors.append(f"{leaf}: in values.schema.json, not in values.yaml")
    if errors:
        sys.exit("chart values:\n  " + "\n  ".join(errors))
    return "\n".join(["| Value | Type | Default | Description |", "|---|---|---|---|", *rows])


def main():
    chart_dir = Path(sys.argv[1])
    readme = (chart_dir / "README.md").read_text()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"{chart_dir}/README.md has no {BEGIN} ... {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    text = f"{head}{BEGIN}\n{table(chart_dir)}\n{END}{tail}"
    if "--write" in sys.argv[2:]:
        (chart_dir / "README.md").write_text(text)
    else:
        sys.stdout.write(text)


main()
