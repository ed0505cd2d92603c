//! An immutable snapshot that a source publishes and the request path
//! reads: readers get an `Arc` to the current value, writers swap it whole.

use std::sync::{Arc, RwLock};

/// The current value of something that changes as a whole (the profile).
#[derive(Debug)]
pub struct Published<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Published<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current value; stays valid however often it is replaced.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the value for every later [`get`](Self::get).
    pub fn publish(&self, value: T) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
    }
}
