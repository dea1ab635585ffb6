//! Prometheus metrics of the syncer, per work queue (one per kind it syncs, a fixed set):
//! reconciles, failed reconciles, reconcile durations and keys waiting.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// A kubelet API request: what it asked and the status it got.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeletLabels {
    pub call: &'static str,
    pub code: u16,
}

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to about 16 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 15))
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<QueueLabels, Counter>,
    errors: Family<QueueLabels, Counter>,
    duration: Family<QueueLabels, Histogram, Buckets>,
    depth: Family<QueueLabels, Gauge>,
    /// Host watches following the namespaces the instance holds (one per kind and namespace).
    pub host_watches: Gauge,
    /// Requests to the kubelet API of the virtual nodes.
    pub kubelet_requests: Family<KubeletLabels, Counter>,
}

/// The metrics of one work queue, resolved once so that counting takes no lookup.
#[derive(Clone)]
pub struct QueueMetrics {
    pub reconciles: Counter,
    pub errors: Counter,
    pub duration: Histogram,
    pub depth: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("virtualcluster_syncer");
        let reconciles = Family::<QueueLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles, by work queue",
            reconciles.clone(),
        );
        let errors = Family::<QueueLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles (retried with backoff), by work queue",
            errors.clone(),
        );
        let duration = Family::new_with_constructor(Buckets);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by work queue",
            duration.clone(),
        );
        let depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Keys waiting to be reconciled, by work queue",
            depth.clone(),
        );
        let host_watches = Gauge::default();
        registry.register(
            "host_watches",
            "Host watches following the namespaces the instance holds",
            host_watches.clone(),
        );
        let kubelet_requests = Family::<KubeletLabels, Counter>::default();
        registry.register(
            "kubelet_requests",
            "Requests to the kubelet API of the virtual nodes, by call and status code",
            kubelet_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            depth,
            host_watches,
            kubelet_requests,
        }
    }
}

impl Metrics {
    /// The metrics of work queue `queue`, shown (at zero) from now on.
    pub fn queue(&self, queue: &'static str) -> QueueMetrics {
        let labels = QueueLabels { queue };
        QueueMetrics {
            reconciles: self.reconciles.get_or_create(&labels).clone(),
            errors: self.errors.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            depth: self.depth.get_or_create(&labels).clone(),
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
    fn queues_show_in_the_text_format() {
        let metrics = Metrics::default();
        let pods = metrics.queue("pods");
        let _events = metrics.queue("events");
        pods.reconciles.inc();
        pods.reconciles.inc();
        pods.errors.inc();
        pods.duration.observe(0.004);
        pods.depth.set(7);
        let text = metrics.encode();
        for line in [
            "virtualcluster_syncer_reconciles_total{queue=\"pods\"} 2",
            "virtualcluster_syncer_reconcile_errors_total{queue=\"pods\"} 1",
            "virtualcluster_syncer_reconcile_duration_seconds_count{queue=\"pods\"} 1",
            "virtualcluster_syncer_queue_depth{queue=\"pods\"} 7",
            "virtualcluster_syncer_reconciles_total{queue=\"events\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
