//! Wall-clock time as Unix milliseconds: what proposers stamp into Raft
//! entries (expiry), and what metadata records carry. A leaf module.

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
