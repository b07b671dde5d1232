//! Table commands: TABLE.CREATE, TABLE.DROP, TABLE.LIST, TABLE.DESCRIBE,
//! TABLE.USE. Validation happens here; the etcd side lives in
//! `cluster::admin`.

use std::time::Duration;

use super::args::Args;
use super::errors::{arg_err, cluster_err};
use super::reply::Reply;
use super::session::Session;
use crate::clock::now_ms;
use crate::cluster::admin::{self, TableSpec};
use crate::cluster::ClusterError;
use crate::config::RaftEngine;
use crate::meta::descriptor::TableState;
use crate::shard::command::{OpReply, ReadOp, ShardRequest};
use crate::slot::MAX_SHARDS;

impl Session {
    /// TABLE.USE name: the table and its database index.
    pub(super) fn table_use(&self, args: &mut Args) -> Result<(String, u32), Reply> {
        let name = args.next_string().map_err(arg_err)?;
        let view = self.shared.client.routes();
        match view.table(&name) {
            Some(t) if t.desc.state != TableState::Deleting => Ok((name, t.desc.db_index)),
            _ => Err(cluster_err(ClusterError::UnknownTable(name))),
        }
    }

    pub(super) async fn table_drop(&mut self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let view = self.shared.client.routes();
        if view.table(&name).is_none() {
            return cluster_err(ClusterError::UnknownTable(name));
        }
        if name == "default" {
            return Reply::error("ERR table 'default' cannot be dropped (use FLUSHDB to empty it)");
        }
        match admin::drop_table(
            &self.shared.meta,
            &self.shared.client,
            &name,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(()) => Reply::ok(),
            Err(e) => cluster_err(e),
        }
    }

    /// `CLUSTER.DRAIN <node>`: start moving every replica off the node
    /// (refused, with the reason, when the others cannot hold them). Replies
    /// once the drain is recorded; the node is `removed` when it is empty.
    pub(super) async fn cluster_drain(&mut self, args: &mut Args) -> Reply {
        let id = match args.next_u64() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        match crate::cluster::rebalance::drain(&self.shared.meta, id).await {
            Ok(()) => Reply::ok(),
            Err(e) => cluster_err(e),
        }
    }

    pub(super) fn table_list(&mut self, _args: &mut Args) -> Reply {
        let view = self.shared.client.routes();
        let mut names: Vec<&String> = view
            .tables
            .iter()
            .filter(|(_, t)| t.desc.state != TableState::Deleting)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Reply::Array(names.into_iter().map(|n| Reply::bulk(n.clone())).collect())
    }

    pub(super) async fn table_describe(&self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let view = self.shared.client.routes();
        let Some(t) = view.table(&name) else {
            return cluster_err(ClusterError::UnknownTable(name));
        };
        let d = &t.desc;
        let leaders = admin::shard_leaders(&self.shared.client, d, false).await;
        // Live keys per shard (eventual counts from any replica; nil when a
        // shard cannot answer).
        let counts = futures::future::join_all((0..d.shards.len()).map(|i| {
            let req = ShardRequest::Read {
                op: ReadOp::DbSize,
                linearizable: false,
                now_ms: now_ms(),
            };
            self.shared.client.execute(t, i, req)
        }))
        .await;
        let shards = d
            .shards
            .iter()
            .zip(counts)
            .map(|(s, count)| {
                Reply::Map(vec![
                    (Reply::bulk("group_id"), Reply::Int(s.group_id as i64)),
                    (
                        Reply::bulk("slots"),
                        Reply::Array(vec![
                            Reply::Int(s.slots[0] as i64),
                            Reply::Int(s.slots[1] as i64),
                        ]),
                    ),
                    (
                        Reply::bulk("replicas"),
                        Reply::Array(s.replicas.iter().map(|r| Reply::Int(*r as i64)).collect()),
                    ),
                    (
                        Reply::bulk("leader"),
                        match leaders.get(&s.group_id) {
                            Some(l) => Reply::Int(*l as i64),
                            None => Reply::Nil,
                        },
                    ),
                    (
                        Reply::bulk("keys"),
                        match count {
                            Ok(OpReply::Int(n)) => Reply::Int(n),
                            _ => Reply::Nil,
                        },
                    ),
                ])
            })
            .collect();
        Reply::Map(vec![
            (Reply::bulk("name"), Reply::bulk(d.name.clone())),
            (Reply::bulk("table_id"), Reply::Int(d.table_id as i64)),
            (Reply::bulk("db_index"), Reply::Int(d.db_index as i64)),
            (Reply::bulk("state"), Reply::bulk(d.state.as_str())),
            (Reply::bulk("replicas"), Reply::Int(d.replicas as i64)),
            (Reply::bulk("engine"), Reply::bulk(d.engine.as_str())),
            (Reply::bulk("shards"), Reply::Array(shards)),
        ])
    }

