//! The kubelet API the syncer serves for its virtual nodes: where it listens, the identity it
//! accepts, and the files the operator hands it. The operator renders these, the syncer reads
//! them, the tests reach the endpoint through them.

/// Port of the syncer's kubelet API, in its pods and on its Service; the virtual nodes
/// advertise it as `status.daemonEndpoints.kubeletEndpoint.port`.
pub const PORT: u16 = 10250;
/// Name of that port on the syncer's container and Service.
pub const PORT_NAME: &str = "kubelet";

/// Common name of the client certificate the virtual API server presents to kubelets. The
/// syncer's kubelet API answers that certificate only: every other one the instance's CA
/// signed (the admin's, the syncer's own) is refused.
pub const CLIENT_COMMON_NAME: &str = "kube-apiserver-kubelet-client";

/// Keys of the syncer's credentials Secret for the kubelet API: the serving certificate and
/// key, and the CA that signs the virtual API server's client certificate.
pub const SERVING_CERT_KEY: &str = "kubelet.crt";
pub const SERVING_KEY_KEY: &str = "kubelet.key";
pub const CLIENT_CA_KEY: &str = "kubelet-client-ca.crt";

/// The syncer's flags for it.
pub mod flag {
    /// `ADDRESS:PORT` to listen on.
    pub const LISTEN: &str = "--kubelet-listen";
    /// `IP:PORT` the virtual nodes advertise: the syncer Service's ClusterIP, where the
    /// virtual API server reaches the syncer.
    pub const ADVERTISE: &str = "--kubelet-advertise";
    pub const TLS_CERT_FILE: &str = "--kubelet-tls-cert-file";
    pub const TLS_KEY_FILE: &str = "--kubelet-tls-key-file";
    pub const CLIENT_CA_FILE: &str = "--kubelet-client-ca-file";
}
