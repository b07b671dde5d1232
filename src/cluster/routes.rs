//! The router's in-memory copy of the cluster: tables, members and liveness,
//! mirrored from etcd watches. Requests read [`RouteView`] snapshots and never
//! touch etcd.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use crate::meta::descriptor::{TableDescriptor, TableState};
use crate::meta::etcd::{LiveInfo, MemberInfo, Meta, PrefixState};
use crate::meta::MetaError;

/// A table as the router sees it, with the etcd revision of its record.
#[derive(Debug, Clone)]
pub struct TableRoute {
    pub desc: TableDescriptor,
    pub mod_revision: i64,
}

/// One consistent snapshot of what the router knows.
#[derive(Debug, Clone, Default)]
pub struct RouteView {
    pub tables: HashMap<String, Arc<TableRoute>>,
    pub by_index: HashMap<u32, String>,
    /// node id -> gRPC address (from `members/`, corrected by `live/`).
    pub addrs: BTreeMap<u64, String>,
    pub live: BTreeSet<u64>,
    /// Table records that do not decode: name -> error. Such a table is not
    /// served (and is never mistaken for a missing one).
    pub unreadable: BTreeMap<String, String>,
    /// The newest etcd revision this view reflects.
    pub revision: i64,
}

impl RouteView {
    pub fn table(&self, name: &str) -> Option<&Arc<TableRoute>> {
        self.tables.get(name)
    }

    pub fn table_by_index(&self, index: u32) -> Option<&Arc<TableRoute>> {
        self.by_index.get(&index).and_then(|n| self.tables.get(n))
    }

    fn build(tables: &PrefixState, members: &PrefixState, live: &PrefixState) -> RouteView {
        let mut view = RouteView {
            revision: tables.revision.max(members.revision).max(live.revision),
            ..RouteView::default()
        };
        let (decoded, unreadable) = tables.decode_all::<TableDescriptor>();
        view.unreadable = unreadable;
        for (_, desc, rev) in decoded {
            if desc.state != TableState::Deleting {
                view.by_index.insert(desc.db_index, desc.name.clone());
            }
            view.tables.insert(
                desc.name.clone(),
                Arc::new(TableRoute {
                    desc,
                    mod_revision: rev,
                }),
            );
        }
        for (_, m, _) in members.decoded::<MemberInfo>() {
            view.addrs.insert(m.id, m.rpc_addr);
        }
        for (k, l, _) in live.decoded::<LiveInfo>() {
            if let Ok(id) = k.parse::<u64>() {
                view.live.insert(id);
                view.addrs.insert(id, l.rpc_addr);
            }
        }
        view
    }
}

/// Start following etcd; the receiver always holds the latest view.
pub async fn follow(meta: &Meta) -> Result<watch::Receiver<Arc<RouteView>>, MetaError> {
    let mut tables = meta.follow("tables/").await?;
    let mut members = meta.follow("members/").await?;
    let mut live = meta.follow("live/").await?;
    let view = RouteView::build(
        &tables.borrow_and_update(),
        &members.borrow_and_update(),
        &live.borrow_and_update(),
    );
    let (tx, rx) = watch::channel(Arc::new(view));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = tables.changed() => if r.is_err() { return },
                r = members.changed() => if r.is_err() { return },
                r = live.changed() => if r.is_err() { return },
            }
            let view = RouteView::build(
                &tables.borrow_and_update(),
                &members.borrow_and_update(),
                &live.borrow_and_update(),
            );
            if tx.send(Arc::new(view)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
