//! What each namespace holds on virtual nodes: the pods counted (sent pods
//! bound to a virtual node or not bound yet; neither terminal nor being
//! deleted), and the admissions in flight, reserved at once so that concurrent admissions
//! cannot both take the last place. A reservation ends when its pod is
//! counted, or after its time to live (a pod we admitted may still be
//! refused by a later admission step). Pure: time is passed in.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{Amounts, Limits, Over};

/// A sent pod as the watch shows it.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    /// `spec.nodeName`: `None` while not bound.
    pub node: Option<&'a str>,
    pub amounts: Amounts,
    /// Neither terminal (Succeeded, Failed) nor being deleted.
    pub live: bool,
    /// The admission it was reserved under, if any.
    pub reservation: Option<&'a str>,
}

/// A live sent pod: counted while unbound or bound to a virtual node.
#[derive(Debug)]
struct Tracked {
    namespace: String,
    node: Option<String>,
    amounts: Amounts,
}

/// Usage per namespace, from counted pods and reservations.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Live sent pods by uid.
    pods: HashMap<String, Tracked>,
    /// The names of the virtual nodes.
    virtual_nodes: HashSet<String>,
    /// Admissions in flight by id: namespace, amounts, and when they lapse.
    reservations: HashMap<String, (String, Amounts, Instant)>,
    /// Per namespace: counted plus reserved.
    used: HashMap<String, Amounts>,
}

impl Ledger {
    /// What `namespace` holds, counted and reserved.
    pub fn used(&self, namespace: &str) -> Amounts {
        self.used.get(namespace).copied().unwrap_or_default()
    }

    /// Every namespace holding something, with what it holds.
    pub fn usage(&self) -> impl Iterator<Item = (&str, &Amounts)> {
        self.used.iter().map(|(ns, used)| (ns.as_str(), used))
    }

    /// Whether `node` is a virtual node.
    pub fn is_virtual(&self, node: &str) -> bool {
        self.virtual_nodes.contains(node)
    }

    /// Takes in a sent pod's latest version: counted while live and
    /// unbound or bound to a virtual node. The reservation it was admitted
    /// under ends, whatever it shows.
    pub fn observe(&mut self, pod: Seen<'_>) {
        if let Some(id) = pod.reservation {
            self.release(id);
        }
        self.forget(pod.uid);
        if pod.live {
            let tracked = Tracked {
                namespace: pod.namespace.to_string(),
                node: pod.node.filter(|n| !n.is_empty()).map(str::to_string),
                amounts: pod.amounts,
            };
            if self.counts(&tracked) {
                self.add(&tracked.namespace, &tracked.amounts);
            }
            self.pods.insert(pod.uid.to_string(), tracked);
        }
    }

    /// Stops tracking pod `uid` (deleted).
    pub fn forget(&mut self, uid: &str) {
        if let Some(tracked) = self.pods.remove(uid)
            && self.counts(&tracked)
        {
            self.subtract(&tracked.namespace, &tracked.amounts);
        }
    }

