//! The VirtualCluster controller: read (caches) → validate → build → apply → status, behind the
//! cleanup finalizer. Every step is level-based: it looks at what is, not at what happened, so a
//! reconcile can be cut off at any line and run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use virtualcluster_crds::VirtualCluster;
use virtualcluster_crds::instance::InstanceRef;
use virtualcluster_crds::keys::CLEANUP_FINALIZER;
use virtualcluster_crds::kinds;
use virtualcluster_crds::v1alpha1::VirtualClusterStatus;

use crate::access;
use crate::apply;
use crate::build::{self, Instance};
use crate::caches::{self, Caches, Lite};
use crate::cleanup;
use crate::error::Error;
use crate::isolation;
use crate::metrics::Metrics;
use crate::pki;
use crate::settings::Settings;
use crate::status::{self, Observed, condition};
use crate::turned_off;
use crate::validate::{self, Invalid};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub caches: Caches,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Safety-net resync of an instance with nothing to do.
    pub resync: Duration,
    pub verified: apply::Verified,
    /// The VirtualClusters of this controller's namespace.
    pub instances: reflector::Store<VirtualCluster>,
    /// Every VirtualCluster the operator watches, whatever controller watches it, to check
    /// host mappings across instances.
    pub everyone: Vec<reflector::Store<VirtualCluster>>,
}

/// The VirtualClusters one controller fills (`writer`) and those every controller's stores
/// hold (`everyone`, its own included).
pub struct Instances {
    pub writer: reflector::store::Writer<VirtualCluster>,
    pub everyone: Vec<reflector::Store<VirtualCluster>>,
}

/// A store of VirtualClusters for one controller (see [`Instances`]).
pub fn instances_writer() -> reflector::store::Writer<VirtualCluster> {
    reflector::store::Writer::default()
}

/// How often an instance refused for a conflict with another is looked at again (the other
/// may have gone).
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// Options of one controller.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    pub resync: Duration,
    pub concurrency: u16,
    /// How long a burst of changes to one instance's objects is collected before it is
    /// reconciled once (its children's status moves several times while they start).
    pub debounce: Duration,
    /// Name of this operator process, for Events.
    pub instance_name: String,
}

/// Runs the controller for VirtualClusters in `namespace` (all when `None`) until the future is
/// dropped.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    options: Options,
    metrics: Arc<Metrics>,
    instances: Instances,
) {
    let vcs: Api<VirtualCluster> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (caches, streams) = caches::watch(&client, namespace.as_deref());
    let Instances {
        writer: vc_writer,
        everyone,
    } = instances;
    let vc_store = vc_writer.as_reader();
    let vc_stream = watcher(vcs, watcher::Config::default())
        .default_backoff()
        .modify(|vc: &mut VirtualCluster| vc.managed_fields_mut().clear())
        .reflect(vc_writer)
        .touched_objects();
    let recorder = Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "virtualcluster-operator".into(),
            instance: Some(options.instance_name.clone()),
        },
    );
    let context = Arc::new(Context {
        client,
        settings: options.settings,
        caches,
        recorder,
        metrics,
        resync: options.resync,
        verified: apply::Verified::default(),
        instances: vc_store.clone(),
        everyone,
    });
    // A CRD an instance waits for may appear (or go): its metadata is enough to tell.
    let crd_stream = watcher(
        Api::<caches::Meta<CustomResourceDefinition>>::all(context.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    Controller::for_stream(vc_stream, vc_store)
        .with_config(
            Config::default()
                .concurrency(options.concurrency)
                .debounce(options.debounce),
        )
        .owns_stream_with(
            streams.services,
            kube::api::ApiResource::erase::<Service>(&()),
        )
        .owns_stream(streams.certs)
        .owns_stream(streams.secrets)
        .owns_stream(streams.config_maps)
        .owns_stream(streams.service_accounts)
        .owns_stream(streams.roles)
        .owns_stream(streams.role_bindings)
        .owns_stream_with(
            streams.stateful_sets,
            kube::api::ApiResource::erase::<StatefulSet>(&()),
        )
        .owns_stream_with(
            streams.deployments,
            kube::api::ApiResource::erase::<Deployment>(&()),
        )
        .watches_stream(streams.held_namespaces, {
            let instances = context.instances.clone();
            move |ns| claimants(&instances, ns.metadata.name.as_deref().unwrap_or_default())
        })
        .watches_stream(streams.held_bindings, |o| caches::owner_by_labels(&o))
        .watches_stream(streams.resource_quotas, |o| caches::owner_by_labels(&o))
        .watches_stream(streams.limit_ranges, |o| caches::owner_by_labels(&o))
        .watches_stream(streams.network_policies, |o| caches::owner_by_labels(&o))
        .watches_stream(streams.residents, {
            let instances = context.instances.clone();
            move |vc| {
                claimants(
                    &instances,
                    vc.metadata.namespace.as_deref().unwrap_or_default(),
                )
            }
        })
        .watches_stream(crd_stream, {
            let instances = context.instances.clone();
            move |crd| naming_crd(&instances, &crd.name_any())
        })
        .watches_stream(streams.cluster_roles, |o| caches::owner_by_labels(&o))
        .watches_stream(streams.cluster_role_bindings, |o| {
            caches::owner_by_labels(&o)
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile failed");
            }
        })
        .await;
}

