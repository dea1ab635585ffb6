//! Services and the Endpoints of Services without selector. The host allocates a copy's
//! address; the virtual Service is then recreated with that address (ClusterIPs cannot change
//! in place), so a name virtual DNS resolves routes on the host. The virtual `kubernetes`
//! Service gets the address of the instance's API server Service instead of a copy.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::Patch;
use kube::{Api, ResourceExt};
use virtualcluster_crds::keys;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;
use crate::translate::service::{
    API_SERVICE, cluster_ip, endpoint_allowed, has_selector, host_endpoints, host_service,
    is_headless, left_out, refusal, virtual_status, with_cluster_ip,
};

/// Annotation on a host copy while its virtual Service is recreated with the copy's address:
/// the Service to create (JSON). A syncer stopped between deleting and creating the virtual
/// Service finds it here and finishes, instead of taking the Service for deleted.
pub const RECREATE: &str = "virtualcluster.dev/recreate-virtual";

/// How long before an address clash in the virtual cluster is looked at again.
const ADDRESS_RECHECK: Duration = Duration::from_secs(30);

fn is_api_service(key: &Key) -> bool {
    (key.namespace.as_str(), key.name.as_str()) == API_SERVICE
}

pub async fn reconcile(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    if !ctx.config.sync.to_host.services.enabled {
        return Ok(Next::Done);
    }
    let virt = ctx.virtual_api::<Service>(&key.namespace);
    let service = ctx.stores.virtual_services.get(&key.object_ref());
    if is_api_service(&key) {
        return match (service, ctx.api_server_ip()) {
            (Some(service), Some(ip)) if cluster_ip(&service) != Some(ip.as_str()) => {
                tracing::info!(%ip, "giving the virtual `kubernetes` Service the API server's address");
                // Only the Service this reconcile saw is replaced; if it was replaced
                // already, the watch brings the new one.
                if copy::delete(&virt, service.as_ref(), None).await? {
                    create_virtual(&virt, &with_cluster_ip(&service, &ip)).await?;
                }
                Ok(Next::Done)
            }
            (_, None) => Ok(Next::After(Duration::from_secs(1))),
            _ => Ok(Next::Done),
        };
    }
    let copy = ctx.host_copy(&ctx.stores.host_services, &key);
    let host = ctx.host_api::<Service>(&key.namespace);

    // A recreate that was under way.
    if let Some(copy) = &copy
        && let Some(pending) = copy.annotations().get(RECREATE)
    {
        match &service {
            None => {
                let replacement: Service = serde_json::from_str(pending)?;
                create_virtual(&virt, &replacement).await?;
                return Ok(Next::Done);
            }
            Some(service) if Ctx::copy_of_uid(copy.as_ref()) != service.uid().as_deref() => {
                // The recreated Service: the copy is now its copy.
                let patch = serde_json::json!({"metadata": {
                    "uid": copy.uid(),
                    "annotations": {keys::VIRTUAL_UID: service.uid(), RECREATE: null},
                }});
                host.patch(
                    &copy.name_any(),
                    &copy::merge_params(),
                    &Patch::Merge(&patch),
                )
                .await?;
                return Ok(Next::Done);
            }
            Some(_) => {}
        }
    }

    // A Service the platform does not allow is not synced (an earlier copy goes).
    let policy = &ctx.config.policy;
    let refused = service.as_deref().and_then(|s| refusal(s, policy));
    if let (Some(service), Some(why)) = (&service, &refused) {
        copy::warn(&ctx, service.as_ref(), "ServiceTypeNotAllowed", why.clone()).await;
    } else if let Some(note) = service.as_deref().and_then(left_out) {
        copy::warn(
            &ctx,
            service.as_deref().unwrap(),
            "ExternalIPsNotSynced",
            note,
        )
        .await;
    }
    let wanted = service.as_deref().filter(|_| refused.is_none());
    let next = copy::sync(
        &ctx,
        "toHost.services",
        &ctx.host_api(&key.namespace),
        wanted,
        copy.as_deref(),
        |s| host_service(s, &ctx.target),
    )
    .await?;
    if refused.is_some() {
        return Ok(next);
    }
    ctx.queues.endpoints.add(key.clone());
    let (Some(service), Some(copy)) = (service, copy) else {
        return Ok(next);
    };
    if Ctx::copy_of_uid(copy.as_ref()) != service.uid().as_deref() {
        return Ok(next);
    }
    if let Some(ip) = cluster_ip(&copy)
        && !is_headless(&service)
        && cluster_ip(&service) != Some(ip)
    {
        return recreate(&ctx, &service, &copy, ip).await;
    }
    if let Some(status) = virtual_status(&copy, service.status.as_ref()) {
        copy::write_virtual_status(&virt, &key.name, &status).await?;
    }
    Ok(next)
}

