//! Where profiles and namespace labels come from, outside the pure core.

pub mod cluster;
pub mod file;
pub mod watch;