async fn reconcile(vc: Arc<VirtualCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.caches.ready().await.map_err(|_| Error::CachesGone)?;
    let namespace = vc.namespace().unwrap_or_default();
    let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, CLEANUP_FINALIZER, vc, |event| async {
        match event {
            Finalizer::Apply(vc) => provision(&vc, &ctx).await,
            Finalizer::Cleanup(vc) => cleanup::run(&vc, &ctx).await,
        }
    })
    .await;
    let result = match result {
        // A second cleanup raced the first, which already removed the finalizer: it is done.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)))
            if s.code == 404 =>
        {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// The instances that sync the custom resource CRD `name` defines.
fn naming_crd(
    instances: &reflector::Store<VirtualCluster>,
    name: &str,
) -> Vec<reflector::ObjectRef<VirtualCluster>> {
    instances
        .state()
        .iter()
        .filter(|vc| {
            kinds::custom_resources(&vc.spec.sync)
                .iter()
                .any(|(resource, _, _)| resource == name)
        })
        .map(|vc| reflector::ObjectRef::from_obj(vc.as_ref()))
        .collect()
}

/// The instances whose namespace mappings claim host namespace `namespace`.
fn claimants(
    instances: &reflector::Store<VirtualCluster>,
    namespace: &str,
) -> Vec<reflector::ObjectRef<VirtualCluster>> {
    instances
        .state()
        .iter()
        .filter(|vc| vc.spec.sync.to_host.namespaces.enabled)
        .filter(|vc| {
            let id = InstanceRef::of(vc);
            virtualcluster_crds::mapping::validate(
                &vc.spec.sync.to_host.namespaces,
                virtualcluster_crds::mapping::Instance {
                    name: &id.name,
                    namespace: &id.namespace,
                },
            )
            .is_ok_and(|mapper| mapper.claims_host(namespace))
        })
        .map(|vc| reflector::ObjectRef::from_obj(vc.as_ref()))
        .collect()
}

fn error_policy(vc: Arc<VirtualCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        vc = %format!("{}/{}", vc.namespace().unwrap_or_default(), vc.name_any()),
        reason = error.category(),
        %error,
        "reconcile failed"
    );
    Action::requeue(error.retry_after())
}

/// Provisions or updates everything of a valid instance, then reports status.
async fn provision(vc: &VirtualCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = vc.namespace().unwrap_or_default();
    let caches = &ctx.caches;
    let client = &ctx.client;
    let names = InstanceRef::of(vc);
    // The syncer ConfigMap records the namespace-sync block the instance runs with and the
    // kinds it may have host copies of. Its owner tells whether it is this instance's (a
    // recreated one of the same name is not).
    let recorded = caches::get(
        &caches.config_maps,
        Some(&namespace),
        &names.syncer_config(),
    )
    .filter(|cm| cm.owner_references().iter().any(|o| o.uid == names.uid));
    let running = recorded
        .as_ref()
        .and_then(|cm| build::recorded_namespace_sync(cm.annotations()));
    let recorded_kinds = recorded
        .as_ref()
        .and_then(|cm| turned_off::recorded(cm.annotations()));
    let mut valid = match validate::validate(vc, running.as_ref(), &ctx.settings) {
        Ok(valid) => valid,
        Err(invalid) => {
            report(vc, ctx, Err(&invalid), None, None, 0, Default::default()).await?;
            // Nothing changes until the user edits the VirtualCluster.
            return Ok(Action::await_change());
        }
    };
    valid.custom_resources = crate::custom::resolve(client, &vc.spec.sync).await?;
    let instances: Vec<Arc<VirtualCluster>> = ctx
        .everyone
        .iter()
        .flat_map(|store| store.state())
        .collect();
    let others: Vec<&VirtualCluster> = instances.iter().map(AsRef::as_ref).collect();
    if let Err(invalid) = validate::conflict(vc, &valid, &others) {
        report(vc, ctx, Err(&invalid), None, None, 0, Default::default()).await?;
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }
    // Kinds turned off stay recorded until their copies are gone (see `turned_off`).
    let copied = turned_off::copied(&vc.spec.sync, &valid.custom_resources.kinds);
    valid.turned_off = turned_off::turned_off(recorded_kinds, &copied, &valid.policy);
    if !valid.turned_off.is_empty() {
        // The cache may not hold the operator's own latest record yet (it drops what is
        // removed): the API server's word decides.
        let fresh =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &namespace)
                .get_opt(&names.syncer_config())
                .await
                .map_err(Error::kube("reading the syncer's ConfigMap"))?
                .filter(|cm| cm.owner_references().iter().any(|o| o.uid == names.uid))
                .and_then(|cm| turned_off::recorded(cm.annotations()));
        valid.turned_off = turned_off::turned_off(fresh, &copied, &valid.policy);
    }
    let instance = Instance {
        vc,
        valid: &valid,
        settings: &ctx.settings,
    };

    // Services first: the serving certificates name their ClusterIPs.
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let mut service_ip = None;
    let mut syncer_ip = None;
    for service in build::services(&instance) {
        let name = service.name_any();
        let live = caches::get_lite::<Service, _, _>(&caches.services, &namespace, &name);
        let applied = apply::apply_verified(
            &services,
            service,
            live.as_ref().map(|l| &l.metadata),
            &ctx.verified,
        )
        .await
        .map_err(Error::kube(format!("applying Service {name}")))?;
        let ip = match applied {
            Some(full) => full.spec.and_then(|s| s.cluster_ip),
            None => live.and_then(|l| l.spec.cluster_ip.clone()),
        };
        if name == names.api_server_service() {
            service_ip = ip;
        } else if name == names.syncer() {
            syncer_ip = ip;
        }
    }

    let certs = ensure_certs(&instance, ctx, service_ip.as_deref(), syncer_ip.as_deref()).await?;
    let desired = build::desired(&instance, &certs, syncer_ip.as_deref())?;
    // The host namespaces the instance holds: its syncer's rights follow them, and those it
    // created are held to spec.policies first.
    let held_namespaces = if vc.spec.sync.to_host.namespaces.enabled {
        access::wanted(
            &valid,
            &ctx.settings,
            caches.held_namespaces.state().iter().map(AsRef::as_ref),
            |ns| {
                caches
                    .residents
                    .find(|vc| vc.metadata.namespace.as_deref() == Some(ns))
                    .is_some()
            },
        )
    } else {
        Default::default()
    };
    let created: Vec<String> = held_namespaces
        .iter()
        .filter(|(_, created)| **created)
        .map(|(ns, _)| ns.clone())
        .collect();
    let (sts, deployment) = apply_all(ctx, &names, desired).await?;
    // In the instance's namespace once the control plane's pods are made (the syncer made these
    // at its start before); in a created namespace before the syncer's rights there.
    let control_plane_up = sts
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some_and(|s| s.replicas > 0);
    isolation::ensure(ctx, &instance, &created, control_plane_up).await?;
    access::ensure(ctx, &names, &held_namespaces).await?;
    let rolled_out = turned_off::syncer_rolled_out(deployment.as_ref(), vc.spec.syncer.replicas);
    if !valid.turned_off.is_empty() && !rolled_out {
        tracing::debug!("kinds turned off: their copies go once the syncer has rolled out");
    }
    if !valid.turned_off.is_empty() && rolled_out {
        turned_off::remove(ctx, vc, &names, &valid.turned_off).await?;
        // Gone: the record keeps only what is synced now.
        valid.turned_off.clear();
        let after = Instance {
            vc,
            valid: &valid,
            settings: &ctx.settings,
        };
        apply_each(
            ctx,
            Api::namespaced(client.clone(), &namespace),
            vec![build::syncer_config_map(&after)],
            &caches.config_maps,
        )
        .await?;
    }
    let held = vc.spec.sync.to_host.namespaces.enabled.then(|| {
        validate::held_by_others(
            &valid,
            caches.held_namespaces.state().iter().map(|ns| &ns.metadata),
        )
    });
    report(
        vc,
        ctx,
        Ok(()),
        sts.as_ref(),
        deployment.as_ref(),
        vc.spec.syncer.replicas,
        status::Notes {
            held_namespaces: held.as_deref(),
            missing_custom_resources: (!kinds::custom_resources(&vc.spec.sync).is_empty())
                .then_some(valid.custom_resources.missing.as_slice()),
        },
    )
    .await?;
    Ok(Action::requeue(ctx.resync))
}