/// Replaces the virtual Service by one with the copy's address `ip`.
async fn recreate(ctx: &Ctx, service: &Service, copy: &Service, ip: &str) -> anyhow::Result<Next> {
    let taken = ctx
        .stores
        .virtual_services
        .state()
        .into_iter()
        .any(|other| other.uid() != service.uid() && cluster_ip(&other) == Some(ip));
    if taken {
        tracing::warn!(
            service = %service.name_any(), %ip,
            "another virtual Service has the host copy's address; keeping the virtual one"
        );
        return Ok(Next::After(ADDRESS_RECHECK));
    }
    let replacement = with_cluster_ip(service, ip);
    let patch = serde_json::json!({"metadata": {
        "uid": copy.uid(),
        "annotations": {RECREATE: serde_json::to_string(&replacement)?},
    }});
    let namespace = service.namespace().unwrap_or_default();
    ctx.host_api::<Service>(&namespace)
        .patch(
            &copy.name_any(),
            &copy::merge_params(),
            &Patch::Merge(&patch),
        )
        .await?;
    let virt = ctx.virtual_api::<Service>(service.namespace().as_deref().unwrap_or_default());
    if copy::delete(&virt, service, None).await? {
        create_virtual(&virt, &replacement).await?;
    }
    Ok(Next::Done)
}

/// Creates `replacement`; if the virtual cluster refuses its address, creates it without one
/// rather than lose the Service.
async fn create_virtual(api: &Api<Service>, replacement: &Service) -> anyhow::Result<()> {
    let mut plain = replacement.clone();
    if let Some(spec) = plain.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
    }
    copy::create_virtual(api, replacement, &plain).await
}

/// Endpoints of a virtual Service without selector are copied; those of Services with one are
/// made by each side's own controllers.
pub async fn reconcile_endpoints(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    if !ctx.config.sync.to_host.endpoints.enabled || is_api_service(&key) {
        return Ok(Next::Done);
    }
    let selectorless = ctx
        .stores
        .virtual_services
        .get(&key.object_ref())
        .is_some_and(|s| !has_selector(&s));
    let endpoints = ctx
        .stores
        .virtual_endpoints
        .get(&key.object_ref())
        .filter(|_| selectorless);
    let copy = ctx.host_copy(&ctx.stores.host_endpoints, &key);
    // The instance's own addresses, read from the caches once and only if an address needs them.
    let own = std::sync::OnceLock::new();
    let allowed = |ip: &str| {
        endpoint_allowed(
            ip,
            &ctx.config.policy,
            &|ip| ctx.is_host_node_address(ip),
            &|ip| own.get_or_init(|| ctx.own_addresses()).contains(&ip),
        )
    };
    if let Some(endpoints) = &endpoints {
        let (_, left_out) = host_endpoints(endpoints, &ctx.target, &allowed);
        if !left_out.is_empty() {
            let note = format!(
                "addresses {} are not copied to the host: they belong to the host's nodes, \
                 pods or Services that are not this virtual cluster's, or to special ranges",
                left_out.join(", ")
            );
            copy::warn(&ctx, endpoints.as_ref(), "EndpointsNotAllowed", note).await;
        }
    }
    copy::sync(
        &ctx,
        "toHost.endpoints",
        &ctx.host_api(&key.namespace),
        endpoints.as_deref(),
        copy.as_deref(),
        |e: &Endpoints| host_endpoints(e, &ctx.target, &allowed).0,
    )
    .await
}
