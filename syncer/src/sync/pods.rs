//! Pods: the virtual pod runs as its host copy. The host schedules it; the virtual pod is bound
//! to a virtual node of the same name and shows the host pod's status. Deleting either side
//! deletes the other: a host pod deleted by hand deletes its virtual pod, as a lost node would,
//! so its controller replaces it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Binding, EphemeralContainer, ObjectReference, Pod, PodSpec, Secret, ServiceAccount,
};
use kube::api::{ObjectMeta, Patch, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use virtualcluster_crds::{keys, marks, pod_security};

use crate::cached::HostPod;
use crate::context::{Ctx, Key};
use crate::copy;
use crate::patching;
use crate::queue::Next;
use crate::sync::references::{self, Resolved};
use crate::translate::extra;
use crate::translate::pod::{self as translate, BOUND_BY_SYNCER, PodEnv};

mod readiness_gates;
mod spec_update;

/// How long a pod waits for an address the syncer learns from a watch (the API server
/// Service, the DNS Service's copy) before it is looked at again.
const WAIT_FOR_ADDRESS: Duration = Duration::from_secs(1);
/// Lifetime asked for the tokens minted for host pods; they are bound to the virtual pod, so
/// they stop working when it is deleted.
const TOKEN_SECONDS: i64 = 365 * 24 * 3600;

pub async fn reconcile(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    if !ctx.config.sync.to_host.pods.enabled {
        return Ok(Next::Done);
    }
    let pod = ctx.stores.virtual_pods.get(&key.object_ref());
    if pod
        .as_ref()
        .is_some_and(|p| virtualcluster_crds::marks::is_imported(p.annotations()))
    {
        // It stands for a host pod (see `sync::imports`); there is nothing to copy.
        return Ok(Next::Done);
    }
    let copy = ctx.host_copy(&ctx.stores.host_pods, &key);
    let host = ctx.host_api::<Pod>(&key.namespace);
    let virt = ctx.virtual_api::<Pod>(&key.namespace);
    if pod.is_none() {
        ctx.refused_ephemeral.lock().expect("refusals").forget(&key);
    }
    match (pod, copy) {
        (None, None) => Ok(Next::Done),
        (None, Some(copy)) => {
            if copy.metadata.deletion_timestamp.is_none() {
                copy::delete(&host, copy.as_ref(), None).await?;
            }
            Ok(Next::Done)
        }
        (Some(pod), copy) if pod.metadata.deletion_timestamp.is_some() => {
            match copy {
                // The host pod stops with the grace the virtual delete asked for.
                Some(copy) if copy.metadata.deletion_timestamp.is_none() => {
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .map(|s| s.max(0) as u32);
                    copy::delete(&host, copy.as_ref(), grace).await?;
                }
                Some(_) => {}
                // Stopped on the host: nothing keeps the virtual pod (there is no kubelet to
                // confirm it), so it goes at once.
                None => {
                    copy::delete(&virt, pod.as_ref(), Some(0)).await?;
                }
            }
            Ok(Next::Done)
        }
        (Some(pod), Some(copy)) if Ctx::copy_of_uid(copy.as_ref()) != pod.uid().as_deref() => {
            copy::delete(&host, copy.as_ref(), Some(0)).await?;
            Ok(Next::Done)
        }
        (Some(pod), None) => {
            if pod.annotations().contains_key(BOUND_BY_SYNCER) {
                // It ran on the host and its host pod is gone.
                tracing::info!(?key, "host pod gone, deleting the virtual pod");
                copy::delete(&virt, pod.as_ref(), Some(0)).await?;
                return Ok(Next::Done);
            }
            create(&ctx, &key, &pod.pod()).await
        }
        (Some(pod), Some(copy)) => update(&ctx, &key, &pod.pod(), &copy).await,
    }
}

async fn create(ctx: &Ctx, key: &Key, pod: &Pod) -> anyhow::Result<Next> {
    let Some(api_server_ip) = ctx.api_server_ip() else {
        tracing::debug!(?key, "waiting for the API server Service's address");
        return Ok(Next::After(WAIT_FOR_ADDRESS));
    };
    let dns_ip = ctx.dns_ip();
    if dns_ip.is_none() && needs_cluster_dns(pod) && ctx.config.sync.to_host.services.enabled {
        tracing::debug!(?key, "waiting for the DNS Service's address");
        return Ok(Next::After(WAIT_FOR_ADDRESS));
    }
    // Every object the host pod names must be this instance's own on the host.
    if let Some(first) = translate::unrenamable(pod).into_iter().next() {
        refuse(ctx, pod, REFERENCE_REFUSED, first).await?;
        return Ok(Next::Done);
    }
    let mut pod = pod.clone();
    match references::resolve(ctx, key, &mut pod).await? {
        Resolved::Ready => {}
        Resolved::Wait(delay) => return Ok(Next::After(delay)),
        Resolved::Refused(note) => {
            refuse(ctx, &pod, REFERENCE_REFUSED, note).await?;
            // The foreign object may go, and this instance's copy take its name.
            return Ok(Next::After(copy::CLASH_RECHECK));
        }
    }
    let pod = &pod;
    let spec = pod.spec.as_ref();
    // The pod's ServiceAccount and PriorityClass by their host names, when those are synced;
    // the host's own critical classes are never a tenant's.
    let service_account = ctx.opt_in.service_accounts.as_ref().map(|_| {
        let account = spec.and_then(|s| s.service_account_name.as_deref());
        ctx.target
            .host_name(&key.namespace, account.unwrap_or("default"))
    });
    let priority_class = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .filter(|class| !extra::is_system_priority_class(class))
        .and_then(|class| {
            ctx.opt_in
                .priority_classes
                .as_ref()
                .map(|_| extra::priority_class_name(&ctx.target, class))
        });
    let policy = &ctx.config.policy;
    let tokens = mint_tokens(ctx, key, pod).await?;
    let token_secret = token_secret(ctx, key, pod);
    if let Some(name) = &token_secret {
        match write_tokens(ctx, key, pod, name, &tokens).await? {
            Next::Done => {}
            next => return Ok(next),
        }
    }
    let env = PodEnv {
        target: &ctx.target,
        options: &ctx.config.sync.to_host.pods,
        dns_ip: dns_ip.as_deref(),
        api_server_ip: &api_server_ip,
        tokens: &tokens,
        token_secret: token_secret.as_deref(),
        service_account,
        priority_class,
        policy,
    };
    let mut desired = translate::host_pod(pod, &env);
    // A pod is made without ephemeral containers (the API refuses them on create); any the
    // virtual pod has by now are added next, as in `update`.
    desired.spec.as_mut().map(|s| s.ephemeral_containers.take());
    let Some(desired) = patched(ctx, pod, desired).await? else {
        return Ok(Next::Done);
    };
    // The final object is held to the instance's level: a pod the virtual API server let
    // through (a namespace labelled less strictly, or admitted before) never runs.
    if let Some(violations) = security_violations(ctx, &desired) {
        let note = format!(
            "the pod breaks the {} Pod Security Standard and does not run on the host: \
             {violations}",
            policy.pod_security
        );
        refuse(ctx, pod, POD_SECURITY_REFUSED, note).await?;
        return Ok(Next::Done);
    }
    copy::create(ctx, &ctx.host_api::<Pod>(&key.namespace), &desired, pod).await
}

/// Host pod `desired` with the instance's pod patches applied, held to what the syncer decides
/// for a host pod (see [`crate::held`]), and marked with the containers they
/// renamed; `None` when the patched pod must not run (its owner is told why).
async fn patched(ctx: &Ctx, pod: &Pod, desired: Pod) -> anyhow::Result<Option<Pod>> {
    if !ctx.patches.has(PATCHES) {
        return Ok(Some(desired));
    }
    let outcome = patching::apply(ctx, PATCHES, pod, None, desired.clone());
    outcome.report(ctx, pod).await;
    let mut patched = match outcome.object {
        Ok(patched) => patched,
        Err(note) => {
            refuse(ctx, pod, REFERENCE_REFUSED, note).await?;
            return Ok(None);
        }
    };
    let renamed = translate::renamed_containers(&desired, &patched);
    if !renamed.is_empty() {
        patched.metadata.annotations.get_or_insert_default().insert(
            keys::CONTAINER_NAMES.into(),
            serde_json::to_string(&renamed)?,
        );
    }
    Ok(Some(patched))
}

/// Where pod patches sit under `spec.sync`.
const PATCHES: &str = "toHost.pods";

/// What `desired` (a host pod) breaks of the instance's Pod Security Standard, in words, if
/// anything.
fn security_violations(ctx: &Ctx, desired: &Pod) -> Option<String> {
    let violations = pod_security::check(ctx.config.policy.pod_security, desired);
    (!violations.is_empty()).then(|| {
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Adds to host copy `copy` the ephemeral containers (`kubectl debug`) virtual pod `pod` has
/// and it lacks, through its `ephemeralcontainers` subresource: renamed like the pod's other
/// containers, their references held to the same rules, the whole pod then held to the
/// instance's Pod Security Standard. Refused: a Warning Event on the virtual pod, and the
/// container never starts. Each is added on its own, so one refused does not hold back those
/// after it (an ephemeral container cannot be taken out of the virtual pod).
async fn add_ephemeral_containers(
    ctx: &Ctx,
    key: &Key,
    pod: &Pod,
    copy: &HostPod,
    env: &PodEnv<'_>,
) -> anyhow::Result<Next> {
    let Some(spec) = &pod.spec else {
        return Ok(Next::Done);
    };
    let uid = pod.uid().unwrap_or_default();
    let refused = ctx
        .refused_ephemeral
        .lock()
        .expect("refusals")
        .of(key, &uid);
    let (mut added, new): (Vec<_>, Vec<_>) = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter(|c| !refused.contains(&c.name))
        .cloned()
        .partition(|c| copy.ephemeral_containers.contains(&c.name));
    let mut next = Next::Done;
    for container in new {
        match add_ephemeral_container(ctx, key, pod, copy, env, &added, container.clone()).await? {
            Added::Yes => added.push(container),
            Added::Refused => {
                ctx.refused_ephemeral
                    .lock()
                    .expect("refusals")
                    .add(key, &uid, container.name)
            }
            Added::Later(after) => next = after,
        }
    }
    Ok(next)
}

/// The ephemeral containers refused per virtual pod (of that UID), until the pod is gone: a
/// refused one stays in the virtual pod for good, and is not tried (nor reported) again on
/// each of the pod's updates. A restarted syncer reports each once more.
#[derive(Debug, Default)]
pub struct RefusedEphemeral(
    std::collections::HashMap<Key, (String, std::collections::BTreeSet<String>)>,
);

impl RefusedEphemeral {
    fn of(&self, key: &Key, uid: &str) -> std::collections::BTreeSet<String> {
        match self.0.get(key) {
            Some((of, names)) if of == uid => names.clone(),
            _ => Default::default(),
        }
    }

    fn add(&mut self, key: &Key, uid: &str, name: String) {
        let entry = self.0.entry(key.clone()).or_default();
        if entry.0 != uid {
            *entry = (uid.to_owned(), Default::default());
        }
        entry.1.insert(name);
    }

    fn forget(&mut self, key: &Key) {
        self.0.remove(key);
    }
}

enum Added {
    Yes,
    Refused,
    Later(Next),
}

/// Adds ephemeral container `container` of virtual pod `pod` to host copy `copy`, which has
/// `added` already (see [`add_ephemeral_containers`]).
async fn add_ephemeral_container(
    ctx: &Ctx,
    key: &Key,
    pod: &Pod,
    copy: &HostPod,
    env: &PodEnv<'_>,
    added: &[EphemeralContainer],
    container: EphemeralContainer,
) -> anyhow::Result<Added> {
    let name = container.name.clone();
    // Only the new container's references are resolved: those of the running pod (its
    // volumes, its ServiceAccount) were when it was made, and what they name may have gone
    // since.
    let mut probe = Pod {
        metadata: pod.metadata.clone(),
        spec: Some(PodSpec {
            ephemeral_containers: Some(vec![container]),
            ..PodSpec::default()
        }),
        status: None,
    };
    match references::resolve(ctx, key, &mut probe).await? {
        Resolved::Ready => {}
        Resolved::Wait(delay) => return Ok(Added::Later(Next::After(delay))),
        Resolved::Refused(note) => {
            copy::warn(ctx, pod, REFERENCE_REFUSED, note).await;
            return Ok(Added::Later(Next::After(copy::CLASH_RECHECK)));
        }
    }
    let resolved_one = probe
        .spec
        .and_then(|s| s.ephemeral_containers)
        .unwrap_or_default();
    let mut resolved = pod.clone();
    if let Some(spec) = resolved.spec.as_mut() {
        spec.ephemeral_containers = Some(added.iter().cloned().chain(resolved_one).collect());
    }
    let desired = translate::host_pod(&resolved, env);
    if let Some(violations) = security_violations(ctx, &desired) {
        let note = format!(
            "the ephemeral container {name} is not added: with it the pod would break the {} \
             Pod Security Standard: {violations}",
            ctx.config.policy.pod_security
        );
        copy::warn(ctx, pod, POD_SECURITY_REFUSED, note).await;
        return Ok(Added::Refused);
    }
    let this: Vec<_> = desired
        .spec
        .into_iter()
        .flat_map(|s| s.ephemeral_containers.unwrap_or_default())
        .filter(|c| c.name == name)
        .collect();
    let patch = serde_json::json!({"spec": {"ephemeralContainers": this}});
    let host = ctx.host_api::<Pod>(&key.namespace);
    match host
        .patch_subresource(
            "ephemeralcontainers",
            &copy.name_any(),
            &copy::merge_params(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(Added::Yes),
        // The host refuses what it cannot run (a name taken, a field it rejects): the tenant
        // is told, in the virtual cluster's names. The host refusing the syncer itself (401,
        // 403, 429) or failing is retried, and logged.
        Err(kube::Error::Api(status))
            if (400..500).contains(&status.code) && ![401, 403, 429].contains(&status.code) =>
        {
            let host_namespace = copy.namespace().unwrap_or_default();
            let note = format!(
                "the ephemeral container {name} is not added on the host: {}",
                crate::translate::in_virtual_names(
                    &status.message,
                    (&host_namespace, &copy.name_any()),
                    (&key.namespace, &key.name),
                )
            );
            copy::warn(ctx, pod, "EphemeralContainerRefused", note).await;
            Ok(Added::Refused)
        }
        Err(err) => Err(err.into()),
    }
}

/// Event reason and pod condition reason of a pod refused for its references.
pub const REFERENCE_REFUSED: &str = "ReferenceNotAllowed";
/// Event reason and pod condition reason of a pod refused for its security settings.
pub const POD_SECURITY_REFUSED: &str = "PodSecurityViolation";

/// Tells the tenant why virtual pod `pod` has no host pod: a Warning Event, and the pod's own
/// status (unschedulable, with the reason) unless it says so already.
async fn refuse(ctx: &Ctx, pod: &Pod, reason: &str, note: String) -> anyhow::Result<()> {
    copy::warn(ctx, pod, reason, note.clone()).await;
    let shown = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(note.as_str())
        });
    if !shown {
        let status = serde_json::json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": note,
                "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
            }],
        });
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        copy::write_virtual_status(&ctx.virtual_api::<Pod>(namespace), &pod.name_any(), &status)
            .await?;
    }
    Ok(())
}

