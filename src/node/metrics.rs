//! What a node's `/metrics` shows (`crate::metrics` serves it): per group
//! replica (labels `group`, `table`, `shard`: one series each per replica
//! the node holds) whether it leads, its term, last log, applied, snapshot
//! and purged index, proposals, requests served, leader changes, whether it
//! hibernates, and on a leader each follower's lag; per node the replicas
//! held, moves in progress (groups it leads whose membership has learners
//! or is joint), blocked clients' waits, disk space, RocksDB's memtable
//! bytes, pending compaction bytes, write stops and stall time, block cache
//! hits and misses, the collections collected and transactions recovered,
//! Raft messages and bytes sent per peer, snapshots built, deferred, sent
//! and installed, the fsync, apply and commit histograms and the process
//! metrics. A batch-engine replica shows whether it leads, its term,
//! applied index, proposals and requests served (what its loop publishes
//! in the group's `Role`), and the node its loop's counters
//! (`shoal_batch_*_total`, all groups together). Read at each scrape; the
//! hot paths only bump the statics of `crate::metrics`.

use openraft::async_runtime::WatchReceiver;
use std::sync::atomic::Ordering;

use rocksdb::statistics::Ticker;

use crate::metrics::{counter, gauge};
use crate::shard::driver::Driver;
use crate::shard::host::Host;

fn gauge_vec(name: &str, help: &str) -> prometheus::IntGaugeVec {
    crate::metrics::gauge_vec(name, help, &["group", "table", "shard"])
}

fn counter_vec(name: &str, help: &str) -> prometheus::IntCounterVec {
    crate::metrics::counter_vec(name, help, &["group", "table", "shard"])
}

