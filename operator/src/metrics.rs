//! Prometheus metrics of the operator: reconciles, errors by a bounded set of reasons, reconcile
//! durations, and instances by phase.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use virtualcluster_crds::v1alpha1::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

const PHASES: [Phase; 5] = [
    Phase::Pending,
    Phase::Provisioning,
    Phase::Ready,
    Phase::Failed,
    Phase::Deleting,
];

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Provisioning => "Provisioning",
        Phase::Ready => "Ready",
        Phase::Failed => "Failed",
        Phase::Deleting => "Deleting",
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    instances: Family<PhaseLabels, Gauge>,
    /// The last phase of each instance (namespace/name), from which `instances` is counted.
    phases: Mutex<HashMap<String, Phase>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("virtualcluster_operator");
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles of VirtualClusters",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a VirtualCluster took",
            duration.clone(),
        );
        let instances = Family::<PhaseLabels, Gauge>::default();
        registry.register("instances", "VirtualClusters by phase", instances.clone());
        for phase in PHASES {
            instances
                .get_or_create(&PhaseLabels {
                    phase: phase_name(phase),
                })
                .set(0);
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            instances,
            phases: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one reconcile that took `took` and failed with `error_reason`, if it failed.
    pub fn reconciled(&self, took: Duration, error_reason: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.errors.get_or_create(&ErrorLabels { reason }).inc();
        }
    }

    /// Records the phase of instance `key`; `None` once it is gone.
    pub fn set_phase(&self, key: String, phase: Option<Phase>) {
        let mut phases = self.phases.lock().expect("metrics lock");
        let old = match phase {
            Some(phase) => phases.insert(key, phase),
            None => phases.remove(&key),
        };
        // Moved from one phase to another: one gauge down, one up; nothing counted again.
        if old == phase {
            return;
        }
        let gauge = |p: Phase| {
            self.instances.get_or_create(&PhaseLabels {
                phase: phase_name(p),
            })
        };
        if let Some(old) = old {
            gauge(old).dec();
        }
        if let Some(new) = phase {
            gauge(new).inc();
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        virtualcluster_crds::runtime::http::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_format() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(5), Some("conflict"));
        m.set_phase("a/x".into(), Some(Phase::Ready));
        m.set_phase("a/y".into(), Some(Phase::Ready));
        m.set_phase("a/z".into(), Some(Phase::Failed));
        m.set_phase("a/z".into(), None);
        // The same phase again counts once; a move leaves the old phase.
        m.set_phase("a/x".into(), Some(Phase::Ready));
        m.set_phase("a/w".into(), Some(Phase::Provisioning));
        m.set_phase("a/w".into(), Some(Phase::Ready));
        let text = m.encode();
        assert!(
            text.contains("virtualcluster_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains("virtualcluster_operator_reconcile_errors_total{reason=\"conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("virtualcluster_operator_instances{phase=\"Ready\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("virtualcluster_operator_instances{phase=\"Failed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("virtualcluster_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
