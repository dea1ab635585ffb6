//! Leader election over a `coordination.k8s.io` Lease, so that several operator replicas can
//! run and only one reconciles. Every write carries the resourceVersion that was read, so two
//! candidates can never both take the Lease; expiry is judged by this process's own clock from
//! when it last saw the Lease change, never by comparing clocks of different machines.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::signal::unix::{SignalKind, signal};

/// Timing of the election. A standby takes over at most `lease_duration + retry_period` after
/// the leader's last renewal.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not renew the lease for {0:?}")]
    RenewFailed(Duration),
    #[error("{0} took the lease")]
    Lost(String),
}

/// How [`lead`] ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The work returned.
    Finished(T),
    /// A SIGTERM or SIGINT came, before or while leading.
    Stopped,
    /// Another replica leads now, or the Lease could not be renewed.
    Lost(Error),
}

/// Runs `work` once this process leads (at once without an elector) until it returns,
/// leadership is lost or a SIGTERM or SIGINT comes; then gives the Lease up so that a standby
/// takes over at once.
pub async fn lead<F: Future>(
    mut elector: Option<Elector>,
    work: impl FnOnce() -> F,
) -> std::io::Result<Ended<F::Output>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    if let Some(elector) = elector.as_mut() {
        tokio::select! {
            () = elector.acquire() => {}
            _ = terminate.recv() => return Ok(Ended::Stopped),
            _ = interrupt.recv() => return Ok(Ended::Stopped),
        }
    }
    let lost = async {
        match elector.as_mut() {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        output = work() => Ended::Finished(output),
        err = lost => Ended::Lost(err),
        _ = terminate.recv() => Ended::Stopped,
        _ = interrupt.recv() => Ended::Stopped,
    };
    if let Some(elector) = elector.as_mut() {
        elector.release().await;
    }
    Ok(ended)
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease's spec as last seen, and when this process saw it change.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
        }
    }

    /// Returns once this process holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "leader election"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns (with the reason) when leadership is lost.
    pub async fn hold(&mut self) -> Error {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|(s, _)| s.holder_identity.clone())
                        .unwrap_or_default();
                    return Error::Lost(holder);
                }
                Err(err) => {
                    tracing::warn!(%err, "renewing the lease");
                    if last_renewal.elapsed() > self.timing.renew_deadline {
                        return Error::RenewFailed(self.timing.renew_deadline);
                    }
                }
            }
        }
    }

    /// Gives the Lease up so that a standby takes over at once (on a clean shutdown).
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released the lease"),
            Err(err) => tracing::warn!(%err, "releasing the lease"),
        }
    }

    /// One round: take the Lease if it is free or expired, renew it if it is ours. Returns
    /// whether this process holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        self.observe(current.clone());
        let ours = current.holder_identity.as_deref() == Some(self.identity.as_str());
        let free = current
            .holder_identity
            .as_deref()
            .unwrap_or_default()
            .is_empty();
        let expired = self.observed.as_ref().is_some_and(|(_, seen)| {
            let duration = current
                .lease_duration_seconds
                .map_or(self.timing.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            seen.elapsed() > duration
        });
        if !(ours || free || expired) {
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                current.acquire_time.clone().unwrap_or_else(|| now.clone()),
                current.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), current.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // `replace` sends the resourceVersion read above: if anyone wrote in between, 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(updated.spec.unwrap_or_default());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Remembers `spec`, and when it was first seen in this form.
    fn observe(&mut self, spec: LeaseSpec) {
        match &self.observed {
            Some((seen, _)) if *seen == spec => {}
            _ => self.observed = Some((spec, Instant::now())),
        }
    }
}