/// The node's metrics now, in the text exposition format (`data_dir`: the
/// file system whose space they report).
pub fn render(host: &Host, data_dir: &std::path::Path) -> String {
    let leader = gauge_vec("shoal_group_leader", "1 when this replica leads its group");
    let term = gauge_vec("shoal_group_term", "The replica's Raft term");
    let last_log = gauge_vec(
        "shoal_group_last_log_index",
        "Last index in the replica's log",
    );
    let applied = gauge_vec(
        "shoal_group_applied_index",
        "Last index the replica applied",
    );
    let snapshot = gauge_vec(
        "shoal_group_snapshot_index",
        "Last index in the replica's current snapshot (0: none)",
    );
    let purged = gauge_vec(
        "shoal_group_purged_index",
        "Last index purged from the replica's log: it holds the entries after it",
    );
    let asleep = gauge_vec("shoal_group_hibernating", "1 when the replica hibernates");
    let stopped = gauge_vec(
        "shoal_group_stopped",
        "1 when the replica's Raft stopped on a fatal error (a storage error): it takes no part in its group until the node restarts",
    );
    let proposals = counter_vec(
        "shoal_group_proposals_total",
        "Entries the replica proposed as its group's leader",
    );
    let leader_changes = counter_vec(
        "shoal_group_leader_changes_total",
        "Times the replica saw its group's leader change (elections won by anyone)",
    );
    let served = counter_vec(
        "shoal_group_served_requests_total",
        "Requests from routers the replica answered (reads and writes; not those turned away or blocked clients' waits)",
    );
    let lag = crate::metrics::gauge_vec(
        "shoal_group_replication_lag_entries",
        "On a leader: entries of its log a follower or learner has not matched yet",
        &["group", "table", "shard", "peer"],
    );
    let replicas = host.replicas();
    let mut waits = 0u64;
    let mut moves = 0u64;
    for r in &replicas {
        let gid = r.record.group_id.to_string();
        let shard = r.record.shard.to_string();
        let labels = [gid.as_str(), r.record.table.as_str(), shard.as_str()];
        waits += r.sm.waiters().len() as u64;
        served
            .with_label_values(&labels)
            .inc_by(r.served.counts().requests);
        let c = r.counters();
        proposals
            .with_label_values(&labels)
            .inc_by(c.proposals.load(Ordering::Relaxed));
        let raft = match &r.driver {
            Driver::Openraft(raft) => raft,
            // What the loop publishes for the group without being asked
            // (`batch::Role`; the log's end and the peers' progress as of
            // its last tick).
            Driver::Batch(group) => {
                let role = &group.role;
                let leads = role.leader() == Some(host.node_id);
                let last = role.last_index.load(Ordering::Acquire);
                leader.with_label_values(&labels).set(leads as i64);
                term.with_label_values(&labels)
                    .set(role.term.load(Ordering::Acquire) as i64);
                last_log.with_label_values(&labels).set(last as i64);
                applied
                    .with_label_values(&labels)
                    .set(role.applied.load(Ordering::Acquire) as i64);
                asleep
                    .with_label_values(&labels)
                    .set(role.asleep.load(Ordering::Acquire) as i64);
                // The batch engine keeps no snapshot: it builds one when a
                // follower needs it. Its log starts after what it compacted
                // away or a snapshot covered.
                snapshot
                    .with_label_values(&labels)
                    .set(role.snapshot.load(Ordering::Acquire) as i64);
                purged
                    .with_label_values(&labels)
                    .set(role.log_start.load(Ordering::Acquire) as i64);
                stopped
                    .with_label_values(&labels)
                    .set(group.stopped().is_some() as i64);
                leader_changes
                    .with_label_values(&labels)
                    .inc_by(role.leader_changes.load(Ordering::Relaxed));
                if leads {
                    for (peer, matched) in role.progress() {
                        let peer = peer.to_string();
                        lag.with_label_values(&[labels[0], labels[1], labels[2], peer.as_str()])
                            .set(last.saturating_sub(matched) as i64);
                    }
                    let m = role.membership();
                    if m.joint() || !m.learners.is_empty() {
                        moves += 1;
                    }
                }
                continue;
            }
        };
        let m = raft.metrics().borrow_watched().clone();
        leader
            .with_label_values(&labels)
            .set((m.current_leader == Some(host.node_id)) as i64);
        term.with_label_values(&labels).set(m.current_term as i64);
        last_log
            .with_label_values(&labels)
            .set(m.last_log_index.unwrap_or(0) as i64);
        applied
            .with_label_values(&labels)
            .set(m.last_applied.map_or(0, |l| l.index) as i64);
        snapshot
            .with_label_values(&labels)
            .set(m.snapshot.map_or(0, |l| l.index) as i64);
        purged
            .with_label_values(&labels)
            .set(m.purged.map_or(0, |l| l.index) as i64);
        asleep
            .with_label_values(&labels)
            .set(r.sleep.is_asleep() as i64);
        stopped
            .with_label_values(&labels)
            .set(m.running_state.is_err() as i64);
        leader_changes
            .with_label_values(&labels)
            .inc_by(c.leader_changes.load(Ordering::Relaxed));
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (peer, matched) in replication.iter() {
                let matched = matched.map_or(0, |l| l.index);
                let peer = peer.to_string();
                lag.with_label_values(&[labels[0], labels[1], labels[2], peer.as_str()])
                    .set(last.saturating_sub(matched) as i64);
            }
            let membership = m.membership_config.membership();
            if membership.learner_ids().next().is_some() || membership.get_joint_config().len() > 1
            {
                moves += 1;
            }
        }
    }
    let engine = &host.engine;
    let row_cache = engine.row_cache_stats();
    let stats = &crate::shard::status::COLLECTIONS_COLLECTED;
    let recovered = &crate::shard::status::TXN_RECOVERED;
    let mut collectors: Vec<crate::metrics::Boxed> = vec![
        Box::new(leader),
        Box::new(term),
        Box::new(last_log),
        Box::new(applied),
        Box::new(snapshot),
        Box::new(purged),
        Box::new(asleep),
        Box::new(stopped),
        Box::new(proposals),
        Box::new(served),
        Box::new(leader_changes),
        Box::new(lag),
        gauge(
            "shoal_node_moves_in_progress",
            "Groups this node leads whose membership has learners or is joint (a replica move half way)",
            moves,
        ),
        gauge(
            "shoal_node_replicas",
            "Group replicas this node holds",
            replicas.len() as u64,
        ),
        gauge(
            "shoal_node_blocked_waits",
            "Waits of blocked clients held here",
            waits,
        ),
        gauge(
            "shoal_rocksdb_memtable_bytes",
            "Bytes in RocksDB's memtables",
            engine.property_total("rocksdb.cur-size-all-mem-tables"),
        ),
        gauge(
            "shoal_rocksdb_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction must rewrite",
            engine.property_total("rocksdb.estimate-pending-compaction-bytes"),
        ),
        gauge(
            "shoal_rocksdb_live_sst_bytes",
            "Bytes of live SST files",
            engine.property_total("rocksdb.live-sst-files-size"),
        ),
        counter(
            "shoal_rocksdb_stall_micros_total",
            "Microseconds RocksDB delayed or stopped writes",
            engine.ticker(Ticker::StallMicros),
        ),
        counter(
            "shoal_rocksdb_block_cache_hit_total",
            "Block cache hits (the hit rate is hits / (hits + misses))",
            engine.ticker(Ticker::BlockCacheHit),
        ),
        counter(
            "shoal_rocksdb_block_cache_miss_total",
            "Block cache misses",
            engine.ticker(Ticker::BlockCacheMiss),
        ),
        counter(
            "shoal_row_cache_hits_total",
            "Point reads of data rows the row cache answered",
            row_cache.hits,
        ),
        counter(
            "shoal_row_cache_misses_total",
            "Point reads of data rows that went to RocksDB",
            row_cache.misses,
        ),
        gauge(
            "shoal_row_cache_bytes",
            "Bytes the row cache holds (keys, values and per-row overhead)",
            row_cache.bytes,
        ),
        gauge(
            "shoal_rocksdb_write_stopped",
            "1 while RocksDB stops writes (too many memtables or L0 files)",
            engine.property_total("rocksdb.is-write-stopped").min(1),
        ),
        counter(
            "shoal_node_collections_collected_total",
            "Dead collections whose rows this node's collector removed",
            stats.load(Ordering::Relaxed),
        ),
        counter(
            "shoal_node_txn_recovered_total",
            "Transactions this node resolved after their coordinator vanished",
            recovered.load(Ordering::Relaxed),
        ),
        Box::new(crate::metrics::FSYNC_SECONDS.clone()),
        Box::new(crate::metrics::APPLY_SECONDS.clone()),
        Box::new(crate::metrics::COMMIT_SECONDS.clone()),
        Box::new(crate::metrics::RAFT_SENT_MESSAGES.clone()),
        Box::new(crate::metrics::RAFT_SENT_BYTES.clone()),
        Box::new(crate::metrics::SNAPSHOTS.clone()),
    ];
    if let Some(batch) = host.batch_loop() {
        collectors.extend(batch_loop_counters(batch.stats()));
        let sent = crate::metrics::counter_vec(
            "shoal_batch_sent_bytes_total",
            "Bytes of Raft messages the batch loop sent to each peer node (all its groups)",
            &["peer"],
        );
        if let Ok(bytes) = batch.stats().sent_bytes.lock() {
            for (peer, n) in bytes.iter() {
                sent.with_label_values(&[peer.to_string().as_str()])
                    .inc_by(*n);
            }
        }
        collectors.push(Box::new(sent));
    }
    // Unknown space is left out, never reported as a full disk.
    if let Some((free, size)) = disk_space(data_dir) {
        collectors.push(gauge(
            "shoal_node_disk_free_bytes",
            "Bytes free for the node (not root) on its data directory's file system",
            free,
        ));
        collectors.push(gauge(
            "shoal_node_disk_size_bytes",
            "Size of the node's data directory's file system",
            size,
        ));
    }
    let registry = crate::metrics::registry(collectors);
    crate::metrics::text(&registry)
}

