//! What a kubelet API request asks, and the host API request that answers it. Pure, so every
//! path and parameter kubectl and the API server send is unit-tested.

use std::fmt;

/// A kubelet API call the syncer answers, for a virtual pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: Kind,
    /// The virtual pod's namespace and name.
    pub namespace: String,
    pub pod: String,
    /// The virtual pod's UID, when the path names it.
    pub uid: Option<String>,
    /// The container, for all but port-forward.
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logs,
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    /// The pod subresource of the host API that answers it.
    pub fn subresource(self) -> &'static str {
        match self {
            Kind::Logs => "log",
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }

    /// Whether the call is a stream upgraded from HTTP (SPDY or WebSocket).
    pub fn upgrades(self) -> bool {
        !matches!(self, Kind::Logs)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Logs => "containerLogs",
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portForward",
        }
    }
}

/// Why a path is not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A kubelet endpoint the virtual nodes do not serve (501).
    Unsupported(String),
    /// A served endpoint with a malformed path (400).
    BadPath(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unsupported(path) => write!(
                f,
                "the kubelet of a virtual node serves containerLogs, exec, attach and \
                 portForward only, not {path}"
            ),
            Refusal::BadPath(path) => write!(f, "malformed kubelet API path {path}"),
        }
    }
}

/// The call `path` asks for. Paths are those the API server sends a kubelet:
/// `/containerLogs/NS/POD/CONTAINER`, `/exec|attach/NS/POD[/UID]/CONTAINER`,
/// `/portForward/NS/POD[/UID]`.
pub fn parse(path: &str) -> Result<Call, Refusal> {
    let mut segments = path.trim_start_matches('/').split('/');
    let kind = match segments.next() {
        Some("containerLogs") => Kind::Logs,
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portForward") => Kind::PortForward,
        _ => return Err(Refusal::Unsupported(path.to_owned())),
    };
    let rest: Vec<&str> = segments.collect();
    let bad = || Refusal::BadPath(path.to_owned());
    if rest.iter().any(|s| s.is_empty() || s.contains('%')) {
        return Err(bad());
    }
    let owned = |s: &&str| Some((*s).to_owned());
    let (namespace, pod, uid, container) = match (kind, rest.as_slice()) {
        (Kind::Logs, [ns, pod, container]) => (ns, pod, None, owned(container)),
        (Kind::Exec | Kind::Attach, [ns, pod, container]) => (ns, pod, None, owned(container)),
        (Kind::Exec | Kind::Attach, [ns, pod, uid, container]) => {
            (ns, pod, owned(uid), owned(container))
        }
        (Kind::PortForward, [ns, pod]) => (ns, pod, None, None),
        (Kind::PortForward, [ns, pod, uid]) => (ns, pod, owned(uid), None),
        _ => return Err(bad()),
    };
    Ok(Call {
        kind,
        namespace: (*namespace).to_owned(),
        pod: (*pod).to_owned(),
        uid,
        container,
    })
}

/// The query of the host API request: the parameters of `query` the subresource knows, under
/// its names (a kubelet gets exec's streams as `input`, `output`, `error`; the API takes
/// `stdin`, `stdout`, `stderr`), and the container. Anything else is dropped, so nothing but
/// the options of the call reaches the host.
pub fn host_query(kind: Kind, query: Option<&str>, container: Option<&str>) -> String {
    let pairs = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")));
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in pairs {
        let renamed = match (kind, key) {
            (
                Kind::Logs,
                "follow" | "tailLines" | "sinceSeconds" | "sinceTime" | "timestamps" | "previous"
                | "limitBytes" | "stream",
            ) => key,
            // The kubelet's own name for tailLines; `all` means no limit.
            (Kind::Logs, "tail") if value == "all" => continue,
            (Kind::Logs, "tail") => "tailLines",
            (Kind::Exec | Kind::Attach, "input" | "stdin") => "stdin",
            (Kind::Exec | Kind::Attach, "output" | "stdout") => "stdout",
            (Kind::Exec | Kind::Attach, "error" | "stderr") => "stderr",
            (Kind::Exec | Kind::Attach, "tty") => "tty",
            (Kind::Exec, "command") => "command",
            (Kind::PortForward, "port") => "port",
            _ => continue,
        };
        // Passed as it came (still encoded), but a `;` is encoded too: a host API server that
        // split parameters on it would read another parameter out of the value.
        out.push((renamed.to_owned(), value.replace(';', "%3B")));
    }
    if let Some(container) = container {
        out.push(("container".into(), encode(container)));
    }
    out.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes what is not unreserved in a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of the host API request for `kind` on host pod `namespace/pod`.
pub fn host_path(kind: Kind, namespace: &str, pod: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/{}",
        kind.subresource()
    )
}