    pub(super) async fn table_create(&self, args: &mut Args) -> Reply {
        let name = match args.next_string() {
            Ok(n) => n,
            Err(e) => return arg_err(e),
        };
        let option_next = |args: &Args| args.peek_upper().as_deref() == Some("ENGINE");
        let shards = if args.remaining() > 0 && !option_next(args) {
            match args.next_i64() {
                Ok(n) if (1..=i64::from(MAX_SHARDS)).contains(&n) => n as usize,
                _ => return Reply::error(format!("ERR shards must be between 1 and {MAX_SHARDS}")),
            }
        } else {
            self.shared.config.default_shards
        };
        let replicas = if args.remaining() > 0 && !option_next(args) {
            match args.next_i64() {
                Ok(n) if [1, 3, 5].contains(&n) => n as usize,
                _ => return Reply::error("ERR replicas must be 1, 3 or 5"),
            }
        } else {
            self.shared.config.default_replicas
        };
        let engine = if option_next(args) {
            let _ = args.next_string();
            match args
                .next_string()
                .ok()
                .as_deref()
                .and_then(RaftEngine::parse)
            {
                Some(e) => e,
                None => return Reply::error("ERR ENGINE must be openraft or batch"),
            }
        } else {
            self.shared.config.default_engine
        };
        if let Err(e) = args.finish() {
            return arg_err(e);
        }
        if !valid_table_name(&name) {
            return Reply::error(
                "ERR invalid table name: use 1 to 64 characters from a-z A-Z 0-9 _ - .",
            );
        }
        let spec = TableSpec {
            name: name.clone(),
            shards,
            replicas,
            db_index: None,
            engine,
        };
        let meta = &self.shared.meta;
        let desc = match admin::create_record(meta, &spec).await {
            Ok(d) => d,
            Err(e) => return cluster_err(e),
        };
        crate::failpoint::hit("table-create-after-record");
        let timeout = Duration::from_millis(self.shared.config.table_create_timeout_ms);
        if let Err(e) = admin::finish_creation(meta, &self.shared.client, &name, timeout).await {
            // Never leave a half-made table behind: undo it.
            if let Ok(Some((d, rev))) = meta.get_table(&name).await {
                if d.table_id == desc.table_id {
                    let _ = admin::rollback_creation(meta, &self.shared.client, &name, rev).await;
                }
            }
            return Reply::error(format!(
                "ERR table '{name}' could not be created and was rolled back: {}",
                e.resp_message()
            ));
        }
        // Reply only once this router can route to it.
        let mut rx = self.shared.client.routes_receiver();
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if rx
                    .borrow_and_update()
                    .table(&name)
                    .is_some_and(|t| t.desc.state == TableState::Available)
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        match ready {
            Ok(()) => Reply::ok(),
            Err(_) => Reply::error("TRYAGAIN table created but not yet visible to this router"),
        }
    }
}

/// Table names: 1 to 64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_table_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(valid_table_name("orders_2024.v1-a"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name("has space"));
        assert!(!valid_table_name(&"x".repeat(65)));
    }
}
