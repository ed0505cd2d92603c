# Validates objects against a CRD version's openAPIV3Schema the way the API
# server checks them itself, for tests/crd.rs: the OpenAPI schema with
# jsonschema (x-kubernetes-int-or-string read as anyOf integer or string;
# OpenAPI v3.0's nullable is not used), then the CEL rules of
# x-kubernetes-validations with cel-python, each with `self` bound to the
# value at its node.
#
# Usage: validate_selectors.py SCHEMA_JSON_FILE < OBJECTS_JSON
# Prints {"compile_errors": [...], "results": [[error, ...] for each object]}.
import json
import sys

import celpy
import jsonschema


def to_jsonschema(node):
    """The schema with Kubernetes' extensions turned into JSON Schema."""
    if isinstance(node, list):
        return [to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties",):
            out[key] = {name: to_jsonschema(s) for name, s in value.items()}
        elif key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def rules(node, path="self"):
    """Every CEL rule of the schema, with the path of its node."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in node.get("properties", {}).items():
        yield from rules(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from rules(node["additionalProperties"], f"{path}[*]")
    if isinstance(node.get("items"), dict):
        yield from rules(node["items"], f"{path}[*]")


ENV = celpy.Environment()
PROGRAMS = {}


def program(text):
    if text not in PROGRAMS:
        PROGRAMS[text] = ENV.program(ENV.compile(text))
    return PROGRAMS[text]


def child_path(path, key):
    return f"{path}.{key}" if path else str(key)


def cel(node, value, path, errors):
    """Evaluates the rules of `node` and of its children on `value`."""
    if value is None:
        return
    where = path or "<root>"
    for rule in node.get("x-kubernetes-validations", []):
        try:
            result = program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as e:
            result = e
        if isinstance(result, celpy.CELEvalError):
            errors.append(f"{where}: Invalid value: {rule['message']} (evaluation error: {result.args[0]})")
        elif not result:
            errors.append(f"{where}: Invalid value: {rule['message']}")
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in properties:
                cel(properties[key], child, child_path(path, key), errors)
            elif isinstance(extra, dict):
                cel(extra, child, child_path(path, key), errors)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, child in enumerate(value):
            cel(node["items"], child, child_path(path, i), errors)


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    objects = json.load(sys.stdin)
    compile_errors = []
    for path, rule in rules(schema):
        try:
            program(rule["rule"])
        except Exception as e:  # celpy's parser and checker raise several kinds
            compile_errors.append(f"{path}: {rule['rule']}: {e}")
    validator = jsonschema.Draft4Validator(to_jsonschema(schema))
    results = []
    for obj in objects:
        errors = []
        for error in validator.iter_errors(obj):
            where = ".".join(str(p) for p in error.absolute_path) or "<root>"
            errors.append(f"{where}: {error.message}")
        if not compile_errors:
            cel(schema, obj, "", errors)
        results.append(sorted(errors))
    print(json.dumps({"compile_errors": compile_errors, "results": results}))


main()
