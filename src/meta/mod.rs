//! Cluster metadata in etcd: layout, table descriptors, membership and
//! liveness, watches, the cluster identity. What nodes *do* with it (the
//! reconciler, transaction recovery) lives next to the node, in `node/`.
//!
//! etcd is the one source of truth for which tables exist and where their
//! shards live. Single-shard requests never read it: routers and nodes mirror
//! what they need through watches ([`etcd::Meta::follow`]).

pub mod descriptor;
pub mod etcd;
pub mod identity;
pub mod placement;

/// Errors of the metadata layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl From<etcd_client::Error> for MetaError {
    fn from(e: etcd_client::Error) -> Self {
        MetaError::Etcd(etcd_reason(&e))
    }
}

/// What went wrong talking to etcd, in a few words (not tonic's debug
/// dump of the status).
pub fn etcd_reason(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let what = match s.code() {
                tonic::Code::Unavailable => "unreachable",
                tonic::Code::DeadlineExceeded => "did not answer in time",
                tonic::Code::Unauthenticated => "refused the credentials",
                tonic::Code::PermissionDenied => "denied the request",
                _ => "answered an error",
            };
            if s.message().is_empty() {
                what.to_string()
            } else {
                format!("{what} ({})", s.message())
            }
        }
        etcd_client::Error::TransportError(t) => format!("unreachable ({t})"),
        other => other.to_string(),
    }
}

impl From<serde_json::Error> for MetaError {
    fn from(e: serde_json::Error) -> Self {
        MetaError::Corrupt(e.to_string())
    }
}
