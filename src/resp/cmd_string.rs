//! Data commands: the string family. Each command is parsed into a shard
//! request value (`shard::command`), routed by key slot, and the shard's
//! answer turned into a reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::args::Args;
use super::reply::Reply;
use super::session::{arg_err, cluster_err, Session};
use crate::cluster::routes::TableRoute;
use crate::cluster::slot::slot;
use crate::cluster::ClusterError;
use crate::meta::descriptor::TableState;
use crate::meta::etcd::now_ms;
use crate::shard::command::{Expiry, OpReply, ReadOp, SetCond, ShardRequest, WriteCmd, WriteOp};

impl Session {
    /// The table this connection works in, if it is routable.
    fn current_table(&self) -> Result<Arc<TableRoute>, ClusterError> {
        let view = self.shared.client.routes();
        match view.table(&self.table) {
            Some(t) => match t.desc.state {
                TableState::Available => Ok(t.clone()),
                TableState::Creating => Err(ClusterError::TryAgain(format!(
                    "table '{}' is being created",
                    self.table
                ))),
                TableState::Deleting => Err(ClusterError::TableNotAvailable {
                    name: self.table.clone(),
                    state: "being dropped",
                }),
            },
            None if self.table == "default" => Err(ClusterError::TryAgain(
                "the cluster is starting: table 'default' is not created yet".into(),
            )),
            None => Err(ClusterError::UnknownTable(self.table.clone())),
        }
    }

    pub(super) fn read(&self, op: ReadOp) -> ShardRequest {
        ShardRequest::Read {
            op,
            linearizable: !self.readonly,
            now_ms: now_ms(),
        }
    }

    pub(super) async fn data(&mut self, name: &str, args: &mut Args) -> Reply {
        let table = match self.current_table() {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let max_value = self.shared.config.max_value_len;
        match name {
            "get" => {
                let key = args.next_bytes().unwrap_or_default();
                let req = self.read(ReadOp::Get { key: key.clone() });
                self.one(&table, &key, req).await
            }
            "set" => match parse_set(args, max_value) {
                Ok(op) => {
                    let key = op.keys()[0].clone();
                    let req = ShardRequest::Write(WriteCmd {
                        now_ms: now_ms(),
                        op,
                    });
                    self.one(&table, &key, req).await
                }
                Err(r) => r,
            },
            "del" | "unlink" => {
                let keys = args.rest();
                self.fan_out_sum(&table, keys, |keys| {
                    ShardRequest::Write(WriteCmd {
                        now_ms: now_ms(),
                        op: WriteOp::Del { keys },
                    })
                })
                .await
            }
            "exists" => {
                let keys = args.rest();
                let readonly = self.readonly;
                self.fan_out_sum(&table, keys, |keys| ShardRequest::Read {
                    op: ReadOp::Exists { keys },
                    linearizable: !readonly,
                    now_ms: now_ms(),
                })
                .await
            }
            _ => Reply::error(format!("ERR unknown command '{name}'")),
        }
    }

    async fn one(&self, table: &TableRoute, key: &[u8], req: ShardRequest) -> Reply {
        let shard = table.desc.shard_for_slot(slot(key));
        match self.shared.client.execute(table, shard, req).await {
            Ok(r) => op_reply(r),
            Err(e) => cluster_err(e),
        }
    }

    /// Split keys by shard, run one request per shard in parallel, and add up
    /// the integer replies (DEL, EXISTS).
    async fn fan_out_sum(
        &self,
        table: &Arc<TableRoute>,
        keys: Vec<Bytes>,
        make: impl Fn(Vec<Bytes>) -> ShardRequest,
    ) -> Reply {
        let mut by_shard: BTreeMap<usize, Vec<Bytes>> = BTreeMap::new();
        for k in keys {
            by_shard
                .entry(table.desc.shard_for_slot(slot(&k)))
                .or_default()
                .push(k);
        }
        let calls = by_shard.into_iter().map(|(shard, keys)| {
            let req = make(keys);
            let client = self.shared.client.clone();
            let table = table.clone();
            async move { client.execute(&table, shard, req).await }
        });
        let mut total = 0;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(OpReply::Int(n)) => total += n,
                Ok(other) => return op_reply(other),
                Err(e) => return cluster_err(e),
            }
        }
        Reply::Int(total)
    }
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
fn parse_set(args: &mut Args, max_value: usize) -> Result<WriteOp, Reply> {
    let key = args.next_bytes().map_err(arg_err)?;
    let value = args.next_bytes().map_err(arg_err)?;
    if value.len() > max_value {
        return Err(Reply::error("ERR value is too large"));
    }
    let mut cond = SetCond::Always;
    let mut expiry = Expiry::Clear;
    let mut expiry_set = false;
    let mut get = false;
    let syntax = || Reply::error("ERR syntax error");
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "NX" if cond == SetCond::Always => cond = SetCond::IfAbsent,
            "XX" if cond == SetCond::Always => cond = SetCond::IfPresent,
            "GET" => get = true,
            "KEEPTTL" if !expiry_set => {
                expiry = Expiry::Keep;
                expiry_set = true;
            }
            "EX" | "PX" | "EXAT" | "PXAT" if !expiry_set => {
                let n = args
                    .next_i64()
                    .map_err(|_| Reply::error("ERR value is not an integer or out of range"))?;
                if n <= 0 {
                    return Err(Reply::error(format!(
                        "ERR invalid expire time in '{}' command",
                        "set"
                    )));
                }
                let now = now_ms() as i64;
                let at = match opt.as_str() {
                    "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
                    "PX" => n.checked_add(now),
                    "EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                let Some(at) = at else {
                    return Err(Reply::error("ERR invalid expire time in 'set' command"));
                };
                expiry = Expiry::At(at as u64);
                expiry_set = true;
            }
            _ => return Err(syntax()),
        }
    }
    Ok(WriteOp::Set {
        key,
        value,
        expiry,
        cond,
        get,
    })
}

fn op_reply(r: OpReply) -> Reply {
    match r {
        OpReply::Ok => Reply::ok(),
        OpReply::Nil => Reply::Nil,
        OpReply::Int(n) => Reply::Int(n),
        OpReply::Bulk(b) => Reply::Bulk(b),
        OpReply::Array(items) => Reply::Array(items.into_iter().map(op_reply).collect()),
        OpReply::Error(e) => Reply::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options() {
        let parse = |s: &str| {
            let parts: Vec<Bytes> = s
                .split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect();
            parse_set(
                &mut {
                    let mut a = Args::new(parts);
                    let _ = &mut a;
                    a
                },
                100,
            )
        };
        assert!(matches!(
            parse("set k v NX"),
            Ok(WriteOp::Set {
                cond: SetCond::IfAbsent,
                ..
            })
        ));
        assert!(parse("set k v NX XX").is_err());
        assert!(parse("set k v EX 10 PX 5").is_err());
        assert!(parse("set k v EX 0").is_err());
        assert!(parse("set k v EX notanumber").is_err());
        assert!(matches!(
            parse("set k v KEEPTTL GET"),
            Ok(WriteOp::Set {
                expiry: Expiry::Keep,
                get: true,
                ..
            })
        ));
        assert!(parse(&format!("set k {}", "x".repeat(101))).is_err());
    }
}