/// The certificates of the instance: the stored ones while they are valid, else newly issued
/// (only the leaves when the CA is fine) and stored.
async fn ensure_certs(
    instance: &Instance<'_>,
    ctx: &Context,
    service_ip: Option<&str>,
    syncer_ip: Option<&str>,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Error> {
    let id = instance.id();
    let name = id.certs_secret();
    let stored = caches::get(&ctx.caches.certs, Some(&id.namespace), &name);
    let stored_data = stored.as_ref().and_then(|s| s.data.as_ref()).map(|d| {
        d.iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    let stored_annotations = stored.as_ref().map(|s| s.annotations().clone());
    let subjects = build::cert_subjects(instance, service_ip, syncer_ip);
    let now = time::OffsetDateTime::now_utc();
    let plan = pki::plan(
        stored_data.as_ref(),
        stored_annotations.as_ref(),
        &subjects,
        now,
    );
    if plan == pki::Plan::Keep {
        return Ok(stored_data.unwrap_or_default());
    }
    // Leaves are signed with the stored CA, which the cache keeps only as a digest.
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let full_data = match plan {
        pki::Plan::ReissueLeaves => api
            .get(&name)
            .await
            .map_err(Error::kube(format!("reading Secret {name}")))?
            .data
            .map(|d| d.into_iter().map(|(k, v)| (k, v.0)).collect()),
        _ => None,
    };
    let bundle = pki::issue(
        plan,
        full_data.as_ref(),
        stored_annotations.as_ref(),
        &subjects,
        now,
    )?;
    let secret = apply::with_hash(build::certs_secret(instance, &bundle));
    if stored.is_none() {
        // Create, not apply: should the cache be behind, the existing certificates win (409)
        // and the next reconcile reads them.
        api.create(&PostParams::default(), &secret)
            .await
            .map_err(Error::kube(format!("creating Secret {name}")))?;
    } else {
        api.patch(&name, &apply::params(), &Patch::Apply(&secret))
            .await
            .map_err(Error::kube(format!("applying Secret {name}")))?;
    }
    // The first certificates are part of provisioning, which the Ready Event announces; new
    // ones for a running instance are worth an Event of their own.
    if stored.is_some() {
        let note = match plan {
            pki::Plan::ReissueLeaves => "issued new certificates with the existing CA",
            _ => "issued a new CA and certificates",
        };
        publish(
            ctx,
            instance.vc,
            EventType::Normal,
            "CertificatesIssued",
            note,
        )
        .await;
    }
    // The same form the cache keeps, so that what is built from it does not depend on where
    // the certificates came from.
    let mut data = bundle.data;
    pki::digested(&mut data);
    Ok(data)
}

/// Applies every desired child whose cached copy differs, one at a time in dependency order
/// (applying them concurrently was measured slower at 1,000 instances: the API server is the
/// bottleneck, and more requests at once only cost it more). Returns the StatefulSet and the
/// Deployment as they are now (metadata and status).
async fn apply_all(
    ctx: &Context,
    id: &InstanceRef,
    desired: build::Desired,
) -> Result<
    (
        Option<Lite<StatefulSetStatus>>,
        Option<Lite<DeploymentStatus>>,
    ),
    Error,
> {
    let c = &ctx.client;
    let caches = &ctx.caches;
    let namespace = id.namespace.as_str();
    let stale_roles: Vec<String> = caches
        .cluster_roles
        .state()
        .iter()
        .filter(|r| id.owns(r.labels()))
        .map(|r| r.name_any())
        .filter(|name| !desired.cluster_roles.iter().any(|d| d.name_any() == *name))
        .collect();
    apply_each(
        ctx,
        Api::namespaced(c.clone(), namespace),
        desired.secrets,
        &caches.secrets,
    )
    .await?;
    apply_each(
        ctx,
        Api::namespaced(c.clone(), namespace),
        desired.config_maps,
        &caches.config_maps,
    )
    .await?;
    apply_each(
        ctx,
        Api::namespaced(c.clone(), namespace),
        desired.service_accounts,
        &caches.service_accounts,
    )
    .await?;
    // A Role before the binding that names it (the API server checks the binder holds it).
    let wanted_roles: Vec<String> = desired.roles.iter().map(|r| r.name_any()).collect();
    apply_each(
        ctx,
        Api::namespaced(c.clone(), namespace),
        desired.roles,
        &caches.roles,
    )
    .await?;
    let wanted_bindings: Vec<String> = desired.role_bindings.iter().map(|b| b.name_any()).collect();
    apply_each(
        ctx,
        Api::namespaced(c.clone(), namespace),
        desired.role_bindings,
        &caches.role_bindings,
    )
    .await?;
    // A Role or binding of its own it needs no more (custom resources turned off).
    let roles: Api<caches::Meta<Role>> = Api::namespaced(c.clone(), namespace);
    for role in caches.roles.state() {
        if role.namespace().as_deref() == Some(namespace)
            && id.owns(role.labels())
            && !wanted_roles.contains(&role.name_any())
        {
            crate::cleanup::delete_precisely(&roles, role.as_ref(), "Role").await?;
        }
    }
    let bindings: Api<caches::Meta<k8s_openapi::api::rbac::v1::RoleBinding>> =
        Api::namespaced(c.clone(), namespace);
    for binding in caches.role_bindings.state() {
        if binding.namespace().as_deref() == Some(namespace)
            && id.owns(binding.labels())
            && !wanted_bindings.contains(&binding.name_any())
        {
            crate::cleanup::delete_precisely(&bindings, binding.as_ref(), "RoleBinding").await?;
        }
    }
    apply_each(
        ctx,
        Api::all(c.clone()),
        desired.cluster_roles,
        &caches.cluster_roles,
    )
    .await?;
    apply_each(
        ctx,
        Api::all(c.clone()),
        desired.cluster_role_bindings,
        &caches.cluster_role_bindings,
    )
    .await?;
    // A ClusterRole of its own it needs no more (its binding is now to a fixed one).
    for name in stale_roles {
        if let Some(role) = caches::get(&caches.cluster_roles, None, &name) {
            crate::cleanup::delete_precisely(&Api::all(c.clone()), role.as_ref(), "ClusterRole")
                .await?;
        }
    }
    let mut stateful_set = None;
    for sts in desired.stateful_sets {
        stateful_set = apply_stateful_set(ctx, namespace, sts).await?;
    }
    let mut deployment = None;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), namespace);
    for object in desired.deployments {
        let name = object.name_any();
        let live = caches::get_lite::<Deployment, _, _>(&caches.deployments, namespace, &name);
        let applied = apply::apply_verified(
            &deployments,
            object,
            live.as_ref().map(|l| &l.metadata),
            &ctx.verified,
        )
        .await
        .map_err(Error::kube(format!("applying Deployment {name}")))?;
        deployment = match applied {
            Some(full) => Some(caches::lite(&full, full.status.clone())),
            None => live.map(|l| (*l).clone()),
        };
    }
    Ok((stateful_set, deployment))
}

/// Applies each of `objects` (of one kind) unless its cached copy in `store` shows it in place.
async fn apply_each<K, C>(
    ctx: &Context,
    api: Api<K>,
    objects: Vec<K>,
    store: &reflector::Store<C>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
    C: Resource<DynamicType = ()> + Clone,
{
    for object in objects {
        let name = object.name_any();
        let live = caches::get(store, object.namespace().as_deref(), &name);
        let applied = apply::apply_verified(
            &api,
            object.clone(),
            live.as_ref().map(|l| l.meta()),
            &ctx.verified,
        )
        .await;
        let what = || format!("applying {} {name}", K::kind(&()));
        match (applied, &live) {
            // A binding's role cannot change (the syncer's, when it moved to or from a fixed
            // ClusterRole): made anew, the very object that was read deleted first.
            (Err(kube::Error::Api(status)), Some(live))
                if status.code == 422 && status.message.contains("roleRef") =>
            {
                tracing::info!(%name, "recreating a binding for its new role");
                let params = kube::api::DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: live.meta().uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                api.delete(&name, &params)
                    .await
                    .map_err(Error::kube(what()))?;
                apply::apply_verified(&api, object, None, &ctx.verified)
                    .await
                    .map_err(Error::kube(what()))?;
            }
            (result, _) => {
                result.map_err(Error::kube(what()))?;
            }
        }
    }
    Ok(())
}

/// Applies the control plane StatefulSet. Some of its fields cannot change (the volume claim
/// templates, when persistence is switched or resized); then it is deleted with its pods and
/// claims orphaned, not deleted, and made anew, adopting them, so nothing stops or is lost.
async fn apply_stateful_set(
    ctx: &Context,
    namespace: &str,
    sts: StatefulSet,
) -> Result<Option<Lite<StatefulSetStatus>>, Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let name = sts.name_any();
    let live = caches::get_lite::<StatefulSet, _, _>(&ctx.caches.stateful_sets, namespace, &name);
    let live_meta = live.as_ref().map(|l| &l.metadata);
    match apply::apply_verified(&api, sts, live_meta, &ctx.verified).await {
        Ok(Some(full)) => Ok(Some(caches::lite(&full, full.status.clone()))),
        Ok(None) => Ok(live.map(|l| (*l).clone())),
        Err(kube::Error::Api(status))
            if status.code == 422
                && (status.message.contains("immutable")
                    || status.message.contains("Forbidden")) =>
        {
            let uid = live.and_then(|l| l.metadata.uid.clone());
            tracing::info!(%name, reason = %status.message, "recreating the StatefulSet");
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..kube::api::DeleteParams::orphan()
            };
            api.delete(&name, &params)
                .await
                .map_err(Error::kube(format!("recreating StatefulSet {name}")))?;
            // The next reconcile, triggered by the deletion, creates it.
            Ok(None)
        }
        Err(err) => Err(Error::kube(format!("applying StatefulSet {name}"))(err)),
    }
}

