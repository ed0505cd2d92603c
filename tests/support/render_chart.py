# Renders the Helm chart with the Helm SDK (helm-python-sdk), as `helm install`
# would (IsInstall; IsUpgrade with --upgrade), for tests/manifests.rs and
# tests/chart.rs. By default the cluster serves cert-manager's and the
# Prometheus Operator's APIs, and the `helm test` hooks and NOTES.txt are
# left out (they are not part of the install).
#
# Usage: render_chart.py CHART_DIR VALUES_JSON NAMESPACE [--release NAME]
#   [--api-versions A,B | --no-api-versions] [--kube-version V] [--upgrade]
#   [--tests] [--notes]
import argparse, json, sys
from helm_python import Chart, _native
from helm_python.errors import HelmError

CRD_APIS = "cert-manager.io/v1,monitoring.coreos.com/v1"

parser = argparse.ArgumentParser()
parser.add_argument("chart_dir")
parser.add_argument("values")
parser.add_argument("namespace")
parser.add_argument("--release", default="eci-profile")
parser.add_argument("--api-versions", default=CRD_APIS)
parser.add_argument("--no-api-versions", action="store_true")
parser.add_argument("--kube-version")
parser.add_argument("--upgrade", action="store_true")
parser.add_argument("--tests", action="store_true", help="also the `helm test` hooks")
parser.add_argument("--notes", action="store_true", help="print NOTES.txt only")
args = parser.parse_args()

options = {
    "name": args.release,
    "namespace": args.namespace,
    "is_install": not args.upgrade,
    "is_upgrade": args.upgrade,
    "api_versions": [] if args.no_api_versions else [a for a in args.api_versions.split(",") if a],
}
if args.kube_version:
    options["kube_version"] = args.kube_version
try:
    with Chart.load(args.chart_dir) as chart:
        # Chart.render does not expose api_versions; the SDK's C call takes them.
        out = json.loads(_native.call_string(
            "helm_render", chart._raw(), json.dumps(json.loads(args.values)), json.dumps(options)))
except HelmError as e:
    sys.exit(f"render failed: {e}")
for path in sorted(out):
    text = out[path].strip()
    if args.notes:
        if path.endswith("NOTES.txt"):
            print(text)
        continue
    if not text or path.endswith("NOTES.txt"):
        continue
    if "/templates/tests/" in path and not args.tests:
        continue
    print(f"---\n# Source: {path}\n{text}")
