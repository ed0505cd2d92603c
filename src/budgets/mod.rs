//! Virtual-node budgets: caps on what the pods of a namespace may hold on
//! virtual nodes (pods, requested CPU and memory), counted as ResourceQuota
//! counts. Pure: quantities ([`quantity`]), a pod's requests as the
//! scheduler computes them ([`requests`]), and the usage per namespace with
//! the admissions in flight ([`ledger`]).

pub mod ledger;
pub mod quantity;
pub mod requests;

use std::fmt;

pub use ledger::Ledger;
pub use quantity::Quantity;

/// What a budget caps, by ResourceQuota's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `pods`: how many.
    Pods,
    /// `requests.cpu` (or `cpu`).
    Cpu,
    /// `requests.memory` (or `memory`).
    Memory,
}

impl Resource {
    /// The resource a budget key names; bare `cpu` and `memory` mean
    /// requests, as in ResourceQuota.
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "pods" => Some(Resource::Pods),
            "requests.cpu" | "cpu" => Some(Resource::Cpu),
            "requests.memory" | "memory" => Some(Resource::Memory),
            _ => None,
        }
    }

    /// ResourceQuota's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Cpu => "requests.cpu",
            Resource::Memory => "requests.memory",
        }
    }
}

impl Resource {
    /// `amount` of this resource as a person writes it: memory in the
    /// largest binary unit that divides it (`20Gi`), the rest as
    /// [`Quantity`] shows it.
    pub fn show(self, amount: Quantity) -> String {
        const UNITS: [(&str, u32); 6] = [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ];
        if self == Resource::Memory && amount.0 > 0 && amount.0 % 1000 == 0 {
            let bytes = amount.0 / 1000;
            for (suffix, shift) in UNITS {
                if bytes % (1i128 << shift) == 0 {
                    return format!("{}{suffix}", bytes >> shift);
                }
            }
        }
        amount.to_string()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pods, CPU and memory, each in thousandths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub pods: Quantity,
    pub cpu: Quantity,
    pub memory: Quantity,
}

impl Amounts {
    /// One pod requesting `cpu` and `memory`.
    pub fn pod(cpu: Quantity, memory: Quantity) -> Self {
        Amounts {
            pods: Quantity::units(1),
            cpu,
            memory,
        }
    }

    /// The amount of `resource`.
    pub fn of(&self, resource: Resource) -> Quantity {
        match resource {
            Resource::Pods => self.pods,
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
        }
    }

    pub(crate) fn add(&mut self, other: &Amounts) {
        self.pods.0 += other.pods.0;
        self.cpu.0 += other.cpu.0;
        self.memory.0 += other.memory.0;
    }

    pub(crate) fn subtract(&mut self, other: &Amounts) {
        self.pods.0 -= other.pods.0;
        self.cpu.0 -= other.cpu.0;
        self.memory.0 -= other.memory.0;
    }
}

/// The limits of one budget, each resource at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits(pub Vec<(Resource, Quantity)>);

/// Why a pod does not fit a budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Over {
    pub resource: Resource,
    /// In use and reserved in the namespace, before the pod.
    pub used: Quantity,
    /// What the pod asks for.
    pub requested: Quantity,
    pub limit: Quantity,
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let show = |q| self.resource.show(q);
        write!(
            f,
            "{}/{} {}",
            show(self.used),
            show(self.limit),
            self.resource
        )?;
        if self.resource != Resource::Pods {
            write!(f, " (the pod requests {})", show(self.requested))?;
        }
        Ok(())
    }
}

impl Limits {
    /// Whether `pod` fits with `used` already counted: the first resource
    /// that would go over its limit, if any.
    pub fn check(&self, used: &Amounts, pod: &Amounts) -> Result<(), Over> {
        for &(resource, limit) in &self.0 {
            let (now, requested) = (used.of(resource), pod.of(resource));
            if now.0 + requested.0 > limit.0 {
                return Err(Over {
                    resource,
                    used: now,
                    requested,
                    limit,
                });
            }
        }
        Ok(())
    }
}

/// Where a pod takes its place in a budget, when the decision sends it to
/// a virtual node: the server's [`Ledger`] (see [`Reserving`]), or none.
pub trait Gate {
    /// Takes `amounts` in `namespace` within `limits`, or says why it does
    /// not fit.
    fn admit(&self, limits: &Limits, namespace: &str, amounts: &Amounts) -> Result<(), Over>;

    /// The reservation a pod let through holds, recorded on the pod (see
    /// [`RESERVATION_ANNOTATION`]) so that the pod, once seen, ends it.
    fn reservation(&self) -> Option<&str> {
        None
    }
}

/// The pod annotation naming the admission a pod's budget place was
/// reserved under (the AdmissionReview's uid).
pub const RESERVATION_ANNOTATION: &str = "eci-profile.io/budget-reservation";

/// How long a reservation waits for its pod to show up in the watch.
pub const RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// No budget is enforced.
pub struct Unlimited;