/// What the tenant reads of the host's refusal `body` of a call on host pod
/// `host_namespace/host_pod`: its message (the `message` of a Status, or the text), in the
/// virtual names of the pod and its namespace, so no host name reaches the virtual cluster.
pub fn tenant_message(body: &[u8], host: (&str, &str), virt: (&str, &str)) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|status| status.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    crate::translate::in_virtual_names(&message, host, virt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_in_refusals_become_virtual_ones() {
        let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure",
            "message":"previous terminated container \"web\" in pod \"web-x-shop-x-demo\" not found",
            "reason":"BadRequest","code":400}"#;
        assert_eq!(
            tenant_message(status, ("team-a", "web-x-shop-x-demo"), ("shop", "web")),
            "previous terminated container \"web\" in pod \"web\" not found"
        );
        assert_eq!(
            tenant_message(
                b"pods \"web-x-shop-x-demo\" not found in team-a\n",
                ("team-a", "web-x-shop-x-demo"),
                ("shop", "web"),
            ),
            "pods \"web\" not found in shop"
        );
    }

    #[test]
    fn every_path_the_api_server_sends_is_understood() {
        let call = parse("/containerLogs/shop/web-0/nginx").unwrap();
        assert_eq!(call.kind, Kind::Logs);
        assert_eq!(
            (call.namespace.as_str(), call.pod.as_str()),
            ("shop", "web-0")
        );
        assert_eq!(call.container.as_deref(), Some("nginx"));
        let call = parse("/exec/shop/web-0/nginx").unwrap();
        assert_eq!((call.kind, call.uid), (Kind::Exec, None));
        let call = parse("/attach/shop/web-0/1234-uid/nginx").unwrap();
        assert_eq!(call.kind, Kind::Attach);
        assert_eq!(call.uid.as_deref(), Some("1234-uid"));
        assert_eq!(call.container.as_deref(), Some("nginx"));
        let call = parse("/portForward/shop/web-0").unwrap();
        assert_eq!((call.kind, call.container), (Kind::PortForward, None));
        let call = parse("/portForward/shop/web-0/1234-uid").unwrap();
        assert_eq!(call.uid.as_deref(), Some("1234-uid"));
    }

    #[test]
    fn other_endpoints_are_unsupported_and_malformed_paths_bad() {
        for path in [
            "/stats/summary",
            "/metrics/resource",
            "/pods",
            "/runningpods/",
            "/configz",
            "/checkpoint/shop/web-0/nginx",
            "/",
        ] {
            assert!(
                matches!(parse(path), Err(Refusal::Unsupported(_))),
                "{path}"
            );
        }
        for path in [
            "/containerLogs/shop/web-0",
            "/containerLogs/shop/web-0/nginx/extra",
            "/exec/shop//nginx",
            "/portForward/shop",
            "/exec/shop/web%2F0/nginx",
        ] {
            assert!(matches!(parse(path), Err(Refusal::BadPath(_))), "{path}");
        }
        let message = parse("/stats/summary").unwrap_err().to_string();
        assert!(message.contains("/stats/summary"), "{message}");
    }

    #[test]
    fn log_options_pass_and_nothing_else_does() {
        let query = "follow=true&tailLines=10&sinceSeconds=5&sinceTime=2026-12-02T10%3A00%3A00Z\
                     &timestamps=true&previous=true&limitBytes=100&stream=Stdout\
                     &insecureSkipTLSVerifyBackend=true&command=x";
        assert_eq!(
            host_query(Kind::Logs, Some(query), Some("nginx")),
            "follow=true&tailLines=10&sinceSeconds=5&sinceTime=2026-12-02T10%3A00%3A00Z\
             &timestamps=true&previous=true&limitBytes=100&stream=Stdout&container=nginx"
        );
        assert_eq!(
            host_query(Kind::Logs, Some("tail=3"), Some("c")),
            "tailLines=3&container=c"
        );
        assert_eq!(
            host_query(Kind::Logs, Some("tail=all"), Some("c")),
            "container=c"
        );
        assert_eq!(
            host_query(Kind::Logs, Some("stream=x;container=other"), Some("c")),
            "stream=x%3Bcontainer=other&container=c"
        );
    }

    #[test]
    fn stream_flags_take_the_api_names() {
        assert_eq!(
            host_query(
                Kind::Exec,
                Some("command=sh&command=-c&command=echo%20hi&input=1&output=1&error=1&tty=1"),
                Some("nginx"),
            ),
            "command=sh&command=-c&command=echo%20hi&stdin=1&stdout=1&stderr=1&tty=1\
             &container=nginx"
        );
        // attach runs no command.
        assert_eq!(
            host_query(Kind::Attach, Some("command=sh&output=1"), Some("c")),
            "stdout=1&container=c"
        );
        assert_eq!(
            host_query(Kind::PortForward, Some("port=8080&command=x"), None),
            "port=8080"
        );
        assert_eq!(
            host_path(Kind::PortForward, "team-a", "web-x-shop-x-demo"),
            "/api/v1/namespaces/team-a/pods/web-x-shop-x-demo/portforward"
        );
    }
}