fn needs_cluster_dns(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    match spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst")
    {
        "ClusterFirst" => spec.and_then(|s| s.host_network) != Some(true),
        "ClusterFirstWithHostNet" => true,
        _ => false,
    }
}

/// The host Secret that holds the tokens of virtual pod `pod` (at `key`), when they are kept in
/// Secrets (`useSecretsForSATokens`) and it projects any.
fn token_secret(ctx: &Ctx, key: &Key, pod: &Pod) -> Option<String> {
    (ctx.config.sync.to_host.pods.use_secrets_for_sa_tokens
        && !translate::token_requests(pod).is_empty())
    .then(|| translate::token_secret_name(&ctx.target.host_name(&key.namespace, &key.name)))
}

/// Writes `tokens` into the pod's token Secret `name` before its host pod is made. A Secret of
/// that name that is not this pod's token Secret is never touched: the pod waits, with the clash
/// reported.
async fn write_tokens(
    ctx: &Ctx,
    key: &Key,
    pod: &Pod,
    name: &str,
    tokens: &[String],
) -> anyhow::Result<Next> {
    let uid = pod.uid().unwrap_or_default();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(marks::copy_labels(&ctx.target.instance, &key.namespace)),
            annotations: Some(BTreeMap::from([(keys::TOKENS_OF.to_owned(), uid.clone())])),
            ..Default::default()
        },
        string_data: Some(
            tokens
                .iter()
                .enumerate()
                .map(|(i, token)| (translate::token_key(i), token.clone()))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let api: Api<Secret> = ctx.host_api(&key.namespace);
    match api.create(&copy::post_params(), &secret).await {
        Ok(_) => return Ok(Next::Done),
        Err(err) if copy::is_status(&err, 409) => {}
        Err(err) => return Err(err.into()),
    }
    match api.get_opt(name).await? {
        // This instance's token Secret of the same host pod name (not its copy of a virtual
        // Secret, which never has the annotation): left by an attempt that stopped before its
        // pod was made, or by the pod this one replaces (a StatefulSet's), whose host pod goes.
        // Taken over, and no longer owned by that host pod.
        Some(live)
            if marks::is_copy_of(&ctx.target.instance, live.labels())
                && live.annotations().contains_key(keys::TOKENS_OF) =>
        {
            let patch = serde_json::json!({
                "metadata": {
                    "uid": live.uid(),
                    "annotations": {keys::TOKENS_OF: uid},
                    "ownerReferences": null,
                },
                "stringData": secret.string_data,
            });
            match api
                .patch(name, &copy::merge_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(Next::Done),
                // Gone meanwhile: made anew on the next look.
                Err(err) if copy::is_status(&err, 404) || copy::is_status(&err, 409) => {
                    Ok(Next::After(Duration::from_millis(200)))
                }
                Err(err) => Err(err.into()),
            }
        }
        Some(_) => {
            let note = format!(
                "host Secret {name}, where this pod's service-account tokens go, exists and is \
                 not this pod's; the pod does not run on the host until it is gone"
            );
            copy::warn(ctx, pod, "TokenSecretClash", note).await;
            Ok(Next::After(copy::CLASH_RECHECK))
        }
        None => Ok(Next::After(Duration::from_millis(200))),
    }
}