/// The counters of the node's batch-engine loop (`shard::batch::Stats`),
/// summed over its groups.
fn batch_loop_counters(s: &crate::shard::batch::Stats) -> Vec<crate::metrics::Boxed> {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    [
        (
            "turns",
            "Turns of the batch loop that found ready work",
            n(&s.turns),
        ),
        (
            "syncs",
            "Synced log writes of the batch loop (each for every group of a turn)",
            n(&s.syncs),
        ),
        (
            "syncs_in_loop",
            "Those the loop made itself (the others went to the writer thread after a slow sync)",
            n(&s.syncs_in_loop),
        ),
        (
            "entries",
            "Log entries the batch loop appended (all groups)",
            n(&s.entries),
        ),
        (
            "messages",
            "Raft messages the batch loop sent",
            n(&s.messages),
        ),
        (
            "sends",
            "Sends to a peer node (each with one turn's messages for it)",
            n(&s.sends),
        ),
        (
            "applies",
            "Applier calls of the batch loop (each for every group of a turn)",
            n(&s.applies),
        ),
        (
            "read_rounds",
            "ReadIndex rounds the batch loop started",
            n(&s.read_rounds),
        ),
        (
            "lease_reads",
            "Reads the batch loop answered in a leader's lease, without a round",
            n(&s.lease_reads),
        ),
        (
            "dropped_messages",
            "Peers' Raft messages dropped because the batch loop's inbox was full",
            n(&s.dropped),
        ),
        (
            "compactions",
            "Log compactions of the batch loop (all groups)",
            n(&s.compactions),
        ),
        (
            "snapshots_built",
            "Snapshots the batch loop built",
            n(&s.snapshots_built),
        ),
        (
            "snapshots_sent",
            "Snapshots the batch loop sent",
            n(&s.snapshots_sent),
        ),
        (
            "snapshots_installed",
            "Snapshots the batch loop installed",
            n(&s.snapshots_installed),
        ),
        (
            "hibernated",
            "Groups the batch loop put to sleep (as leader or follower)",
            n(&s.hibernated),
        ),
        ("woken", "Sleeping groups the batch loop woke", n(&s.woken)),
        (
            "late_ticks",
            "Ticks of the batch loop that came a whole tick late (its thread was held), after which its leaders heartbeat at once",
            n(&s.late_ticks),
        ),
    ]
    .into_iter()
    .map(|(name, help, v)| counter(&format!("shoal_batch_{name}_total"), help, v))
    .collect()
}

/// (available, total) bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let unit = s.f_frsize as u64;
    Some((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
}
