//! Readiness gates: a pod's `readinessGates` name condition types that a controller in the
//! virtual cluster sets (load balancer controllers do), and the pod is ready only once they
//! are true. The host copy keeps the gates, and the virtual pod's conditions of those types
//! are written to the copy's status, so the host holds the pod out of its Services' endpoints
//! as the virtual cluster does. The gate conditions stay the virtual pod's own: what comes
//! back from the host never overwrites them.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodReadinessGate, PodStatus};

/// Condition types the kubelet and the control plane set: a gate on one of them would let the
/// virtual cluster write what the host decides (a pod `Ready` whatever its containers), so
/// such a gate is left out of the copy.
const HOST_CONDITIONS: &[&str] = &[
    "Ready",
    "ContainersReady",
    "Initialized",
    "PodScheduled",
    "PodReadyToStartContainers",
    "DisruptionTarget",
    "PodResizePending",
    "PodResizeInProgress",
];

/// The gates of virtual pod spec `gates` that the host copy keeps.
pub fn kept(gates: Option<Vec<PodReadinessGate>>) -> Option<Vec<PodReadinessGate>> {
    let kept: Vec<PodReadinessGate> = gates?
        .into_iter()
        .filter(|g| !HOST_CONDITIONS.contains(&g.condition_type.as_str()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// The condition types of `pod`'s kept gates.
fn gate_types(pod: &Pod) -> Vec<String> {
    kept(pod.spec.as_ref().and_then(|s| s.readiness_gates.clone()))
        .into_iter()
        .flatten()
        .map(|g| g.condition_type)
        .collect()
}

/// Whether `pod` has gates its copy keeps.
pub fn has_gates(pod: &Pod) -> bool {
    !gate_types(pod).is_empty()
}

/// The conditions of `status` of the types in `types`.
fn gate_conditions(status: Option<&PodStatus>, types: &[String]) -> Vec<PodCondition> {
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| types.contains(&c.type_))
        .cloned()
        .collect()
}

/// Host status `host` as the virtual pod `pod` is to show it: its gate conditions are the
/// virtual pod's, whatever the host holds.
pub fn with_virtual_gates(host: Option<PodStatus>, pod: &Pod) -> Option<PodStatus> {
    let types = gate_types(pod);
    if types.is_empty() {
        return host;
    }
    let mut host = host?;
    let conditions = host.conditions.get_or_insert_default();
    conditions.retain(|c| !types.contains(&c.type_));
    conditions.extend(gate_conditions(pod.status.as_ref(), &types));
    Some(host)
}

/// The status patch that gives host copy status `host` the gate conditions of virtual pod
/// `pod`; `None` when it has them.
pub fn gates_update(pod: &Pod, host: Option<&PodStatus>) -> Option<serde_json::Value> {
    let types = gate_types(pod);
    let wanted = gate_conditions(pod.status.as_ref(), &types);
    let live = gate_conditions(host, &types);
    let missing: Vec<&PodCondition> = wanted
        .iter()
        .filter(|w| {
            !live
                .iter()
                .any(|l| l.type_ == w.type_ && l.status == w.status && l.reason == w.reason)
        })
        .collect();
    // Conditions merge by type: only those that changed are sent.
    (!missing.is_empty()).then(|| serde_json::json!({"status": {"conditions": missing}}))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [], "readinessGates": [
                {"conditionType": "target-health.elbv2.k8s.aws/web"},
                {"conditionType": "Ready"},
            ]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn status(conditions: serde_json::Value) -> PodStatus {
        serde_json::from_value(json!({ "conditions": conditions })).unwrap()
    }

    #[test]
    fn gates_on_what_the_host_decides_are_left_out() {
        let kept = kept(pod(json!([])).spec.unwrap().readiness_gates).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].condition_type, "target-health.elbv2.k8s.aws/web");
        assert_eq!(super::kept(Some(vec![])), None);
    }

    #[test]
    fn the_virtual_pods_gate_conditions_reach_the_host_once() {
        let gate = json!({"type": "target-health.elbv2.k8s.aws/web", "status": "True"});
        // A `Ready` the virtual pod shows is the host's, never sent back to it.
        let virtual_pod = pod(json!([gate, {"type": "Ready", "status": "True"}]));
        let host = status(json!([{"type": "Ready", "status": "False"}]));
        assert_eq!(
            gates_update(&virtual_pod, Some(&host)),
            Some(json!({"status": {"conditions": [gate]}}))
        );
        let synced = status(json!([{"type": "Ready", "status": "False"}, gate]));
        assert_eq!(gates_update(&virtual_pod, Some(&synced)), None);
    }

    #[test]
    fn what_comes_back_keeps_the_virtual_gate_conditions() {
        let virtual_pod = pod(json!([
            {"type": "target-health.elbv2.k8s.aws/web", "status": "True"}]));
        let host = status(json!([
            {"type": "Ready", "status": "True"},
            {"type": "target-health.elbv2.k8s.aws/web", "status": "False"}]));
        let shown = with_virtual_gates(Some(host), &virtual_pod).unwrap();
        let conditions: Vec<(String, String)> = shown
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        assert_eq!(
            conditions,
            [
                ("Ready".to_owned(), "True".to_owned()),
                (
                    "target-health.elbv2.k8s.aws/web".to_owned(),
                    "True".to_owned()
                ),
            ]
        );
    }
}
