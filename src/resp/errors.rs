//! Errors of the lower layers as RESP error replies: argument errors,
//! routing errors, a wrong argument count.

use super::args::ArgError;
use super::reply::Reply;
use crate::cluster::ClusterError;

pub(super) fn wrong_args(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub(super) fn arg_err(e: ArgError) -> Reply {
    Reply::error(e.message())
}

pub(super) fn cluster_err(e: ClusterError) -> Reply {
    Reply::error(e.resp_message())
}
