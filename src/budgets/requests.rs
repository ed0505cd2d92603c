//! A pod's requests as the scheduler computes them (Kubernetes'
//! `resourcehelper.PodRequests`): the containers' sum, sidecars (init
//! containers with `restartPolicy: Always`) running next to them, init
//! containers one at a time on top of the sidecars started before them,
//! the larger of the two, plus the pod's overhead.

use super::{Amounts, Quantity};

/// What one container requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub cpu: Quantity,
    pub memory: Quantity,
}

impl Requested {
    fn plus(self, other: Requested) -> Requested {
        Requested {
            cpu: Quantity(self.cpu.0 + other.cpu.0),
            memory: Quantity(self.memory.0 + other.memory.0),
        }
    }

    fn max(self, other: Requested) -> Requested {
        Requested {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// An init container: its requests, and whether it is a sidecar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Init {
    pub requested: Requested,
    pub sidecar: bool,
}

/// One pod's amounts: one pod, and its CPU and memory requests.
pub fn pod_amounts(
    containers: impl IntoIterator<Item = Requested>,
    init_containers: impl IntoIterator<Item = Init>,
    overhead: Requested,
) -> Amounts {
    let running = containers
        .into_iter()
        .fold(Requested::default(), Requested::plus);
    let mut sidecars = Requested::default();
    let mut initializing = Requested::default();
    for init in init_containers {
        let during = if init.sidecar {
            sidecars = sidecars.plus(init.requested);
            sidecars
        } else {
            init.requested.plus(sidecars)
        };
        initializing = initializing.max(during);
    }
    let total = running.plus(sidecars).max(initializing).plus(overhead);
    Amounts::pod(total.cpu, total.memory)
}

/// What a pod of spec `spec` requests, as the scheduler counts it.
pub fn of_spec(spec: &crate::pod::Spec) -> Amounts {
    let requested = |requests: Option<&crate::pod::Requests>| {
        let requests = requests.copied().unwrap_or_default();
        Requested {
            cpu: requests.cpu.0.unwrap_or_default(),
            memory: requests.memory.0.unwrap_or_default(),
        }
    };
    let of = |c: &crate::pod::Container| {
        requested(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    };
    pod_amounts(
        spec.containers.iter().flatten().map(of),
        spec.init_containers.iter().flatten().map(|c| Init {
            requested: of(c),
            sidecar: c.restart_policy.as_deref() == Some("Always"),
        }),
        requested(spec.overhead.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_as_the_api_server_sends_it() {
        let pod: crate::pod::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                                                  "limits": {"cpu": "2"}}},
                    {"name": "bare"}
                ],
                "initContainers": [
                    {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "migrate", "resources": {"requests": {"cpu": 4, "memory": "odd"}}}
                ],
                "overhead": {"cpu": "250m", "memory": "120Mi"}
            }
        }))
        .unwrap();
        let amounts = of_spec(&pod.spec);
        // CPU: the init container (4) on top of the sidecar (0.1) beats the
        // containers (1.5) next to it; plus the overhead (0.25).
        assert_eq!(amounts.cpu, Quantity(4350));
        // Memory: the containers (1Gi) and the sidecar (64Mi); an
        // unreadable quantity counts as none; plus the overhead.
        assert_eq!(amounts.memory, Quantity::parse("1208Mi").unwrap());
        assert_eq!(amounts.pods, Quantity::units(1));
    }

    fn r(cpu: &str, memory: &str) -> Requested {
        Requested {
            cpu: Quantity::parse(cpu).unwrap(),
            memory: Quantity::parse(memory).unwrap(),
        }
    }

    fn init(cpu: &str, memory: &str, sidecar: bool) -> Init {
        Init {
            requested: r(cpu, memory),
            sidecar,
        }
    }

    #[test]
    fn containers_add_up() {
        let a = pod_amounts([r("250m", "64Mi"), r("1", "1Gi")], [], Requested::default());
        assert_eq!(
            a,
            Amounts::pod(Quantity(1250), Quantity::parse("1088Mi").unwrap())
        );
        assert_eq!(a.pods, Quantity::units(1));
    }

    #[test]
    fn the_largest_init_container_counts_when_it_is_larger() {
        // Init containers run one at a time, before the containers.
        let a = pod_amounts(
            [r("500m", "128Mi")],
            [init("2", "64Mi", false), init("100m", "1Gi", false)],
            Requested::default(),
        );
        assert_eq!(a.cpu, Quantity(2000));
        assert_eq!(a.memory, Quantity::parse("1Gi").unwrap());
    }

    #[test]
    fn sidecars_run_next_to_everything_after_them() {
        // A sidecar (1 CPU) then an init container (2 CPU): 3 CPU while it
        // runs; then the containers (1 CPU) next to the sidecar: 2 CPU.
        let a = pod_amounts(
            [r("1", "0")],
            [init("1", "0", true), init("2", "0", false)],
            Requested::default(),
        );
        assert_eq!(a.cpu, Quantity(3000));
        // A sidecar after the init containers: only with the containers.
        let a = pod_amounts(
            [r("1", "0")],
            [init("2", "0", false), init("1", "0", true)],
            Requested::default(),
        );
        assert_eq!(a.cpu, Quantity(2000));
    }

    #[test]
    fn overhead_is_added() {
        let a = pod_amounts([r("1", "1Gi")], [], r("250m", "120Mi"));
        assert_eq!(
            (a.cpu, a.memory),
            (Quantity(1250), Quantity::parse("1144Mi").unwrap())
        );
    }
}
