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

use super::identity::Caller;
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
    target: Target,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(host: Client, target: Target, metrics: Arc<Metrics>) -> Self {
        Self {
            host,
            target,
            metrics,
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
        let (namespace, pod) = match self.host_pod(&call).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("pod {}/{} not found", call.namespace, call.pod),
                );
            }
            Err(err) => {
                tracing::warn!(%err, namespace = %call.namespace, pod = %call.pod,
                    "kubelet API: reading the host pod");
                // The host's error names host objects: the syncer's log has it, the tenant
                // does not.
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the pod's host copy could not be read; the syncer's log says why".into(),
                );
            }
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
            route::host_query(call.kind, request.uri().query(), call.container.as_deref())
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
            // The host's refusal: its message, in the virtual cluster's names.
            _ if !response.status().is_success() => {
                let status = response.status();
                let body = http_body_util::Limited::new(response.into_body(), REFUSAL_LIMIT)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                text(
                    status,
                    route::tenant_message(&body, (&namespace, &pod), (&call.namespace, &call.pod)),
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
                    .boxed_unsync();
                ours.body(body)
                    .unwrap_or_else(|err| text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
            }
        }
    }

    /// The host namespace and name of the pod `call` names, if the host pod there is this
    /// instance's copy of that virtual pod (of that UID, when the call names one).
    async fn host_pod(&self, call: &Call) -> Result<Option<(String, String)>, kube::Error> {
        let Some(place) = self.target.place(&call.namespace) else {
            return Ok(None);
        };
        let name = self.target.host_name(&call.namespace, &call.pod);
        let api: Api<Pod> = Api::namespaced(self.host.clone(), &place.namespace);
        let Some(copy) = api.get_metadata_opt(&name).await? else {
            return Ok(None);
        };
        let of = marks::virtual_ref(copy.annotations());
        let ours = marks::is_copy_of(&self.target.instance, copy.labels())
            && of.is_some_and(|of| {
                of.namespace == call.namespace
                    && of.name == call.pod
                    && call.uid.as_ref().is_none_or(|uid| *uid == of.uid)
            });
        Ok(ours.then_some((place.namespace, name)))
    }
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