/// Computes the status and writes it if it changed; publishes Events for transitions a user
/// must see.
async fn report(
    vc: &VirtualCluster,
    ctx: &Context,
    config: Result<(), &Invalid>,
    stateful_set: Option<&Lite<StatefulSetStatus>>,
    deployment: Option<&Lite<DeploymentStatus>>,
    syncer_replicas: i32,
    notes: status::Notes<'_>,
) -> Result<(), Error> {
    let kube_config_secret = config
        .is_ok()
        .then(|| InstanceRef::of(vc).kubeconfig_secret());
    let new = status::compute(
        vc,
        Observed {
            config,
            stateful_set,
            deployment,
            syncer_replicas,
            kube_config_secret: kube_config_secret.as_deref(),
            notes,
        },
        Time(Timestamp::now()),
    );
    let old = vc.status.as_ref();
    ctx.metrics.set_phase(
        format!("{}/{}", vc.namespace().unwrap_or_default(), vc.name_any()),
        new.phase,
    );
    let reported_before = |invalid: &Invalid| {
        old.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == condition::CONFIG_VALID
                    && c.status == "False"
                    && c.reason == invalid.reason
            })
        })
    };
    if let Err(invalid) = config
        && !reported_before(invalid)
    {
        publish(
            ctx,
            vc,
            EventType::Warning,
            invalid.reason,
            &invalid.message,
        )
        .await;
    }
    let clash = |status: Option<&VirtualClusterStatus>| {
        status.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == condition::NAMESPACES_AVAILABLE && c.status == "False")
                .map(|c| c.message.clone())
        })
    };
    if let Some(message) = clash(Some(&new))
        && clash(old).as_ref() != Some(&message)
    {
        publish(
            ctx,
            vc,
            EventType::Warning,
            status::HOST_NAMESPACE_CONFLICT,
            &message,
        )
        .await;
    }
    let was_ready = status::is_true(old, condition::READY);
    let is_ready = status::is_true(Some(&new), condition::READY);
    if was_ready != is_ready {
        let (type_, reason) = if is_ready {
            (EventType::Normal, "Ready")
        } else {
            (EventType::Warning, "NotReady")
        };
        let message = new
            .conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| c.message.as_str())
            .unwrap_or_default();
        publish(ctx, vc, type_, reason, message).await;
    }
    write_status(vc, ctx, new).await
}

/// Writes `status` unless the VirtualCluster already has it.
pub(crate) async fn write_status(
    vc: &VirtualCluster,
    ctx: &Context,
    status: VirtualClusterStatus,
) -> Result<(), Error> {
    if vc.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<VirtualCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": VirtualCluster::api_version(&()),
        "kind": VirtualCluster::kind(&()),
        "status": status,
    });
    api.patch_status(&vc.name_any(), &apply::params(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube("writing status"))?;
    Ok(())
}

/// Publishes an Event about `vc`; a failure is logged, never fatal.
pub(crate) async fn publish(
    ctx: &Context,
    vc: &VirtualCluster,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    publish_about(ctx, vc, None, type_, reason, note).await;
}

/// [`publish`] naming a related object too: Events of one reason about different related
/// objects stay apart (the recorder merges repeats of the same reason about the same objects).
pub(crate) async fn publish_about(
    ctx: &Context,
    vc: &VirtualCluster,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: related,
    };
    if let Err(err) = ctx.recorder.publish(&event, &vc.object_ref(&())).await {
        tracing::warn!(%err, reason, "publishing an Event failed");
    }
}
