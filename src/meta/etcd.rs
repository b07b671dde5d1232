//! The etcd client: key layout, membership and liveness, counters, table
//! records, and [`Meta::follow`], which mirrors a key prefix in memory.
//!
//! Layout under `/shoal/<cluster>/` (DESIGN section 3):
//! `members/<id>`, `live/<id>` (leased), `tables/<name>`, `ids/<counter>`,
//! `tombstones/<group_id>`, `cluster` (the cluster record), `txns/<id>`
//! (cross-shard transaction decisions), `users/<name>` (ACL users, a JSON
//! record each, see `resp::acl::UserRecord`), `scripts/<sha1>` (SCRIPT LOAD's
//! bodies), `functions/<library>` (FUNCTION LOAD's library code, raw) and
//! `settings/<name>` (the cluster-wide settings nodes must know:
//! `notify-keyspace-events`, Redis's text). Every other metadata change is a
//! compare-and-swap transaction; readers follow watches and never poll etcd
//! for a single-shard request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::descriptor::TableDescriptor;
use super::MetaError;
use crate::clock::now_ms;

/// The key of the cluster-wide `notify-keyspace-events` setting.
pub const NOTIFY_KEYSPACE_EVENTS: &str = "settings/notify-keyspace-events";

/// `members/<id>`: persistent membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub rpc_addr: String,
    pub joined_at: u64,
    /// `active` (receives replicas), `draining` (replicas are moving off it)
    /// or `removed` (drained: holds nothing, may be stopped).
    #[serde(default)]
    pub state: MemberState,
}

/// Whether a member takes part in placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    #[default]
    Active,
    Draining,
    Removed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Removed => "removed",
        }
    }
}

/// Held while this process is the one elected for a duty (see
/// [`Meta::campaign`]). `lost` turns true once the lease is gone; writes that
/// must come from the elected process compare [`Leadership::value`].
pub struct Leadership {
    pub key: String,
    pub value: String,
    pub lease_id: i64,
    lost: Arc<std::sync::atomic::AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// `live/<id>`: present while the node holds its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInfo {
    pub rpc_addr: String,
    pub started_at: u64,
    pub version: String,
    /// The Raft engines this node can host replicas on
    /// (`RaftEngine::as_str`). Empty in the records of nodes older than the
    /// batch engine, which host only openraft groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
}

impl LiveInfo {
    /// Whether this node can host replicas on `engine`.
    pub fn hosts(&self, engine: crate::config::RaftEngine) -> bool {
        engine.is_openraft() || self.engines.iter().any(|e| e == engine.as_str())
    }
}

/// [`PrefixState::decode_all`]: (key, value, mod revision) of the values
/// that decode, and key -> error of those that do not.
pub type Decoded<T> = (Vec<(String, T, i64)>, BTreeMap<String, String>);

/// A prefix's keys (without the prefix) and values, as of `revision`.
#[derive(Debug, Clone, Default)]
pub struct PrefixState {
    pub revision: i64,
    /// key suffix -> (value, mod_revision)
    pub entries: BTreeMap<String, (Vec<u8>, i64)>,
}

impl PrefixState {
    /// The value of `key` (a full relative key such as
    /// [`NOTIFY_KEYSPACE_EVENTS`]) in this mirror of `prefix`.
    pub fn value(&self, prefix: &str, key: &str) -> Option<&[u8]> {
        let suffix = key.strip_prefix(prefix)?;
        self.entries.get(suffix).map(|(v, _)| &v[..])
    }

    /// Decode every value as JSON, and list the keys whose value does not
    /// decode with the error. Callers that act on absence (the reconciler)
    /// must treat an undecodable key as present-but-unknown, never as absent.
    pub fn decode_all<T: for<'a> Deserialize<'a>>(&self) -> Decoded<T> {
        let mut ok = Vec::new();
        let mut bad = BTreeMap::new();
        for (k, (v, rev)) in &self.entries {
            match serde_json::from_slice::<T>(v) {
                Ok(t) => ok.push((k.clone(), t, *rev)),
                Err(e) => {
                    bad.insert(k.clone(), e.to_string());
                }
            }
        }
        (ok, bad)
    }

