//! Answers a kubelet API call on the host API server, as the syncer: logs streamed back as
//! they come, exec, attach and port-forward as an upgraded connection copied byte for byte
//! (SPDY or WebSocket, whichever the caller asked the host for). Only for pods that are this
//! instance's copies of the virtual pod the call names; any other is "not found".

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};
use virtualcluster_crds::marks;

use tokio::sync::Semaphore;

use super::identity::Caller;
use super::limits;
use super::route::{self, Call, Refusal};
use crate::metrics::{KubeletLabels, Metrics};
use crate::translate::Target;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Request headers that carry the stream negotiation to the host; nothing else of the
/// caller's request (its credentials least of all) goes there.
const UPGRADE_REQUEST_HEADERS: [HeaderName; 7] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("x-stream-protocol-version"),
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];
/// Response headers of an accepted upgrade the caller needs back.
const UPGRADE_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("x-stream-protocol-version"),
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
];
/// How much of a host refusal's body is read (a Status is far smaller).
const REFUSAL_LIMIT: usize = 64 * 1024;
/// Copy buffer of an upgraded stream, each way: large enough for port-forward throughput.
const STREAM_BUFFER: usize = 64 * 1024;

pub struct Proxy {
    host: Client,
    virt: Client,
    target: Target,
    metrics: Arc<Metrics>,
    calls: Arc<Semaphore>,
}

/// The host pod a call goes to, or why there is none.
enum Lookup {
    Found {
        namespace: String,
        name: String,
        /// The container's name on the host.
        container: Option<String>,
    },
    /// No virtual pod of that name (and UID), or no host copy of it that is this instance's.
    NoPod,
    /// The virtual pod has no container of that name, or the host copy has it in another list
    /// (the host copy may have more: a container a host webhook added is not the tenant's).
    NoContainer(String),
}

