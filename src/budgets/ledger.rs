//! What each namespace holds on virtual nodes: the pods counted (on, or
//! headed to, a virtual node; neither terminal nor being deleted), and the
//! admissions in flight, reserved at once so that concurrent admissions
//! cannot both take the last place. A reservation ends when its pod is
//! counted, or after its time to live (a pod we admitted may still be
//! refused by a later admission step). Pure: time is passed in.

use std::collections::HashMap;
use std::time::Instant;

use super::{Amounts, Limits, Over};

/// Usage per namespace, from counted pods and reservations.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Counted pods by uid: their namespace and amounts.
    pods: HashMap<String, (String, Amounts)>,
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

    /// Counts pod `uid` (or counts it again, its amounts changed), ending
    /// the reservation `reservation` it was admitted under, if any.
    pub fn count(
        &mut self,
        uid: &str,
        namespace: &str,
        amounts: Amounts,
        reservation: Option<&str>,
    ) {
        if let Some(id) = reservation {
            self.release(id);
        }
        self.forget(uid);
        self.add(namespace, &amounts);
        self.pods
            .insert(uid.to_string(), (namespace.to_string(), amounts));
    }

    /// Stops counting pod `uid` (deleted, terminal, or no longer on a virtual node).
    pub fn forget(&mut self, uid: &str) {
        if let Some((namespace, amounts)) = self.pods.remove(uid) {
            self.subtract(&namespace, &amounts);
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

    /// Pods counted, reservations in flight.
    pub fn len(&self) -> (usize, usize) {
        (self.pods.len(), self.reservations.len())
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
        ledger.count("uid-a", "team", pod(1000), Some("a"));
        assert_eq!(ledger.used("team").pods, Quantity::units(2));
        assert_eq!(ledger.len(), (1, 2));
        // b never shows up (refused later): its place comes back when it lapses.
        assert_eq!(ledger.expire(now), 0);
        assert_eq!(ledger.expire(later), 2);
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        ledger
            .reserve("c", "team", pod(1000), &pods(2), later)
            .unwrap();
        // Deleted or terminal pods stop counting.
        ledger.forget("uid-a");
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        ledger.release("c");
        assert_eq!(ledger.used("team"), Amounts::default());
    }

    #[test]
    fn counting_again_replaces_the_pods_amounts() {
        let mut ledger = Ledger::default();
        ledger.count("u", "team", pod(500), None);
        ledger.count("u", "team", pod(1500), None);
        assert_eq!(ledger.used("team").cpu, Quantity(1500));
        assert_eq!(ledger.used("team").pods, Quantity::units(1));
        // Moved namespaces cannot happen, but a recount is whole.
        ledger.forget("u");
        ledger.forget("u");
        assert_eq!(ledger.used("team"), Amounts::default());
    }
}