    /// Keeps only the pods `keep` says still exist (after a new list).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<String> = self.pods.keys().filter(|uid| !keep(uid)).cloned().collect();
        for uid in gone {
            self.forget(&uid);
        }
    }

    /// The virtual nodes are now `nodes`: pods bound to nodes that became
    /// (or stopped being) virtual are counted again.
    pub fn set_virtual_nodes(&mut self, nodes: HashSet<String>) {
        if nodes == self.virtual_nodes {
            return;
        }
        let bound: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, t)| t.node.is_some())
            .map(|(uid, _)| uid.clone())
            .collect();
        let tracked: Vec<(String, Tracked)> = bound
            .into_iter()
            .filter_map(|uid| {
                let t = self.pods.remove(&uid)?;
                if self.counts(&t) {
                    self.subtract(&t.namespace, &t.amounts);
                }
                Some((uid, t))
            })
            .collect();
        self.virtual_nodes = nodes;
        for (uid, t) in tracked {
            if self.counts(&t) {
                self.add(&t.namespace, &t.amounts);
            }
            self.pods.insert(uid, t);
        }
    }

    /// Reserves `amounts` in `namespace` under `id` until `expires`, if they
    /// fit `limits` with everything counted and reserved; else why not.
    /// An id that holds a reservation (the API server calling again for the
    /// same request) keeps its place, with these amounts.
    pub fn reserve(
        &mut self,
        id: &str,
        namespace: &str,
        amounts: Amounts,
        limits: &Limits,
        expires: Instant,
    ) -> Result<(), Over> {
        let held = self.reservations.contains_key(id);
        self.release(id);
        if !held {
            limits.check(&self.used(namespace), &amounts)?;
        }
        self.add(namespace, &amounts);
        self.reservations
            .insert(id.to_string(), (namespace.to_string(), amounts, expires));
        Ok(())
    }

    /// Ends reservation `id`.
    pub fn release(&mut self, id: &str) {
        if let Some((namespace, amounts, _)) = self.reservations.remove(id) {
            self.subtract(&namespace, &amounts);
        }
    }

    /// Ends every reservation lapsed at `now`; how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        if self
            .reservations
            .values()
            .all(|(_, _, expires)| *expires > now)
        {
            return 0;
        }
        let lapsed: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, (_, _, expires))| *expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lapsed {
            self.release(id);
        }
        lapsed.len()
    }

    /// Pods tracked (live and sent, wherever bound), reservations in flight.
    pub fn len(&self) -> (usize, usize) {
        (self.pods.len(), self.reservations.len())
    }

    fn counts(&self, tracked: &Tracked) -> bool {
        tracked
            .node
            .as_ref()
            .is_none_or(|node| self.virtual_nodes.contains(node))
    }

    fn add(&mut self, namespace: &str, amounts: &Amounts) {
        self.used
            .entry(namespace.to_string())
            .or_default()
            .add(amounts);
    }

    fn subtract(&mut self, namespace: &str, amounts: &Amounts) {
        if let Some(used) = self.used.get_mut(namespace) {
            used.subtract(amounts);
            if *used == Amounts::default() {
                self.used.remove(namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::budgets::{Quantity, Resource};

    fn pod(cpu: i128) -> Amounts {
        Amounts::pod(Quantity(cpu), Quantity(0))
    }

    fn pods(n: i64) -> Limits {
        Limits(vec![(Resource::Pods, Quantity::units(n))])
    }

    fn seen<'a>(uid: &'a str, node: Option<&'a str>, cpu: i128) -> Seen<'a> {
        Seen {
            uid,
            namespace: "team",
            node,
            amounts: pod(cpu),
            live: true,
            reservation: None,
        }
    }

    #[test]
    fn reservations_take_places_until_counted_or_lapsed() {
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let mut ledger = Ledger::default();
        ledger
            .reserve("a", "team", pod(1000), &pods(2), later)
            .unwrap();
        ledger
            .reserve("b", "team", pod(1000), &pods(2), later)
            .unwrap();
        let over = ledger
            .reserve("c", "team", pod(1000), &pods(2), later)
            .unwrap_err();
        assert_eq!(over.to_string(), "2/2 pods");
        // Another namespace has its own usage.
        ledger
            .reserve("d", "other", pod(1000), &pods(2), later)
            .unwrap();
        // The API server calling again for request a: still one place, even
        // when the namespace is full.
        ledger
            .reserve("a", "team", pod(1000), &pods(2), later)
            .unwrap();
        ledger
            .reserve("a", "team", pod(1000), &pods(1), later)
            .unwrap();
        assert_eq!(ledger.used("team").pods, Quantity::units(2));
        // a's pod shows up: counted instead of reserved.
        ledger.observe(Seen {
            reservation: Some("a"),
            ..seen("uid-a", None, 1000)
        });
        assert_eq!(ledger.used("team").pods, Quantity::units(2));
        assert_eq!(ledger.len(), (1, 2));
        // b never shows up (refused later): its place comes back when it lapses.
        assert_eq!(ledger.expire(now), 0);
        assert_eq!(ledger.expire(later), 2);
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        ledger
            .reserve("c", "team", pod(1000), &pods(2), later)
            .unwrap();
        // Deleted pods stop counting.
        ledger.forget("uid-a");
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        ledger.release("c");
        assert_eq!(ledger.used("team"), Amounts::default());
        assert_eq!(ledger.usage().count(), 0, "no namespace holds anything");
    }

    #[test]
    fn pods_count_unbound_or_on_virtual_nodes_and_while_live() {
        let mut ledger = Ledger::default();
        ledger.set_virtual_nodes(["vk-a".to_string()].into());
        ledger.observe(seen("pending", None, 500));
        ledger.observe(seen("virtual", Some("vk-a"), 1000));
        ledger.observe(seen("real", Some("node-1"), 2000));
        assert_eq!(ledger.used("team").cpu, Quantity(1500));
        assert_eq!(ledger.used("team").pods, Quantity::units(2));
        // Bound to a real node (normalNodePrefer): no longer counted.
        ledger.observe(seen("pending", Some("node-2"), 500));
        assert_eq!(ledger.used("team").cpu, Quantity(1000));
        // Terminal or being deleted: not counted, not tracked.
        ledger.observe(Seen {
            live: false,
            ..seen("virtual", Some("vk-a"), 1000)
        });
        assert_eq!(ledger.used("team"), Amounts::default());
        assert_eq!(ledger.len(), (2, 0));
        // A node turns out to be virtual (its watch caught up): its pods count.
        ledger.set_virtual_nodes(["vk-a".to_string(), "node-1".to_string()].into());
        assert_eq!(ledger.used("team").cpu, Quantity(2000));
        assert!(ledger.is_virtual("node-1"));
        // A new list without "real": forgotten.
        ledger.retain(|uid| uid != "real");
        assert_eq!(ledger.used("team"), Amounts::default());
        assert_eq!(ledger.len(), (1, 0));
    }

    #[test]
    fn counting_again_replaces_the_pods_amounts() {
        let mut ledger = Ledger::default();
        ledger.observe(seen("u", None, 500));
        ledger.observe(seen("u", None, 1500));
        assert_eq!(ledger.used("team").cpu, Quantity(1500));
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        ledger.forget("u");
        ledger.forget("u");
        assert_eq!(ledger.used("team"), Amounts::default());
    }
}