impl Proxy {
    pub fn new(host: Client, virt: Client, target: Target, metrics: Arc<Metrics>) -> Self {
        Self {
            host,
            virt,
            target,
            metrics,
            calls: Arc::new(Semaphore::new(limits::CALLS)),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>, caller: &Caller) -> Response<Body> {
        let call = route::parse(request.uri().path());
        let name = call.as_ref().map_or("unsupported", |c| c.kind.as_str());
        let response = match (caller, call) {
            (Caller::Other(name), _) => text(
                StatusCode::FORBIDDEN,
                format!(
                    "the kubelet API of virtual nodes answers the virtual API server only, not \
                     {name:?}"
                ),
            ),
            (Caller::ApiServer, Err(refusal @ Refusal::Unsupported(_))) => {
                text(StatusCode::NOT_IMPLEMENTED, refusal.to_string())
            }
            (Caller::ApiServer, Err(refusal)) => text(StatusCode::BAD_REQUEST, refusal.to_string()),
            (Caller::ApiServer, Ok(call)) => self.answer(request, call).await,
        };
        self.metrics
            .kubelet_requests
            .get_or_create(&KubeletLabels {
                call: name,
                code: response.status().as_u16(),
            })
            .inc();
        response
    }

    async fn answer(&self, mut request: Request<Incoming>, call: Call) -> Response<Body> {
        let allowed = match call.kind.upgrades() {
            true => [Method::GET, Method::POST].contains(request.method()),
            false => request.method() == Method::GET,
        };
        if !allowed {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} does not take {}", call.kind.as_str(), request.method()),
            );
        }
        let lookup = tokio::time::timeout(limits::LOOKUP, self.host_pod(&call)).await;
        let (namespace, pod, container) = match lookup {
            Ok(Ok(Lookup::Found {
                namespace,
                name,
                container,
            })) => (namespace, name, container),
            Ok(Ok(Lookup::NoPod)) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("pod {}/{} not found", call.namespace, call.pod),
                );
            }
            Ok(Ok(Lookup::NoContainer(container))) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container {container:?} is not valid for pod {}/{}",
                        call.namespace, call.pod
                    ),
                );
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, namespace = %call.namespace, pod = %call.pod,
                    "kubelet API: reading the pod");
                // The host's error names host objects: the syncer's log has it, the tenant
                // does not.
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the pod could not be read; the syncer's log says why".into(),
                );
            }
            Err(_) => {
                tracing::warn!(namespace = %call.namespace, pod = %call.pod,
                    "kubelet API: reading the pod timed out");
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the pod could not be read in time; the syncer's log says why".into(),
                );
            }
        };
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the virtual nodes' kubelet API answers {} calls at once; try again when \
                     one has ended",
                    limits::CALLS
                ),
            );
        };
        // After the pod: a caller learns nothing of pods that are not the instance's.
        if call.kind.upgrades() && !request.headers().contains_key(header::UPGRADE) {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} needs an upgraded connection (SPDY or WebSocket)",
                    call.kind.as_str()
                ),
            );
        }
        let uri = format!(
            "{}?{}",
            route::host_path(call.kind, &namespace, &pod),
            route::host_query(call.kind, request.uri().query(), container.as_deref())
        );
        let mut upstream = Request::builder().method(request.method()).uri(uri);
        if call.kind.upgrades() {
            for name in &UPGRADE_REQUEST_HEADERS {
                for value in request.headers().get_all(name) {
                    upstream = upstream.header(name, value);
                }
            }
        }
        let upstream = match upstream.body(kube::client::Body::empty()) {
            Ok(upstream) => upstream,
            Err(err) => return text(StatusCode::BAD_REQUEST, err.to_string()),
        };
        let caller_upgrade = call
            .kind
            .upgrades()
            .then(|| hyper::upgrade::on(&mut request));
        let response = match self.host.send(upstream).await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(%err, namespace = %call.namespace, pod = %call.pod,
                    call = call.kind.as_str(), "kubelet API: calling the host API server");
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the host API server did not answer; the syncer's log says why".into(),
                );
            }
        };
        match caller_upgrade {
            Some(caller_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let mut ours = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
                for name in &UPGRADE_RESPONSE_HEADERS {
                    for value in response.headers().get_all(name) {
                        ours = ours.header(name, value);
                    }
                }
                let host_upgrade = hyper::upgrade::on(response);
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::join!(caller_upgrade, host_upgrade) {
                        (Ok(caller), Ok(host)) => {
                            let (mut caller, mut host) = (TokioIo::new(caller), TokioIo::new(host));
                            if let Err(err) = tokio::io::copy_bidirectional_with_sizes(
                                &mut caller,
                                &mut host,
                                STREAM_BUFFER,
                                STREAM_BUFFER,
                            )
                            .await
                            {
                                tracing::debug!(%err, "kubelet API: stream ended");
                            }
                        }
                        (caller, host) => tracing::warn!(
                            caller = ?caller.err(), host = ?host.err(),
                            "kubelet API: upgrading the connection"
                        ),
                    }
                });
                ours.body(empty())
                    .unwrap_or_else(|err| text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
            }
            // The host's refusal.
            _ if !response.status().is_success() => {
                let status = response.status();
                let body = http_body_util::Limited::new(response.into_body(), REFUSAL_LIMIT)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                text(
                    status,
                    refusal_message(status, &body, (&namespace, &pod), &call),
                )
            }
            // Logs: streamed as they come.
            _ => {
                let mut ours = Response::builder().status(response.status());
                if let Some(kind) = response.headers().get(header::CONTENT_TYPE) {
                    ours = ours.header(header::CONTENT_TYPE, kind);
                }
                let body = response
                    .into_body()
                    .map_err(|err| Box::new(err) as BoxError)
                    // The call is answered until its body ends or the caller goes.
                    .map_frame(move |frame| {
                        let _ = &permit;
                        frame
                    })
                    .boxed_unsync();
                ours.body(body)
                    .unwrap_or_else(|err| text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
            }
        }
    }

    /// The host pod `call` goes to: this instance's host copy of the virtual pod it names (of
    /// that UID, when the call names one), if both have the container the call names, in the
    /// same list.
    async fn host_pod(&self, call: &Call) -> Result<Lookup, kube::Error> {
        let Some(place) = self.target.place(&call.namespace) else {
            return Ok(Lookup::NoPod);
        };
        let virt: Api<Pod> = Api::namespaced(self.virt.clone(), &call.namespace);
        let Some(pod) = virt.get_opt(&call.pod).await? else {
            return Ok(Lookup::NoPod);
        };
        let uid = pod.uid().unwrap_or_default();
        if call.uid.as_ref().is_some_and(|asked| *asked != uid) {
            return Ok(Lookup::NoPod);
        }
        let name = self.target.host_name(&call.namespace, &call.pod);
        let host: Api<Pod> = Api::namespaced(self.host.clone(), &place.namespace);
        let Some(copy) = host.get_opt(&name).await? else {
            return Ok(Lookup::NoPod);
        };
        let of = marks::virtual_ref(copy.annotations());
        let ours = marks::is_copy_of(&self.target.instance, copy.labels())
            && of.is_some_and(|of| {
                of.namespace == call.namespace && of.name == call.pod && of.uid == uid
            });
        if !ours {
            return Ok(Lookup::NoPod);
        }
        // The container must be the virtual pod's and stand in the same list of the host
        // copy: an ephemeral container the tenant named like a container a host webhook added
        // (which the host refused to add) is not that container.
        // Patches may have renamed it on the host.
        let mut host_container = None;
        if let Some(container) = &call.container {
            let on_host = crate::translate::pod::container_names(copy.annotations())
                .into_iter()
                .find(|(_, virtual_)| virtual_ == container)
                .map_or_else(|| container.clone(), |(host, _)| host);
            let virtual_list = container_list(&pod, container);
            if virtual_list.is_none() || virtual_list != container_list(&copy, &on_host) {
                return Ok(Lookup::NoContainer(container.clone()));
            }
            host_container = Some(on_host);
        }
        Ok(Lookup::Found {
            namespace: place.namespace,
            name,
            container: host_container,
        })
    }
}

