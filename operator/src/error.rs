//! The operator's errors, with a bounded category for metric labels and Event reasons.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("building the desired objects: {0}")]
    Build(#[from] crate::build::Error),
    #[error("issuing certificates: {0}")]
    Pki(#[from] crate::pki::Error),
    #[error("the watch caches stopped")]
    CachesGone,
    /// The cleanup must wait (the finalizer stays until it returns without error).
    #[error("cleanup waits: {0}")]
    CleanupPending(String),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Wraps an API error with what was being done.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Kube { what, source }
    }

    /// One of a few fixed words, for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    409 => "conflict",
                    403 => "forbidden",
                    404 => "not-found",
                    422 => "invalid",
                    429 => "throttled",
                    500..=599 => "server-error",
                    _ => "api-error",
                },
                _ => "connection",
            },
            Error::Build(_) => "build",
            Error::Pki(_) => "certificates",
            Error::CachesGone => "caches",
            Error::CleanupPending(_) => "cleanup-pending",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
        }
    }

    /// How long to wait before trying again: soon after a conflict (someone else wrote first),
    /// later when a person must act (no permission, an object the server refuses).
    pub fn retry_after(&self) -> Duration {
        match self.category() {
            "conflict" | "not-found" => Duration::from_secs(1),
            "cleanup-pending" => Duration::from_secs(2),
            "forbidden" | "invalid" | "build" | "certificates" => Duration::from_secs(60),
            _ => Duration::from_secs(5),
        }
    }
}