    /// Decode every value as JSON, skipping (and logging) undecodable ones.
    /// Only for readers that never delete anything on absence.
    pub fn decoded<T: for<'a> Deserialize<'a>>(&self) -> Vec<(String, T, i64)> {
        self.entries
            .iter()
            .filter_map(|(k, (v, rev))| match serde_json::from_slice::<T>(v) {
                Ok(t) => Some((k.clone(), t, *rev)),
                Err(e) => {
                    tracing::warn!(key = %k, "undecodable metadata value: {e}");
                    None
                }
            })
            .collect()
    }
}

/// `cluster`: who this prefix belongs to. Created once, by the first node
/// that starts with an empty data dir; every node stamps its data dir with
/// it and refuses to start against a prefix whose record differs (or is
/// missing while it holds replicas). See [`super::identity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster name (the `<cluster>` of the prefix).
    pub name: String,
    /// Random, made once: tells a wiped-and-recreated prefix from the
    /// original.
    pub id: String,
    pub created_at: u64,
}

/// `tombstones/<group_id>`: written by TABLE.DROP in the same etcd
/// transaction that moves the table to `deleting`, and outliving the
/// descriptor. It is one of the only two things that let a node delete a
/// replica's data (the other: the group's own Raft membership no longer
/// holding the node). Each node in `nodes` removes itself once it holds no
/// replica of the group; the last one deletes the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub group_id: u64,
    pub table: String,
    pub table_id: u64,
    /// Nodes that may still hold a replica and have not confirmed.
    pub nodes: Vec<u64>,
    pub dropped_at: u64,
}

/// Decision state of a distributed transaction (`txns/<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnState {
    Pending,
    Committed,
    Aborted,
}

/// A shard taking part in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub table: String,
    pub group_id: u64,
}

/// `txns/<id>`: the decision record of a two-phase commit. Swapping `state`
/// from `pending` to `committed` is the commit point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub txn_id: u64,
    pub state: TxnState,
    pub participants: Vec<Participant>,
    /// The keys, for operators (lossy UTF-8).
    pub keys: Vec<String>,
    pub created_at: u64,
}

#[derive(Clone)]
pub struct Meta {
    client: Client,
    prefix: String,
}

impl Meta {
    /// Connect to etcd (`endpoints` like `http://127.0.0.1:2379`), plaintext
    /// and without a user.
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<Meta, MetaError> {
        Meta::connect_with(endpoints, cluster, &super::EtcdSecurity::default()).await
    }