/// Which list of `pod`'s spec holds container `name`, if any.
#[derive(Debug, PartialEq, Eq)]
enum ContainerList {
    Containers,
    Init,
    Ephemeral,
}

fn container_list(pod: &Pod, name: &str) -> Option<ContainerList> {
    let spec = pod.spec.as_ref()?;
    if spec.containers.iter().any(|c| c.name == name) {
        Some(ContainerList::Containers)
    } else if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
    {
        Some(ContainerList::Init)
    } else if spec
        .ephemeral_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
    {
        Some(ContainerList::Ephemeral)
    } else {
        None
    }
}

/// What the tenant reads of the host's refusal (`status`, `body`) of `call`, made on host pod
/// `host`. A client error is about the call (the container is not running, say): its message,
/// in the virtual cluster's names. The host refusing the syncer itself (401, 403) or failing
/// (5xx) is the platform's matter: the syncer's log has the host's words, the tenant a fixed
/// sentence.
fn refusal_message(status: StatusCode, body: &[u8], host: (&str, &str), call: &Call) -> String {
    let virt = (call.namespace.as_str(), call.pod.as_str());
    let ours = status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN;
    if !ours {
        return route::tenant_message(body, host, virt);
    }
    tracing::warn!(status = status.as_u16(), body = %String::from_utf8_lossy(body),
        namespace = %call.namespace, pod = %call.pod, call = call.kind.as_str(),
        "kubelet API: the host API server refused the call");
    format!(
        "the host refused the call (HTTP {}); the syncer's log says why",
        status.as_u16()
    )
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
