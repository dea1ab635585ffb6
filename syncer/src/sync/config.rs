//! ConfigMaps and Secrets: synced when a virtual pod in their namespace uses them, or all of
//! them with `all: true` and in namespaces a mapping gives a host namespace of their own.

use std::sync::Arc;

use crate::cached::CachedPod;

use crate::context::{Ctx, Key};
use crate::copy;
use crate::queue::Next;
use crate::translate::config::{host_config_map, host_secret};
use crate::translate::extra;

/// Whether a virtual pod in `key`'s namespace uses the object `key` through `uses`.
fn used(ctx: &Ctx, key: &Key, uses: fn(&CachedPod) -> &[String]) -> bool {
    ctx.stores.virtual_pods.state().iter().any(|p| {
        p.metadata.namespace.as_deref() == Some(&key.namespace) && uses(p).contains(&key.name)
    })
}

pub async fn reconcile_config_map(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    let options = &ctx.config.sync.to_host.config_maps;
    if !options.enabled {
        return Ok(Next::Done);
    }
    let object = ctx
        .stores
        .virtual_config_maps
        .get(&key.object_ref())
        .filter(|_| {
            options.all || ctx.mapped(&key.namespace) || used(&ctx, &key, |p| &p.config_maps)
        });
    let copy = ctx.host_copy(&ctx.stores.host_config_maps, &key);
    copy::sync(
        &ctx,
        "toHost.configMaps",
        &ctx.host_api(&key.namespace),
        object.as_deref(),
        copy.as_deref(),
        |o| host_config_map(o, &ctx.target),
    )
    .await
}

pub async fn reconcile_secret(ctx: Arc<Ctx>, key: Key) -> anyhow::Result<Next> {
    if !ctx.synced(&key.namespace) {
        return Ok(Next::Done);
    }
    let options = &ctx.config.sync.to_host.secrets;
    if !options.enabled {
        return Ok(Next::Done);
    }
    let object = ctx
        .stores
        .virtual_secrets
        .get(&key.object_ref())
        .filter(|_| {
            options.all
                || ctx.mapped(&key.namespace)
                || used(&ctx, &key, |p| &p.secrets)
                || used_by_ingress(&ctx, &key)
        });
    let copy = ctx.host_copy(&ctx.stores.host_secrets, &key);
    copy::sync(
        &ctx,
        "toHost.secrets",
        &ctx.host_api(&key.namespace),
        object.as_deref(),
        copy.as_deref(),
        |o| host_secret(o, &ctx.target),
    )
    .await
}

/// Whether a synced virtual Ingress in `key`'s namespace uses Secret `key` (its TLS).
fn used_by_ingress(ctx: &Ctx, key: &Key) -> bool {
    ctx.opt_in.ingresses.as_ref().is_some_and(|pair| {
        pair.virtual_.state().iter().any(|i| {
            i.metadata.namespace.as_deref() == Some(&key.namespace)
                && extra::ingress_secrets(i).contains(&key.name)
        })
    })
}

/// Keys of what `pod` uses, to sync when it appears (or goes).
pub fn used_by(pod: &CachedPod) -> (Vec<Key>, Vec<Key>) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let keys = |names: &[String]| names.iter().map(|n| Key::new(namespace, n)).collect();
    (keys(&pod.config_maps), keys(&pod.secrets))
}