/// Makes host pod `copy` the owner of its token Secret `name`, so that the Secret goes with it
/// (whoever deletes the pod); read from the cache, written once.
async fn own_tokens(ctx: &Ctx, key: &Key, name: &str, copy: &HostPod) -> anyhow::Result<()> {
    let host_namespace = ctx.target.host_namespace(&key.namespace);
    let Some(secret) = ctx
        .stores
        .host_secrets
        .get(&ObjectRef::new(name).within(&host_namespace))
    else {
        return Ok(());
    };
    let uid = copy.uid().unwrap_or_default();
    if secret.owner_references().iter().any(|o| o.uid == uid)
        || secret
            .annotations()
            .get(keys::TOKENS_OF)
            .map(String::as_str)
            != Ctx::copy_of_uid(copy)
    {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {
            "uid": secret.uid(),
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": copy.name_any(), "uid": uid,
            }],
        },
    });
    Api::<Secret>::namespaced(ctx.host.clone(), &host_namespace)
        .patch(name, &copy::merge_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Tokens of the pod's virtual ServiceAccount, one per token its volumes project, bound to the
/// virtual pod.
async fn mint_tokens(ctx: &Ctx, key: &Key, pod: &Pod) -> anyhow::Result<Vec<String>> {
    let requests = translate::token_requests(pod);
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = ctx.virtual_api(&key.namespace);
    let mut tokens = Vec::with_capacity(requests.len());
    for request in requests {
        let token_request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: Some(TokenRequestSpec {
                audiences: request.audience.map(|a| vec![a]),
                attestations: None,
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            status: None,
        };
        let minted = api
            .create_token_request(&account, &PostParams::default(), &token_request)
            .await?;
        tokens.push(
            minted
                .status
                .and_then(|s| s.token)
                .context("the virtual API server minted no token")?,
        );
    }
    Ok(tokens)
}

/// The virtual pod and its running host copy: labels, annotations and what of the spec can
/// change follow the virtual pod; the virtual pod is bound where the host scheduled the copy
/// and shows its status.
async fn update(ctx: &Ctx, key: &Key, pod: &Pod, copy: &HostPod) -> anyhow::Result<Next> {
    // Little of a pod's spec can change (see `spec_update`); its labels and annotations can.
    // The tokens stay those the copy was made with.
    let tokens: Vec<String> = (0..translate::token_requests(pod).len())
        .map(|i| {
            copy.annotations()
                .get(&translate::token_annotation(i))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let api_server_ip = ctx.api_server_ip().unwrap_or_default();
    let token_secret = token_secret(ctx, key, pod);
    if let Some(name) = &token_secret {
        own_tokens(ctx, key, name, copy).await?;
    }
    let env = PodEnv {
        target: &ctx.target,
        options: &ctx.config.sync.to_host.pods,
        dns_ip: None,
        api_server_ip: &api_server_ip,
        tokens: &tokens,
        token_secret: token_secret.as_deref(),
        service_account: None,
        priority_class: None,
        policy: &ctx.config.policy,
    };
    let mut desired = translate::host_pod(pod, &env);
    // What patches see of the host copy; built only for them (it decodes the status).
    let live = || Pod {
        metadata: copy.metadata.clone(),
        spec: None,
        status: copy.status(),
    };
    // Only patches of its metadata matter here; those of the spec, to `spec_update`.
    if ctx.patches.touches(PATCHES, "metadata", false) {
        let live = live();
        let (metadata, errors) = patching::apply_to_metadata(ctx, PATCHES, pod, &live, &desired);
        patching::report(ctx, pod, &errors).await;
        desired.metadata = metadata;
    }
    if translate::metadata_differs(&desired, copy) {
        let patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": copy.name_any(),
                "uid": copy.uid(),
                "labels": desired.metadata.labels,
                "annotations": desired.metadata.annotations,
            }
        });
        copy::patch_apply(
            &ctx.host_api::<Pod>(&key.namespace),
            &copy.name_any(),
            &patch,
        )
        .await?;
    }
    spec_update::run(ctx, key, pod, copy, &desired).await?;
    let virt = ctx.virtual_api::<Pod>(&key.namespace);
    let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    match (bound_to, copy.node_name.clone()) {
        // The status follows once the bound pod comes back through the watch.
        (None, Some(node)) => bind(ctx, &virt, &pod.name_any(), node).await?,
        // Not scheduled on the host yet.
        (None, None) => {}
        (Some(_), _) => {
            let renamed = translate::container_names(copy.annotations());
            // Only the status comes back, so only reverse patches of the status run.
            let reversed = ctx
                .patches
                .touches(PATCHES, "status", true)
                .then(|| patching::reverse(ctx, PATCHES, pod, &live()))
                .flatten();
            let host_status = match reversed {
                Some(reversed) => reversed.status,
                None => copy.status(),
            };
            let host_status = translate::with_virtual_gates(host_status, pod);
            if let Some(status) =
                translate::virtual_status(host_status, pod.status.as_ref(), &renamed)
            {
                copy::write_virtual_status(&virt, &pod.name_any(), &status).await?;
            }
        }
    }
    readiness_gates::run(ctx, key, pod, copy).await?;
    // Last: the pod's binding and status do not wait on its debug containers.
    add_ephemeral_containers(ctx, key, pod, copy, &env).await
}

/// Binds virtual pod `name` to virtual node `node`, which it makes first: the virtual cluster
/// deletes pods bound to nodes it does not have.
pub async fn bind(ctx: &Ctx, virt: &Api<Pod>, name: &str, node: String) -> anyhow::Result<()> {
    crate::sync::nodes::ensure(ctx, &node).await?;
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some([(BOUND_BY_SYNCER.to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node),
            ..Default::default()
        },
    };
    match virt
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            name,
            &copy::post_params(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Bound meanwhile, or gone: the watch tells.
        Err(err) if copy::is_status(&err, 409) || copy::is_status(&err, 404) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::RefusedEphemeral;
    use crate::context::Key;

    #[test]
    fn refusals_hold_for_the_pod_of_that_uid_until_it_goes() {
        let mut refused = RefusedEphemeral::default();
        let web = Key::new("shop", "web");
        refused.add(&web, "uid-1", "netadmin".into());
        assert!(refused.of(&web, "uid-1").contains("netadmin"));
        // A pod made again under the name is another pod.
        assert!(refused.of(&web, "uid-2").is_empty());
        refused.add(&web, "uid-2", "other".into());
        assert_eq!(refused.of(&web, "uid-2").len(), 1);
        refused.forget(&web);
        assert!(refused.of(&web, "uid-2").is_empty());
    }
}
