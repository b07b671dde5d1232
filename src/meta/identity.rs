//! Which cluster a node's data directory belongs to, and whether a node may
//! start against the etcd prefix it was given.
//!
//! A data dir is stamped (file `CLUSTER` in it) with the cluster record of
//! the prefix it first joined (`/shoal/<cluster>/cluster`, see
//! [`super::etcd::ClusterRecord`]). A node pointed at another cluster, at a
//! mistyped `--cluster`, or at an etcd restored empty, would otherwise see
//! "no table names my replicas" and could be tempted to act on it; this check
//! stops it before it serves or reconciles anything. [`check`] is the pure
//! decision; `node.rs` does the reading and writing.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::etcd::ClusterRecord;

/// The stamp file's name inside the data dir.
pub const STAMP_FILE: &str = "CLUSTER";

/// What a data dir records about its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub name: String,
    pub id: String,
}

impl From<&ClusterRecord> for Stamp {
    fn from(r: &ClusterRecord) -> Self {
        Stamp {
            name: r.name.clone(),
            id: r.id.clone(),
        }
    }
}

/// What the node must do before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The data dir belongs to this prefix's cluster.
    Proceed,
    /// Stamp the data dir with the prefix's existing record.
    Stamp,
    /// Create the prefix's cluster record, then stamp the data dir with it.
    CreateAndStamp,
    /// Refuse to start; the message says why and how to proceed.
    Refuse(String),
}

/// What the node found, for [`check`].
pub struct Found<'a> {
    /// `--cluster`, and the prefix it maps to (for messages).
    pub cluster: &'a str,
    pub prefix: &'a str,
    pub data_dir: &'a Path,
    pub stamp: Option<&'a Stamp>,
    pub record: Option<&'a ClusterRecord>,
    /// Group ids of the replicas the data dir holds.
    pub hosted: &'a [u64],
    /// Group ids that the prefix's descriptors or tombstones name.
    pub known: &'a BTreeSet<u64>,
}

/// Decide whether a node may start. An empty data dir always may (it
/// creates the cluster record if the prefix has none). A data dir holding
/// replicas may only start against the cluster it is stamped with; an
/// unstamped one (written before stamps existed) is adopted only when the
/// prefix names every replica it holds.
pub fn check(f: &Found) -> Decision {
    let dir = f.data_dir.display();
    let n = f.hosted.len();
    match (f.stamp, f.record) {
        (Some(s), Some(r)) if s.id == r.id => Decision::Proceed,
        (Some(s), Some(r)) => Decision::Refuse(format!(
            "data dir {dir} belongs to cluster '{}' (id {}), but etcd prefix {} belongs to \
             cluster '{}' (id {}). Start this node with --cluster {} and the etcd endpoints of \
             its own cluster; or, if this data dir is no longer wanted, move it away and start \
             with an empty one",
            s.name, s.id, f.prefix, r.name, r.id, s.name
        )),
        (_, None) if n == 0 => Decision::CreateAndStamp,
        (Some(s), None) => Decision::Refuse(format!(
            "etcd prefix {} has no record of a cluster, but data dir {dir} holds {n} replica(s) \
             of cluster '{}' (id {}). Check --cluster (it is '{}') and --etcd; if etcd was \
             wiped or restored from an older backup, restore the backup that holds this \
             cluster's metadata. Nothing was changed",
            f.prefix, s.name, s.id, f.cluster
        )),
        (None, Some(_)) if n == 0 => Decision::Stamp,
        (None, record) => {
            let unknown: Vec<u64> = f
                .hosted
                .iter()
                .copied()
                .filter(|g| !f.known.contains(g))
                .collect();
            if unknown.is_empty() {
                // Written before stamps existed, and the prefix names every
                // replica it holds: it belongs here.
                if record.is_some() {
                    Decision::Stamp
                } else {
                    Decision::CreateAndStamp
                }
            } else {
                Decision::Refuse(format!(
                    "data dir {dir} has no cluster stamp and holds {n} replica(s), {} of which \
                     etcd prefix {} does not know (groups {:?}). Check --cluster (it is '{}') \
                     and --etcd; nothing was changed",
                    unknown.len(),
                    f.prefix,
                    &unknown[..unknown.len().min(8)],
                    f.cluster
                ))
            }
        }
    }
}

/// Read the data dir's stamp (`None` if there is none).
pub fn read_stamp(data_dir: &Path) -> anyhow::Result<Option<Stamp>> {
    let path = data_dir.join(STAMP_FILE);
    match std::fs::read(&path) {
        Ok(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(|e| {
            anyhow::anyhow!("{} is unreadable ({e}); it records which cluster the data dir belongs to: restore it or move the data dir away", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Write the stamp durably (temp file, fsync, rename, fsync the dir).
pub fn write_stamp(data_dir: &Path, stamp: &Stamp) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = data_dir.join(format!("{STAMP_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(stamp)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(STAMP_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ClusterRecord {
        ClusterRecord {
            name: "default".into(),
            id: id.into(),
            created_at: 1,
        }
    }

    fn decide(
        stamp: Option<&Stamp>,
        record: Option<&ClusterRecord>,
        hosted: &[u64],
        known: &[u64],
    ) -> Decision {
        let known: BTreeSet<u64> = known.iter().copied().collect();
        check(&Found {
            cluster: "default",
            prefix: "/shoal/default/",
            data_dir: Path::new("/data"),
            stamp,
            record,
            hosted,
            known: &known,
        })
    }

    #[test]
    fn a_fresh_node_creates_or_joins_the_cluster() {
        assert_eq!(decide(None, None, &[], &[]), Decision::CreateAndStamp);
        assert_eq!(decide(None, Some(&rec("a")), &[], &[]), Decision::Stamp);
    }

    #[test]
    fn a_stamped_node_starts_only_in_its_own_cluster() {
        let s = Stamp::from(&rec("a"));
        assert_eq!(
            decide(Some(&s), Some(&rec("a")), &[1, 2], &[]),
            Decision::Proceed
        );
        let other = decide(Some(&s), Some(&rec("b")), &[1, 2], &[1, 2]);
        assert!(
            matches!(&other, Decision::Refuse(m) if m.contains("belongs to cluster")),
            "{other:?}"
        );
        // An empty prefix (mistyped --cluster, etcd wiped) while holding data.
        let empty = decide(Some(&s), None, &[1, 2], &[]);
        assert!(
            matches!(&empty, Decision::Refuse(m) if m.contains("has no record of a cluster")),
            "{empty:?}"
        );
        // Holding nothing, a stale stamp is harmless.
        assert_eq!(decide(Some(&s), None, &[], &[]), Decision::CreateAndStamp);
    }

    #[test]
    fn an_unstamped_data_dir_is_adopted_only_where_every_replica_is_known() {
        assert_eq!(
            decide(None, None, &[1, 2], &[1, 2, 3]),
            Decision::CreateAndStamp
        );
        assert_eq!(
            decide(None, Some(&rec("a")), &[1, 2], &[1, 2]),
            Decision::Stamp
        );
        let d = decide(None, None, &[1, 2], &[1]);
        assert!(
            matches!(&d, Decision::Refuse(m) if m.contains("[2]")),
            "{d:?}"
        );
        let d = decide(None, None, &[1], &[]);
        assert!(matches!(d, Decision::Refuse(_)));
    }
}
