//! Raising this process's open-file limit at start.
//!
//! A router holds a socket per client, a node RocksDB files and peer
//! connections; the default soft limit (often 1024) is far below what the
//! hard limit allows. Both `shoal router` and `shoal node` call
//! [`raise_nofile_limit`] first thing. Running out anyway is survivable: the
//! router's accept loop backs off and retries (`resp::server`).

use std::io;

/// Raise the soft RLIMIT_NOFILE to the hard one. Returns the soft limit
/// before and after.
pub fn raise_nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

/// [`raise_nofile_limit`], logged (after logging is set up).
pub fn raise_nofile_limit_logged() {
    match raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!("open-file limit raised from {before} to {after}")
        }
        Ok((_, after)) => tracing::debug!("open-file limit is {after}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_one() {
        let (_, after) = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((lim.rlim_cur, lim.rlim_max), (after, after));
    }
}
