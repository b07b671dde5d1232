//! gRPC services of a node: `RaftService` (peer replicas) and `ShardService`
//! (routers, `shoal status`). Both only decode, dispatch by group id to the
//! [`Host`], and encode, each message in its own [`codec`] format; no
//! decision is made here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::InstallSnapshotRequest;
use openraft::SnapshotSegmentId;

use super::codec::{self, Format};
use super::command::{OpReply, ShardRequest};
use super::host::Host;
use super::network::encode_result;
use super::snapshot::Receiver;
use super::status::node_status;
use super::types::TypeConfig;
use super::ShardError;
use crate::proto::raft_service_server::RaftService;
use crate::proto::shard_service_server::ShardService;
use crate::proto::{
    ChangeMembershipRequest, ExecuteReply, ExecuteRequest, RaftMessage, StatusReply, StatusRequest,
};

#[derive(Clone)]
pub struct NodeService {
    pub host: Arc<Host>,
    /// Snapshots being received, checked chunk by chunk.
    pub snapshots: Arc<Receiver>,
    /// Largest snapshot accepted, in bytes.
    pub max_snapshot_len: u64,
}

impl NodeService {
    pub fn new(host: Arc<Host>, max_snapshot_len: u64) -> NodeService {
        NodeService {
            host,
            snapshots: Arc::default(),
            max_snapshot_len,
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(format: Format, raw: &[u8]) -> Result<T, Status> {
    codec::decode(format, raw).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

impl NodeService {
    fn raft(&self, gid: u64) -> Result<super::types::Raft, Status> {
        self.host
            .get(gid)
            .map(|r| r.raft.clone())
            .ok_or_else(|| Status::not_found(format!("group {gid} is not hosted here")))
    }
}

#[tonic::async_trait]
impl RaftService for NodeService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let raft = self.raft(msg.group_id)?;
        let res = raft
            .append_entries(decode(Format::RaftAppend, &msg.payload)?)
            .await;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftAppendReply, &res),
        }))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let raft = self.raft(msg.group_id)?;
        let res = raft.vote(decode(Format::RaftVote, &msg.payload)?).await;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftVoteReply, &res),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let gid = msg.group_id;
        let raft = self.raft(gid)?;
        let req: InstallSnapshotRequest<TypeConfig> = decode(Format::RaftSnapshot, &msg.payload)?;
        let checked = self.snapshots.chunk(
            gid,
            &req.meta.snapshot_id,
            req.offset,
            &req.data,
            req.done,
            self.max_snapshot_len,
        );
        let res = match checked {
            Ok(_) => raft.install_snapshot(req).await,
            Err(e) => {
                // Refused before openraft saw the last chunk: answer as
                // openraft does to a chunk out of place, so the leader sends
                // the snapshot again from the start.
                tracing::error!(group = gid, snapshot = %req.meta.snapshot_id, "snapshot refused: {e}; the leader will send it again");
                let at = |offset| SnapshotSegmentId {
                    id: req.meta.snapshot_id.clone(),
                    offset,
                };
                Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                    SnapshotMismatch {
                        expect: at(0),
                        got: at(req.offset),
                    },
                )))
            }
        };
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftSnapshotReply, &res),
        }))
    }
}

#[tonic::async_trait]
impl ShardService for NodeService {
    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let msg = req.into_inner();
        let result: Result<OpReply, ShardError> =
            match decode::<ShardRequest>(Format::ShardRequest, &msg.request) {
                Ok(request) => {
                    let max_reply = match msg.max_reply_len {
                        0 => usize::MAX,
                        n => usize::try_from(n).unwrap_or(usize::MAX),
                    };
                    self.host
                        .execute_bounded(msg.group_id, request, max_reply)
                        .await
                }
                Err(e) => Err(ShardError::BadRequest(e.message().to_string())),
            };
        Ok(Response::new(ExecuteReply {
            reply: encode_result(Format::ShardReply, &result),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let msg = req.into_inner();
        let result: Result<OpReply, ShardError> =
            match decode(Format::MembershipChange, &msg.change) {
                Ok(change) => self.host.change_membership(msg.group_id, change).await,
                Err(e) => Err(ShardError::BadRequest(e.message().to_string())),
            };
        Ok(Response::new(ExecuteReply {
            reply: encode_result(Format::ShardReply, &result),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let status = node_status(&self.host, &req.into_inner().group_ids);
        let json = serde_json::to_vec(&status).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusReply { json }))
    }
}
