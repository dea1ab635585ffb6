//! The VirtualCluster operator: reconciles each VirtualCluster into a virtual control plane and
//! a syncer on the host, and reports their state.

pub mod access;
pub mod apply;
pub mod build;
pub mod caches;
pub mod cleanup;
pub mod controller;
pub mod custom;
pub mod error;
pub mod isolation;
pub mod kubeconfig;
pub mod metrics;
pub mod pki;
pub mod settings;
pub mod status;
pub mod turned_off;
pub mod validate;
