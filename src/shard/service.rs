//! gRPC services of a node: `RaftService` (peer replicas) and `ShardService`
//! (routers, `shoal status`). Both only decode, dispatch by group id to the
//! [`Host`], and encode; no decision is made here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::command::{OpReply, ShardRequest};
use super::host::Host;
use super::network::encode_result;
use super::status::node_status;
use super::ShardError;
use crate::proto::raft_service_server::RaftService;
use crate::proto::shard_service_server::ShardService;
use crate::proto::{
    ChangeMembershipRequest, ExecuteReply, ExecuteRequest, RaftMessage, StatusReply, StatusRequest,
};

#[derive(Clone)]
pub struct NodeService {
    pub host: Arc<Host>,
}

fn decode<T: for<'a> serde::Deserialize<'a>>(raw: &[u8]) -> Result<T, Status> {
    bincode::deserialize(raw).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
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
        let res = raft.append_entries(decode(&msg.payload)?).await;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(&res),
        }))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let raft = self.raft(msg.group_id)?;
        let res = raft.vote(decode(&msg.payload)?).await;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(&res),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let raft = self.raft(msg.group_id)?;
        let res = raft.install_snapshot(decode(&msg.payload)?).await;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(&res),
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
        let result: Result<OpReply, ShardError> = match decode::<ShardRequest>(&msg.request) {
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
            reply: encode_result(&result),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let msg = req.into_inner();
        let result: Result<OpReply, ShardError> = match decode(&msg.change) {
            Ok(change) => self.host.change_membership(msg.group_id, change).await,
            Err(e) => Err(ShardError::BadRequest(e.message().to_string())),
        };
        Ok(Response::new(ExecuteReply {
            reply: encode_result(&result),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let status = node_status(&self.host, &req.into_inner().group_ids);
        let json = serde_json::to_vec(&status).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusReply { json }))
    }
}
