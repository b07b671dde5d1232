//! The cluster-wide settings a node must know, mirrored from etcd.
//!
//! This module owns the node's watch on `settings/` (today only
//! `notify-keyspace-events`, which routers write with CONFIG SET) and on the
//! table records (for each table's index, the `<db>` of the notification
//! channels). It only copies them into the host's
//! [`crate::shard::notify::KeyspaceEvents`]; it never writes to etcd.

use std::collections::HashMap;
use std::sync::Arc;

use crate::meta::descriptor::TableDescriptor;
use crate::meta::etcd::{Meta, NOTIFY_KEYSPACE_EVENTS};
use crate::meta::MetaError;
use crate::shard::host::Host;
use crate::shard::notify::stored_flags;

/// Follow the settings and the tables' indexes into `host` until the
/// watches end.
pub async fn run(meta: Meta, host: Arc<Host>) -> Result<(), MetaError> {
    let mut settings = meta.follow("settings/").await?;
    let mut tables = meta.follow("tables/").await?;
    loop {
        let flags = stored_flags(
            settings
                .borrow_and_update()
                .value("settings/", NOTIFY_KEYSPACE_EVENTS),
        );
        let dbs: HashMap<String, u32> = tables
            .borrow_and_update()
            .decoded::<TableDescriptor>()
            .into_iter()
            .map(|(_, t, _)| (t.name, t.db_index))
            .collect();
        host.keyspace_events.set_tables(dbs);
        host.keyspace_events.set_flags(flags);
        tokio::select! {
            r = settings.changed() => if r.is_err() { return Ok(()) },
            r = tables.changed() => if r.is_err() { return Ok(()) },
        }
    }
}