    /// Connect to etcd with TLS and/or a user as `security` says.
    pub async fn connect_with(
        endpoints: &[String],
        cluster: &str,
        security: &super::EtcdSecurity,
    ) -> Result<Meta, MetaError> {
        let at = endpoints.join(",");
        let opts = security
            .options(endpoints)
            .map_err(|e| MetaError::Etcd(format!("{e:#}")))?
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let unusable = |reason: String| {
            MetaError::Etcd(format!(
                "cannot use etcd at {at}: {reason}; {}",
                super::etcd_hint(&reason, security)
            ))
        };
        // With a user, connecting authenticates: errors come from here.
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            Client::connect(endpoints, Some(opts)),
        )
        .await
        .map_err(|_| unusable("did not answer within 10 s".into()))?
        .map_err(|e| unusable(super::etcd_reason(&e)))?;
        // The client connects lazily: ask once now, so a wrong or dead
        // endpoint is one sentence naming it, at start.
        let mut probe = client.kv_client();
        let asked = tokio::time::timeout(
            Duration::from_secs(10),
            probe.get("/shoal/", Some(GetOptions::new().with_count_only())),
        )
        .await;
        match asked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unusable(super::etcd_reason(&e))),
            Err(_) => return Err(unusable("did not answer within 10 s".into())),
        }
        Ok(Meta {
            client,
            prefix: format!("/shoal/{cluster}/"),
        })
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client()
    }

    /// Write `members/<id>` (keeping the original `joined_at`).
    pub async fn register_member(&self, id: u64, rpc_addr: &str) -> Result<(), MetaError> {
        let key = self.key(&format!("members/{id}"));
        let existing = self.kv().get(key.clone(), None).await?;
        let old = existing
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<MemberInfo>(kv.value()).ok());
        // A drained (removed) node that is started again stays removed: it
        // takes no replicas until an operator decides otherwise.
        let info = MemberInfo {
            id,
            rpc_addr: rpc_addr.to_string(),
            joined_at: old.as_ref().map_or_else(now_ms, |m| m.joined_at),
            state: old.map_or(MemberState::Active, |m| m.state),
        };
        self.kv().put(key, serde_json::to_vec(&info)?, None).await?;
        Ok(())
    }

    /// Hold `live/<id>` under a lease for as long as the returned task runs,
    /// re-granting the lease if it is ever lost (etcd restarted, long pause).
    pub fn spawn_liveness(
        &self,
        id: u64,
        rpc_addr: String,
        ttl_secs: i64,
    ) -> tokio::task::JoinHandle<()> {
        let meta = self.clone();
        tokio::spawn(async move {
            let info = LiveInfo {
                rpc_addr,
                started_at: now_ms(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                engines: crate::config::RaftEngine::ALL
                    .map(|e| e.as_str().to_string())
                    .to_vec(),
            };
            loop {
                if let Err(e) = meta.hold_lease(id, &info, ttl_secs).await {
                    tracing::warn!("liveness lease lost: {e}; re-registering");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    async fn hold_lease(&self, id: u64, info: &LiveInfo, ttl: i64) -> Result<(), MetaError> {
        let mut lease = self.client.lease_client();
        let grant = lease.grant(ttl, None).await?;
        let lease_id = grant.id();
        self.kv()
            .put(
                self.key(&format!("live/{id}")),
                serde_json::to_vec(info)?,
                Some(PutOptions::new().with_lease(lease_id)),
            )
            .await?;
        tracing::info!(node = id, lease = lease_id, "registered as live");
        let (mut keeper, mut stream) = lease.keep_alive(lease_id).await?;
        let period = Duration::from_millis((ttl as u64 * 1000) / 3);
        loop {
            keeper.keep_alive().await?;
            match tokio::time::timeout(period * 2, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return Err(MetaError::Etcd("lease expired".into())),
                Ok(Ok(None)) => return Err(MetaError::Etcd("keep-alive stream closed".into())),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(MetaError::Etcd("keep-alive timed out".into())),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Read every key under `rest` (a prefix relative to the cluster prefix).
    pub async fn load_prefix(&self, rest: &str) -> Result<PrefixState, MetaError> {
        let full = self.key(rest);
        let resp = self
            .kv()
            .get(full.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let entries = resp
            .kvs()
            .iter()
            .map(|kv| {
                let k = String::from_utf8_lossy(kv.key());
                let suffix = k.strip_prefix(&full).unwrap_or(&k).to_string();
                (suffix, (kv.value().to_vec(), kv.mod_revision()))
            })
            .collect();
        Ok(PrefixState { revision, entries })
    }

    /// Mirror a prefix in memory: load it, then follow a watch from the
    /// loaded revision; on any watch failure, reload and watch again. The
    /// receiver always holds a complete, consistent state.
    pub async fn follow(&self, rest: &str) -> Result<watch::Receiver<Arc<PrefixState>>, MetaError> {
        let initial = self.load_prefix(rest).await?;
        tracing::info!(prefix = %self.key(rest), revision = initial.revision, "watching");
        let (tx, rx) = watch::channel(Arc::new(initial));
        let meta = self.clone();
        let rest = rest.to_string();
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                if let Err(e) = meta.watch_into(&rest, &tx).await {
                    tracing::warn!(prefix = %meta.key(&rest), "watch lost: {e}; reloading");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                match meta.load_prefix(&rest).await {
                    Ok(state) => {
                        tracing::info!(prefix = %meta.key(&rest), revision = state.revision, "watching");
                        tx.send_replace(Arc::new(state));
                    }
                    Err(e) => tracing::warn!("reload of {rest} failed: {e}"),
                }
            }
        });
        Ok(rx)
    }

    async fn watch_into(
        &self,
        rest: &str,
        tx: &watch::Sender<Arc<PrefixState>>,
    ) -> Result<(), MetaError> {
        let full = self.key(rest);
        let from = tx.borrow().revision + 1;
        let (_watcher, mut stream) = self
            .client
            .watch_client()
            .watch(
                full.clone(),
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await?;
        while let Some(resp) = stream.message().await? {
            if resp.canceled() {
                return Err(MetaError::Etcd(format!(
                    "watch canceled: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                continue;
            }
            let mut state = (**tx.borrow()).clone();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let k = String::from_utf8_lossy(kv.key());
                let suffix = k.strip_prefix(&full).unwrap_or(&k).to_string();
                match ev.event_type() {
                    EventType::Put => {
                        state
                            .entries
                            .insert(suffix, (kv.value().to_vec(), kv.mod_revision()));
                    }
                    EventType::Delete => {
                        state.entries.remove(&suffix);
                    }
                }
                state.revision = state.revision.max(kv.mod_revision());
            }
            if let Some(h) = resp.header() {
                state.revision = state.revision.max(h.revision());
            }
            tx.send_replace(Arc::new(state));
        }
        Err(MetaError::Etcd("watch stream ended".into()))
    }

    pub async fn members(&self) -> Result<BTreeMap<u64, MemberInfo>, MetaError> {
        let s = self.load_prefix("members/").await?;
        Ok(s.decoded::<MemberInfo>()
            .into_iter()
            .map(|(_, m, _)| (m.id, m))
            .collect())
    }

    /// Move member `id` to `state` (compare-and-swap on its record). Returns
    /// the previous state; an error if there is no such member.
    pub async fn set_member_state(
        &self,
        id: u64,
        state: MemberState,
    ) -> Result<MemberState, MetaError> {
        let key = self.key(&format!("members/{id}"));
        loop {
            let resp = self.kv().get(key.clone(), None).await?;
            let kv = resp
                .kvs()
                .first()
                .ok_or_else(|| MetaError::Corrupt(format!("no member {id}")))?;
            let mut info: MemberInfo = serde_json::from_slice(kv.value())?;
            let before = info.state;
            if before == state {
                return Ok(before);
            }
            info.state = state;
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(vec![TxnOp::put(
                    key.clone(),
                    serde_json::to_vec(&info)?,
                    None,
                )]);
            if self.kv().txn(txn).await?.succeeded() {
                tracing::info!(
                    node = id,
                    from = before.as_str(),
                    to = state.as_str(),
                    "member state changed"
                );
                return Ok(before);
            }
        }
    }

    /// Try once to become the holder of duty `name` (key `elect/<name>`):
    /// the key is created under a fresh lease of `ttl` seconds only if absent.
    /// `None` when someone else holds it. The lease is kept alive by a task
    /// until the returned [`Leadership`] is dropped or the lease is lost.
    pub async fn campaign(
        &self,
        name: &str,
        value: &str,
        ttl: i64,
    ) -> Result<Option<Leadership>, MetaError> {
        let key = self.key(&format!("elect/{name}"));
        let mut lease = self.client.lease_client();
        let lease_id = lease.grant(ttl, None).await?.id();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        if !self.kv().txn(txn).await?.succeeded() {
            let _ = lease.revoke(lease_id).await;
            return Ok(None);
        }
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        let (mut keeper, mut stream) = lease.keep_alive(lease_id).await?;
        let period = Duration::from_millis((ttl as u64 * 1000) / 3);
        let keeper = tokio::spawn(async move {
            loop {
                let alive = async {
                    keeper.keep_alive().await.ok()?;
                    match tokio::time::timeout(period * 2, stream.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => Some(()),
                        _ => None,
                    }
                };
                if alive.await.is_none() {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(period).await;
            }
        });
        Ok(Some(Leadership {
            key,
            value: value.to_string(),
            lease_id,
            lost,
            keeper,
        }))
    }

    /// Give up a duty at once (instead of letting its lease expire).
    pub async fn resign(&self, l: Leadership) {
        let _ = self.client.lease_client().revoke(l.lease_id).await;
    }

    /// [`Meta::cas_table`], and only while `leader` still holds its duty.
    pub async fn cas_table_as(
        &self,
        desc: &TableDescriptor,
        mod_revision: i64,
        leader: &Leadership,
    ) -> Result<bool, MetaError> {
        let key = self.key(&format!("tables/{}", desc.name));
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision),
                Compare::value(leader.key.clone(), CompareOp::Equal, leader.value.clone()),
            ])
            .and_then(vec![TxnOp::put(key, serde_json::to_vec(desc)?, None)]);
        Ok(self.kv().txn(txn).await?.succeeded())
    }

    pub async fn live_nodes(&self) -> Result<BTreeMap<u64, LiveInfo>, MetaError> {
        let s = self.load_prefix("live/").await?;
        Ok(s.decoded::<LiveInfo>()
            .into_iter()
            .filter_map(|(k, l, _)| k.parse::<u64>().ok().map(|id| (id, l)))
            .collect())
    }

    /// Reserve `n` consecutive ids from counter `ids/<name>`; returns the first.
    /// Ids start at 1 and are never handed out twice.
    pub async fn alloc_ids(&self, name: &str, n: u64) -> Result<u64, MetaError> {
        let key = self.key(&format!("ids/{name}"));
        for _ in 0..100 {
            let resp = self.kv().get(key.clone(), None).await?;
            let (current, cmp) = match resp.kvs().first() {
                Some(kv) => {
                    let v = std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| MetaError::Corrupt(format!("counter {key}")))?;
                    (
                        v,
                        Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                    )
                }
                None => (
                    0,
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                ),
            };
            let next = current + n;
            let txn = Txn::new().when(vec![cmp]).and_then(vec![TxnOp::put(
                key.clone(),
                next.to_string(),
                None,
            )]);
            if self.kv().txn(txn).await?.succeeded() {
                return Ok(current + 1);
            }
        }
        Err(MetaError::Etcd(format!("counter {key} is too contended")))
    }

    /// Put `value` at `key` only if the key does not exist.
    async fn put_if_absent(&self, key: String, value: Vec<u8>) -> Result<bool, MetaError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key, value, None)]);
        Ok(self.kv().txn(txn).await?.succeeded())
    }

    /// Put `value` at `key` only if the key is still at `mod_revision`.
    async fn put_if_revision(
        &self,
        key: String,
        value: Vec<u8>,
        mod_revision: i64,
    ) -> Result<bool, MetaError> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![TxnOp::put(key, value, None)]);
        Ok(self.kv().txn(txn).await?.succeeded())
    }

    /// Write a new table record; `false` if the name is taken.
    pub async fn create_table_record(&self, desc: &TableDescriptor) -> Result<bool, MetaError> {
        let key = self.key(&format!("tables/{}", desc.name));
        self.put_if_absent(key, serde_json::to_vec(desc)?).await
    }

    /// Replace a table record if it is still at `mod_revision`.
    pub async fn cas_table(
        &self,
        desc: &TableDescriptor,
        mod_revision: i64,
    ) -> Result<bool, MetaError> {
        let key = self.key(&format!("tables/{}", desc.name));
        self.put_if_revision(key, serde_json::to_vec(desc)?, mod_revision)
            .await
    }

    /// Delete a table record if it is still at `mod_revision`.
    pub async fn delete_table_record(
        &self,
        name: &str,
        mod_revision: i64,
    ) -> Result<bool, MetaError> {
        let key = self.key(&format!("tables/{name}"));
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![TxnOp::delete(key, None)]);
        Ok(self.kv().txn(txn).await?.succeeded())
    }

    /// Move a table to `deleting` if its record is still at `mod_revision`,
    /// and write a tombstone for each of its groups in the same transaction,
    /// so no replica can be deleted before the drop is recorded and none is
    /// forgotten after the descriptor is gone.
    pub async fn mark_table_deleting(
        &self,
        desc: &TableDescriptor,
        mod_revision: i64,
    ) -> Result<bool, MetaError> {
        use super::descriptor::TableState;
        let key = self.key(&format!("tables/{}", desc.name));
        let mut deleting = desc.clone();
        deleting.state = TableState::Deleting;
        let mut ops = vec![TxnOp::put(
            key.clone(),
            serde_json::to_vec(&deleting)?,
            None,
        )];
        let now = now_ms();
        for s in &desc.shards {
            let mut nodes = s.all_nodes();
            if let Some(m) = &s.moving {
                nodes.push(m.to);
            }
            nodes.sort_unstable();
            nodes.dedup();
            let t = Tombstone {
                group_id: s.group_id,
                table: desc.name.clone(),
                table_id: desc.table_id,
                nodes,
                dropped_at: now,
            };
            ops.push(TxnOp::put(
                self.key(&format!("tombstones/{}", s.group_id)),
                serde_json::to_vec(&t)?,
                None,
            ));
        }
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key,
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(ops);
        Ok(self.kv().txn(txn).await?.succeeded())
    }

    /// Node `node` holds no replica of tombstoned group `gid` any more:
    /// take it off the tombstone, and delete the tombstone once nobody is
    /// left on it.
    pub async fn ack_tombstone(&self, gid: u64, node: u64) -> Result<(), MetaError> {
        let key = self.key(&format!("tombstones/{gid}"));
        loop {
            let resp = self.kv().get(key.clone(), None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(());
            };
            let mut t: Tombstone = serde_json::from_slice(kv.value())?;
            if !t.nodes.contains(&node) {
                return Ok(());
            }
            t.nodes.retain(|n| *n != node);
            let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
            let op = if t.nodes.is_empty() {
                TxnOp::delete(key.clone(), None)
            } else {
                TxnOp::put(key.clone(), serde_json::to_vec(&t)?, None)
            };
            if self
                .kv()
                .txn(Txn::new().when(vec![cmp]).and_then(vec![op]))
                .await?
                .succeeded()
            {
                if t.nodes.is_empty() {
                    tracing::info!(group = gid, table = %t.table, "tombstone removed: every node confirmed");
                }
                return Ok(());
            }
        }
    }

    /// Every tombstone, by group id. An undecodable one is an error: it
    /// cannot be confirmed, and must not be mistaken for "none".
    pub async fn tombstones(&self) -> Result<BTreeMap<u64, Tombstone>, MetaError> {
        let s = self.load_prefix("tombstones/").await?;
        let (ok, bad) = s.decode_all::<Tombstone>();
        if let Some((k, e)) = bad.into_iter().next() {
            return Err(MetaError::Corrupt(format!("tombstone {k}: {e}")));
        }
        Ok(ok.into_iter().map(|(_, t, _)| (t.group_id, t)).collect())
    }

    /// The prefix's cluster record. `Corrupt` if it does not decode.
    pub async fn cluster_record(&self) -> Result<Option<ClusterRecord>, MetaError> {
        Ok(self
            .get_json::<ClusterRecord>("cluster")
            .await?
            .map(|(r, _)| r))
    }

    /// Create the prefix's cluster record unless one exists; returns the
    /// record that is there afterwards (ours, or the one that won a race).
    pub async fn create_cluster_record(&self, name: &str) -> Result<ClusterRecord, MetaError> {
        let rec = ClusterRecord {
            name: name.to_string(),
            id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            created_at: now_ms(),
        };
        if self
            .put_if_absent(self.key("cluster"), serde_json::to_vec(&rec)?)
            .await?
        {
            tracing::info!(cluster = %name, id = %rec.id, "cluster record created");
        }
        self.cluster_record().await?.ok_or_else(|| {
            MetaError::Etcd("the cluster record vanished right after its creation".into())
        })
    }

    /// A JSON record and its mod revision, if the key exists.
    async fn get_json<T: for<'a> Deserialize<'a>>(
        &self,
        rest: &str,
    ) -> Result<Option<(T, i64)>, MetaError> {
        let resp = self.kv().get(self.key(rest), None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some((
                serde_json::from_slice(kv.value())?,
                kv.mod_revision(),
            ))),
            None => Ok(None),
        }
    }

    pub async fn get_table(&self, name: &str) -> Result<Option<(TableDescriptor, i64)>, MetaError> {
        self.get_json(&format!("tables/{name}")).await
    }

    /// Every table record: those that decode, and the names of those that
    /// do not with their error.
    pub async fn tables_checked(
        &self,
    ) -> Result<(Vec<(TableDescriptor, i64)>, BTreeMap<String, String>), MetaError> {
        let s = self.load_prefix("tables/").await?;
        let (ok, bad) = s.decode_all::<TableDescriptor>();
        Ok((ok.into_iter().map(|(_, t, rev)| (t, rev)).collect(), bad))
    }

    pub async fn tables(&self) -> Result<Vec<(TableDescriptor, i64)>, MetaError> {
        let s = self.load_prefix("tables/").await?;
        Ok(s.decoded::<TableDescriptor>()
            .into_iter()
            .map(|(_, t, rev)| (t, rev))
            .collect())
    }

    /// Write a new transaction record; `false` if the id is taken.
    pub async fn create_txn(&self, rec: &TxnRecord) -> Result<bool, MetaError> {
        let key = self.key(&format!("txns/{}", rec.txn_id));
        self.put_if_absent(key, serde_json::to_vec(rec)?).await
    }

    pub async fn get_txn(&self, txn_id: u64) -> Result<Option<(TxnRecord, i64)>, MetaError> {
        self.get_json(&format!("txns/{txn_id}")).await
    }

    /// Move a pending transaction to `to` (compare-and-swap). Returns the
    /// state the record ends in: `to`, or what someone else decided first.
    /// `None` when there is no record.
    pub async fn decide_txn(
        &self,
        txn_id: u64,
        to: TxnState,
    ) -> Result<Option<TxnState>, MetaError> {
        loop {
            let Some((mut rec, rev)) = self.get_txn(txn_id).await? else {
                return Ok(None);
            };
            if rec.state != TxnState::Pending {
                return Ok(Some(rec.state));
            }
            rec.state = to;
            let key = self.key(&format!("txns/{txn_id}"));
            if self
                .put_if_revision(key, serde_json::to_vec(&rec)?, rev)
                .await?
            {
                return Ok(Some(to));
            }
        }
    }

    pub async fn delete_txn(&self, txn_id: u64) -> Result<(), MetaError> {
        self.kv()
            .delete(self.key(&format!("txns/{txn_id}")), None)
            .await?;
        Ok(())
    }

    /// Write a cluster-wide setting (`rest` under the cluster prefix); the
    /// etcd revision of the write.
    pub async fn put_setting(&self, rest: &str, value: &str) -> Result<i64, MetaError> {
        let resp = self.kv().put(self.key(rest), value, None).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// `users/<name>`: a user's record and its mod revision, if any.
    pub async fn get_user(&self, name: &str) -> Result<Option<(Vec<u8>, i64)>, MetaError> {
        self.get_record(&format!("users/{name}")).await
    }

    /// Write or delete (`None`) a user's record if it is still at
    /// `mod_revision` (0: absent). The etcd revision of the change, or
    /// `None` if the record moved.
    pub async fn swap_user(
        &self,
        name: &str,
        value: Option<Vec<u8>>,
        mod_revision: i64,
    ) -> Result<Option<i64>, MetaError> {
        self.swap_record(&format!("users/{name}"), value, mod_revision)
            .await
    }

    /// The record at `rest` (under the cluster's prefix) and its mod
    /// revision, if any.
    pub async fn get_record(&self, rest: &str) -> Result<Option<(Vec<u8>, i64)>, MetaError> {
        let resp = self.kv().get(self.key(rest), None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Write or delete (`None`) the record at `rest` if it is still at
    /// `mod_revision` (0: absent). The etcd revision of the change, or
    /// `None` if the record moved.
    pub async fn swap_record(
        &self,
        rest: &str,
        value: Option<Vec<u8>>,
        mod_revision: i64,
    ) -> Result<Option<i64>, MetaError> {
        let key = self.key(rest);
        let op = match value {
            Some(v) => TxnOp::put(key.clone(), v, None),
            None => TxnOp::delete(key.clone(), None),
        };
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key,
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![op]);
        let resp = self.kv().txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// In one etcd transaction, if every record of `expect` is still at its
    /// mod revision (0: absent): delete everything under `clear` (if
    /// given), then write `puts`. The etcd revision, or `None` if a record
    /// moved (nothing was changed).
    pub async fn swap_records(
        &self,
        expect: &[(String, i64)],
        clear: Option<&str>,
        puts: Vec<(String, Vec<u8>)>,
    ) -> Result<Option<i64>, MetaError> {
        let compares = expect
            .iter()
            .map(|(rest, rev)| Compare::mod_revision(self.key(rest), CompareOp::Equal, *rev))
            .collect::<Vec<_>>();
        let mut ops = Vec::new();
        if let Some(prefix) = clear {
            ops.push(TxnOp::delete(
                self.key(prefix),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ));
        }
        ops.extend(
            puts.into_iter()
                .map(|(rest, v)| TxnOp::put(self.key(&rest), v, None)),
        );
        let resp = self
            .kv()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Write the record at `rest`, whatever was there. The etcd revision.
    pub async fn put_record(&self, rest: &str, value: Vec<u8>) -> Result<i64, MetaError> {
        let resp = self.kv().put(self.key(rest), value, None).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Delete every record under `rest`: how many there were, and the etcd
    /// revision of the deletion.
    pub async fn delete_prefix(&self, rest: &str) -> Result<(i64, i64), MetaError> {
        let resp = self
            .kv()
            .delete(
                self.key(rest),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await?;
        Ok((resp.deleted(), resp.header().map_or(0, |h| h.revision())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RaftEngine;

    #[test]
    fn a_live_record_says_which_engines_its_node_hosts() {
        // A node older than the batch engine wrote no `engines`.
        let old: LiveInfo =
            serde_json::from_str(r#"{"rpc_addr":"a:1","started_at":1,"version":"0.1.0"}"#).unwrap();
        assert!(old.hosts(RaftEngine::Openraft));
        assert!(!old.hosts(RaftEngine::Batch));
        let new = LiveInfo {
            engines: vec!["openraft".into(), "batch".into()],
            ..old
        };
        let back: LiveInfo = serde_json::from_slice(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert!(back.hosts(RaftEngine::Batch) && back.hosts(RaftEngine::Openraft));
    }
}
