//! What applying patches costs, without the API servers: the pod patches of `bench-syncer
//! --patches` (one of each type) applied to a one-container pod, all of them and then only
//! those of its metadata (what a running pod's update applies), in microseconds per object.
//!
//!   cargo run --release -p virtualcluster-crds --example patch_cost

use serde_json::json;
use std::time::Instant;
use virtualcluster_crds::patches::{Patches, Scope};
use virtualcluster_crds::v1alpha1::Sync;

fn main() {
    let mut sync: Sync = serde_json::from_value(json!({"toHost": {"pods": {"patches": [
        {"path": "spec.containers[*].name", "expression": "'p-' + value", "reverseExpression": "value.slice(2)"},
        {"path": "metadata.labels[\"app\"]", "expression": "valueExists ? value + '-patched' : 'new'"},
        {"path": "metadata.labels[\"tier\"]", "expression": "context.virtualObject.metadata?.labels?.['app'] ? 'bench' : null"},
        {"path": "metadata.annotations[\"encoded\"]", "expression": "btoa(value)"},
        {"path": "metadata.annotations[\"config-ref\"]", "reference": {"apiVersion": "v1", "kind": "ConfigMap"}},
    ]}}})).unwrap();
    sync.to_host.pods.enabled = true;
    let vcluster = json!({"name": "vc", "namespace": "ns", "config": {"sync": sync}});
    let patches = Patches::compile_for(&sync, vcluster.clone()).unwrap();
    let pod = json!({"metadata": {"name": "p", "namespace": "bench", "labels": {"app": "bench"}, "annotations": {"encoded": "value", "config-ref": "settings"}},
        "spec": {"containers": [{"name": "app", "image": "pause", "env": [{"name": "A", "value": "b"}]}], "volumes": [{"name": "x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}});
    let rename = |r: &virtualcluster_crds::patches::Reference| {
        Some(("h".to_string(), format!("{}-x", r.name)))
    };
    for only in [None, Some("metadata")] {
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            let mut host = pod.clone();
            let scope = Scope {
                namespace: "bench",
                virtual_object: Some(&pod),
                host_object: None,
            };
            let e = patches.apply("toHost.pods", only, &mut host, &scope, &rename);
            assert!(e.is_empty(), "{e:?}");
        }
        println!(
            "{only:?}: {:.1} us per apply",
            t.elapsed().as_micros() as f64 / n as f64
        );
    }
    // The JSON of `context.vcluster`, for scale: it is converted once, when the patches are
    // compiled.
    let t = Instant::now();
    for _ in 0..5000 {
        let v = serde_json::to_string(&vcluster).unwrap();
        std::hint::black_box(v);
    }
    println!(
        "vcluster to_string: {:.1} us",
        t.elapsed().as_micros() as f64 / 5000.0
    );
}