impl Gate for Unlimited {
    fn admit(&self, _: &Limits, _: &str, _: &Amounts) -> Result<(), Over> {
        Ok(())
    }
}

/// Admission `id` reserving its place in a shared [`Ledger`] until
/// `expires`: check and reservation are one step under the lock, so
/// concurrent admissions cannot both take the last place. Reservations
/// lapsed by `now` end first.
pub struct Reserving<'a> {
    pub ledger: &'a std::sync::Mutex<Ledger>,
    pub id: &'a str,
    pub now: std::time::Instant,
    pub expires: std::time::Instant,
}

impl Gate for Reserving<'_> {
    fn admit(&self, limits: &Limits, namespace: &str, amounts: &Amounts) -> Result<(), Over> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.expire(self.now);
        ledger.reserve(self.id, namespace, *amounts, limits, self.expires)
    }

    fn reservation(&self) -> Option<&str> {
        Some(self.id)
    }
}

/// Checks against a [`Ledger`] without reserving (dry runs, `check`).
pub struct Checking<'a>(pub &'a std::sync::Mutex<Ledger>);

impl Gate for Checking<'_> {
    fn admit(&self, limits: &Limits, namespace: &str, amounts: &Amounts) -> Result<(), Over> {
        let ledger = self.0.lock().unwrap_or_else(|e| e.into_inner());
        limits.check(&ledger.used(namespace), amounts)
    }
}

/// One budget's usage in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage<'p> {
    pub rule: &'p str,
    pub namespace: String,
    pub limits: &'p Limits,
    pub used: Amounts,
}

/// The usage of every budget of `profile`: a budget for one namespace in
/// that namespace, always; a budget for each namespace its rule selects
/// (`selects`) in those that hold something on virtual nodes.
pub fn usage<'p>(
    profile: &'p crate::profile::Profile,
    ledger: &Ledger,
    selects: impl Fn(&crate::profile::Rule, &str) -> bool,
) -> Vec<Usage<'p>> {
    let mut rows = Vec::new();
    for (rule, budget) in profile.budgets() {
        match &budget.namespace {
            Some(namespace) => rows.push(Usage {
                rule: &rule.name,
                namespace: namespace.clone(),
                limits: &budget.limits,
                used: ledger.used(namespace),
            }),
            None => rows.extend(
                ledger
                    .usage()
                    .filter(|(namespace, _)| selects(rule, namespace))
                    .map(|(namespace, used)| Usage {
                        rule: &rule.name,
                        namespace: namespace.to_string(),
                        limits: &budget.limits,
                        used: *used,
                    }),
            ),
        }
    }
    rows.sort_by(|a, b| (a.rule, &a.namespace).cmp(&(b.rule, &b.namespace)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn keys_follow_resource_quota() {
        assert_eq!(Resource::parse("cpu"), Some(Resource::Cpu));
        assert_eq!(Resource::parse("requests.memory"), Some(Resource::Memory));
        assert_eq!(Resource::parse("limits.cpu"), None);
        assert_eq!(Resource::Cpu.to_string(), "requests.cpu");
    }

    #[test]
    fn memory_is_shown_in_binary_units_when_exact() {
        assert_eq!(Resource::Memory.show(q("64Gi")), "64Gi");
        assert_eq!(Resource::Memory.show(q("1.5Gi")), "1536Mi");
        assert_eq!(Resource::Memory.show(q("1G")), "1000000000");
        assert_eq!(Resource::Memory.show(q("0")), "0");
        assert_eq!(Resource::Cpu.show(q("2048")), "2048");
        assert_eq!(Resource::Cpu.show(q("250m")), "250m");
        let over = Limits(vec![(Resource::Memory, q("64Gi"))])
            .check(
                &Amounts::pod(q("0"), q("63Gi")),
                &Amounts::pod(q("0"), q("2Gi")),
            )
            .unwrap_err();
        assert_eq!(
            over.to_string(),
            "63Gi/64Gi requests.memory (the pod requests 2Gi)"
        );
    }

    #[test]
    fn a_pod_fits_up_to_the_limit_and_not_beyond() {
        let limits = Limits(vec![
            (Resource::Pods, Quantity::units(40)),
            (Resource::Cpu, q("64")),
        ]);
        let mut used = Amounts::default();
        let pod = Amounts::pod(q("1600m"), q("1Gi"));
        for _ in 0..40 {
            assert_eq!(limits.check(&used, &pod), Ok(()));
            used.add(&pod);
        }
        let over = limits.check(&used, &pod).unwrap_err();
        assert_eq!(over.resource, Resource::Pods);
        assert_eq!(over.to_string(), "40/40 pods");
        // CPU: 64 cores in use, a pod asking for more.
        let limits = Limits(vec![(Resource::Cpu, q("64"))]);
        let over = limits
            .check(&used, &Amounts::pod(q("250m"), q("0")))
            .unwrap_err();
        assert_eq!(
            over.to_string(),
            "64/64 requests.cpu (the pod requests 250m)"
        );
        used.subtract(&pod);
        assert_eq!(used.pods, Quantity::units(39));
    }
}
