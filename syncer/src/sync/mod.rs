//! One reconcile per synced kind. Each is level-based: it reads both caches and makes the host
//! copy (and what flows back) match the virtual object, whatever happened before.

pub mod config;
pub mod custom;
pub mod events;
pub mod extra;
pub mod fake_volumes;
pub mod imports;
pub mod namespaces;
pub mod nodes;
pub mod pods;
pub mod references;
pub mod services;
pub mod storage;
