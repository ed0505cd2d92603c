//! A large `kubectl get namespaces,deployments -A -o yaml` export, written
//! as kubectl prints it (keys sorted, status included), for the scale test
//! and the benchmark of `diff`.

use std::fmt::Write as _;

/// Namespaces in an export of `workloads` Deployments: 20 workloads each.
pub fn namespaces(workloads: usize) -> usize {
    workloads.div_ceil(20)
}

/// An export of `workloads` Deployments spread over [`namespaces`]
/// namespaces; every third namespace is labelled `alibabacloud.com/eci:
/// "true"`, every fifth `team: batch`; apps are `web`, `api`, `worker`,
/// `reports` and `etl` in turn. About 1.5 KB a workload (15 MB for 10,000).
pub fn kubectl_export(workloads: usize) -> String {
    let mut out = String::with_capacity(workloads * 1100 + 4096);
    out.push_str("apiVersion: v1\nitems:\n");
    for n in 0..namespaces(workloads) {
        let mut labels = format!("      kubernetes.io/metadata.name: team-{n}\n");
        if n % 3 == 0 {
            labels.insert_str(0, "      alibabacloud.com/eci: \"true\"\n");
        }
        if n % 5 == 0 {
            labels.push_str("      team: batch\n");
        }
        let _ = write!(
            out,
            "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    creationTimestamp: \"2026-11-22T20:58:01Z\"\n    labels:\n{labels}    name: team-{n}\n    resourceVersion: \"{rv}\"\n    uid: 6b1f0c2e-0000-4000-8000-{n:012}\n  spec:\n    finalizers:\n    - kubernetes\n  status:\n    phase: Active\n",
            rv = 1000 + n
        );
    }
    const APPS: [&str; 5] = ["web", "api", "worker", "reports", "etl"];
    for i in 0..workloads {
        let (namespace, app) = (i / 20, APPS[i % APPS.len()]);
        let eci = if i % 7 == 0 {
            "          alibabacloud.com/eci: \"true\"\n"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"- apiVersion: apps/v1
  kind: Deployment
  metadata:
    annotations:
      deployment.kubernetes.io/revision: "1"
    creationTimestamp: "2026-11-22T21:00:10Z"
    generation: 1
    name: {app}-{i}
    namespace: team-{namespace}
    resourceVersion: "{rv}"
    uid: 0d2c4e6f-0000-4000-8000-{i:012}
  spec:
    progressDeadlineSeconds: 600
    replicas: 2
    revisionHistoryLimit: 10
    selector:
      matchLabels:
        app: {app}-{i}
    strategy:
      rollingUpdate:
        maxSurge: 25%
        maxUnavailable: 25%
      type: RollingUpdate
    template:
      metadata:
        creationTimestamp: null
        labels:
{eci}          app: {app}
          instance: {app}-{i}
      spec:
        containers:
        - env:
          - name: LOG_LEVEL
            value: info
          image: registry.example.com/team-{namespace}/{app}:1.{i}
          imagePullPolicy: IfNotPresent
          name: {app}
          ports:
          - containerPort: 8080
            protocol: TCP
          resources:
            limits:
              cpu: "2"
              memory: 1Gi
            requests:
              cpu: 500m
              memory: 512Mi
          terminationMessagePath: /dev/termination-log
          terminationMessagePolicy: File
        dnsPolicy: ClusterFirst
        restartPolicy: Always
        schedulerName: default-scheduler
        securityContext: {{}}
        terminationGracePeriodSeconds: 30
  status:
    availableReplicas: 2
    observedGeneration: 1
    readyReplicas: 2
    replicas: 2
    updatedReplicas: 2
"#,
            rv = 200_000 + i
        );
    }
    out.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    out
}
