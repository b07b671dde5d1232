//! The node's hibernation loop (`shard::hibernate` owns the state and the
//! decisions): it pings every peer, wakes the sleeping followers whose
//! leader is lost, and asks the idle groups this node leads to hibernate.
//! Kept apart from `hibernate` so that the host, which calls `hibernate`,
//! and this loop, which walks the host's replicas, import in one direction.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;

use super::hibernate::{leader_may_hibernate, HibernateRequest, Hibernation, LeaderView};
use super::host::{Host, Replica};
use super::types::NodeId;

/// How long a ping or a hibernate request may wait for its answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Scan for groups that may hibernate every this many pings.
const SCAN_EVERY: u64 = 4;

/// The node's hibernation loop: every `ping_every` ping each peer and wake
/// the followers whose leader is lost; every `SCAN_EVERY` (4) pings ask the
/// idle groups this node leads to hibernate.
pub async fn run(host: Arc<Host>) {
    let h = host.hibernation.clone();
    let mut every = tokio::time::interval(h.config.ping_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        every.tick().await;
        n += 1;
        match super::codec::encode(super::codec::Format::Liveness, &h.ping()) {
            Ok(payload) => {
                for (peer, addr) in host.transport.peers() {
                    if peer == h.node_id {
                        continue;
                    }
                    let (host, payload) = (host.clone(), payload.clone());
                    tokio::spawn(async move {
                        let r = host
                            .transport
                            .call_raw(&addr, 0, super::stream::KIND_PING, payload, ASK_TIMEOUT)
                            .await;
                        if let Err(e) = r {
                            tracing::trace!(peer, "ping: {e:?}");
                        }
                    });
                }
            }
            Err(e) => tracing::error!("cannot encode a liveness ping: {e}"),
        }
        for (gid, why) in h.followers_to_wake() {
            match host.get(gid) {
                Some(r) => {
                    tracing::info!(group = gid, "hibernating follower wakes: {why}");
                    if let Some(raft) = r.openraft() {
                        h.wake(gid, &r.sleep, raft, why);
                    }
                }
                None => h.forget(gid),
            }
        }
        let Some(after) = h.config.hibernate_after else {
            continue;
        };
        if !n.is_multiple_of(SCAN_EVERY) {
            continue;
        }
        for r in host.replicas() {
            let Some(view) = leader_view(&h, &r) else {
                continue;
            };
            if r.sleep.is_asleep() {
                // A proposal that did not come through a request (none
                // should) still wakes the group it left unsettled.
                if let Err(why) = leader_may_hibernate(&view, Duration::ZERO) {
                    if let Some(raft) = r.openraft() {
                        h.wake(r.record.group_id, &r.sleep, raft, why);
                    }
                }
            } else if r.sleep.is_awake() && leader_may_hibernate(&view, after).is_ok() {
                tokio::spawn(ask(host.clone(), r));
            }
        }
    }
}

/// `None` for a replica that does not lead, and for a batch group (which
/// does not hibernate yet).
fn leader_view(h: &Hibernation, r: &Replica) -> Option<LeaderView> {
    let rx = r.openraft()?.metrics();
    let m = rx.borrow_watched();
    if m.state != openraft::ServerState::Leader {
        return None;
    }
    let membership = m.membership_config.membership();
    let uniform = membership.get_joint_config().len() == 1;
    let learners = membership.learner_ids().next().is_some();
    Some(LeaderView {
        is_leader: true,
        last_index: m.last_log_index,
        applied: m.last_applied.map(|l| l.index),
        matched: m.replication.as_ref().map(|rep| {
            rep.iter()
                .map(|(id, l)| (*id, l.map(|l| l.index)))
                .collect()
        }),
        uniform,
        learners,
        idle_for: h.idle_for(&r.sleep),
    })
}

/// Ask the followers of the group `r` leads to hibernate, then sleep if
/// every one of them did.
async fn ask(host: Arc<Host>, r: Arc<Replica>) {
    use super::codec::{self, Format};
    let h = &host.hibernation;
    let gid = r.record.group_id;
    let Some(stamp) = h.begin_asking(gid, &r.sleep) else {
        return;
    };
    let Some(raft) = r.openraft() else {
        return;
    };
    let m = raft.metrics().borrow_watched().clone();
    let req = HibernateRequest {
        leader: h.node_id,
        term: m.current_term,
        last_index: m.last_log_index,
        boot: h.boot,
    };
    let membership = m.membership_config.membership();
    let followers: Vec<(NodeId, String)> = membership
        .voter_ids()
        .filter(|id| *id != h.node_id)
        .map(|id| {
            let addr = host
                .transport
                .peer_addr(id)
                .or_else(|| membership.get_node(&id).map(|n| n.addr.clone()))
                .unwrap_or_default();
            (id, addr)
        })
        .collect();
    let all = match codec::encode(Format::Hibernate, &req) {
        Err(e) => {
            tracing::error!(group = gid, "cannot encode a hibernate request: {e}");
            false
        }
        Ok(payload) => {
            let asks = followers.iter().map(|(id, addr)| {
                let (transport, payload) = (&host.transport, payload.clone());
                async move {
                    let raw = transport
                        .call_raw(
                            addr,
                            gid,
                            super::stream::KIND_HIBERNATE,
                            payload,
                            ASK_TIMEOUT,
                        )
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    let answer: Result<(), String> =
                        codec::decode(Format::HibernateReply, &raw).map_err(|e| e.to_string())?;
                    answer.map_err(|why| format!("node {id}: {why}"))
                }
            });
            let answers = futures::future::join_all(asks).await;
            match answers.into_iter().find_map(Result::err) {
                Some(why) => {
                    tracing::debug!(group = gid, "stays awake: {why}");
                    false
                }
                None => true,
            }
        }
    };
    if h.finish_asking(gid, &r.sleep, raft, stamp, all) {
        tracing::debug!(group = gid, "hibernating");
    }
}
