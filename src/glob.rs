//! Redis glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes), the one
//! matcher behind KEYS, SCAN MATCH and CONFIG GET.
//!
//! A leaf module: it depends on nothing in the crate, so the RESP layer and
//! the shard layer can both use it. It owns the *semantics* of Redis's
//! `stringmatchlen` (util.c, 7.0), quirks included, and must never recurse
//! or backtrack more than once per `*`: patterns come from clients.
//!
//! The algorithm is the classic two-pointer wildcard match. Every token but
//! `*` matches exactly one byte, so on a mismatch only the *last* `*` needs
//! to take one more byte: earlier stars can never help (a longer match for
//! them only moves the rest of the pattern to the right, and the rest was
//! already tried from every position). Time is O(pattern × string) in the
//! worst case and linear for patterns like `*a*a*a*…*b`, where the recursive
//! matcher Redis had before CVE-2022-36021 was exponential.

/// Whether `s` matches `pattern`, byte for byte.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    matches(pattern, s, false)
}

/// [`glob_match`] ignoring ASCII case (CONFIG GET's matching).
pub fn glob_match_nocase(pattern: &[u8], s: &[u8]) -> bool {
    matches(pattern, s, true)
}

fn matches(p: &[u8], s: &[u8], nocase: bool) -> bool {
    // Redis's loop never starts on an empty string: only an empty pattern
    // matches it (so `*` does not; KEYS and SCAN special-case a lone `*`).
    if s.is_empty() {
        return p.is_empty();
    }
    let (mut pi, mut si) = (0usize, 0usize);
    // After the last `*` seen: where the rest of the pattern starts, and
    // the string position the star's match currently ends at.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if si == s.len() {
            // The string is consumed: only stars may remain.
            while p.get(pi) == Some(&b'*') {
                pi += 1;
            }
            return pi == p.len();
        }
        let step = match p.get(pi) {
            None => None,
            Some(b'*') => {
                while p.get(pi) == Some(&b'*') {
                    pi += 1;
                }
                if pi == p.len() {
                    return true;
                }
                star = Some((pi, si));
                continue;
            }
            Some(_) => token(p, pi, s[si], nocase),
        };
        match step {
            Some(next) => {
                pi = next;
                si += 1;
            }
            // Mismatch: let the last star take one more byte.
            None => match star {
                Some((rest, end)) => {
                    star = Some((rest, end + 1));
                    pi = rest;
                    si = end + 1;
                }
                None => return false,
            },
        }
    }
}

/// The byte at `i`, or 0 past the end (Redis reads the NUL terminator).
fn at(p: &[u8], i: usize) -> u8 {
    p.get(i).copied().unwrap_or(0)
}

fn fold(c: u8, nocase: bool) -> u8 {
    if nocase {
        c.to_ascii_lowercase()
    } else {
        c
    }
}

/// Match the single-byte token at `p[pi]` (not `*`) against `c`: the index
/// after the token, or `None` on a mismatch.
fn token(p: &[u8], pi: usize, c: u8, nocase: bool) -> Option<usize> {
    match p[pi] {
        b'?' => Some(pi + 1),
        b'[' => {
            let (hit, end) = class(p, pi + 1, c, nocase);
            hit.then_some(end)
        }
        b'\\' if p.len() - pi >= 2 => {
            (fold(p[pi + 1], nocase) == fold(c, nocase)).then_some(pi + 2)
        }
        lit => (fold(lit, nocase) == fold(c, nocase)).then_some(pi + 1),
    }
}

/// A `[...]` class starting at `i` (just after `[`), as Redis scans it: a
/// missing `]` ends the class at the end of the pattern; `a-z` (and `z-a`)
/// is a range even when its end is the `]`. Returns whether `c` is in it
/// and the index after the class.
fn class(p: &[u8], mut i: usize, c: u8, nocase: bool) -> (bool, usize) {
    let left = |i: usize| p.len().saturating_sub(i);
    let not = at(p, i) == b'^';
    if not {
        i += 1;
    }
    let mut hit = false;
    loop {
        if at(p, i) == b'\\' && left(i) >= 2 {
            i += 1;
            hit |= at(p, i) == c;
        } else if at(p, i) == b']' {
            break;
        } else if left(i) == 0 {
            // Unterminated: the class runs to the end of the pattern.
            i -= 1;
            break;
        } else if left(i) >= 3 && at(p, i + 1) == b'-' {
            let (mut lo, mut hi) = (at(p, i), at(p, i + 2));
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let (lo, hi, c) = (fold(lo, nocase), fold(hi, nocase), fold(c, nocase));
            hit |= lo <= c && c <= hi;
            i += 2;
        } else {
            hit |= fold(at(p, i), nocase) == fold(c, nocase);
        }
        i += 1;
    }
    (hit != not, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pattern, string, Redis 7.0.15's answer), checked against a real
    /// redis-server with `SET <string> x` + `KEYS <pattern>`. (Except for
    /// `*` against the empty key: KEYS and SCAN take a lone `*` as
    /// "everything" before matching; `stringmatchlen` itself says no.)
    const REDIS: &[(&str, &str, bool)] = &[
        ("", "", true),
        ("*", "", false),
        ("**", "", false),
        ("", "a", false),
        ("*", "a", true),
        ("**", "abc", true),
        ("a*", "a", true),
        ("a**", "a", true),
        ("*a", "a", true),
        ("a*b", "ab", true),
        ("a*b", "axxb", true),
        ("a*b", "axxbx", false),
        ("a*b*c", "abbbc", true),
        ("a*b*c", "acb", false),
        ("*ab", "aab", true),
        ("*aab", "aaab", true),
        ("h?llo", "hello", true),
        ("h?llo", "hllo", false),
        ("?", "", false),
        ("??", "a", false),
        ("h[ae]llo", "hallo", true),
        ("h[ae]llo", "hillo", false),
        ("h[^e]llo", "hello", false),
        ("h[^e]llo", "hallo", true),
        ("h[a-b]llo", "hbllo", true),
        ("h[b-a]llo", "hallo", true),
        ("h[a-b]llo", "hcllo", false),
        ("[]", "a", false),
        ("[^]", "a", true),
        ("[]a]", "]", false),
        ("[]a]", "a", false),
        ("[]a]", "]a]", false),
        ("[a-]", "-", false),
        ("[a-]", "_", true),
        ("[a-]x", "_x", false),
        ("[a-]]", "_", true),
        ("[abc", "a", true),
        ("[abc", "d", false),
        ("[abc", "ab", false),
        ("[", "[", false),
        ("[^", "x", true),
        ("[^", "xy", false),
        ("[\\]]", "]", true),
        ("[\\-]", "-", true),
        ("[a\\]", "\\", false),
        ("[a\\]", "a", true),
        ("\\*", "*", true),
        ("\\*", "x", false),
        ("\\?", "?", true),
        ("\\", "\\", true),
        ("a\\", "a\\", true),
        ("\\[a]", "[a]", true),
        ("*\\*", "ab*", true),
        ("*[ab]", "xxb", true),
        ("*[^ab]", "xxb", false),
        ("*?", "a", true),
        ("*??", "a", false),
        ("?*?", "ab", true),
        ("a*", "ba", false),
        (
            "*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            false,
        ),
        ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", true),
        ("H*", "hello", false),
    ];

    #[test]
    fn agrees_with_redis() {
        for (p, s, want) in REDIS {
            assert_eq!(
                glob_match(p.as_bytes(), s.as_bytes()),
                *want,
                "{p:?} ~ {s:?}"
            );
        }
    }

    #[test]
    fn nocase() {
        assert!(glob_match_nocase(b"MAX*", b"maxclients"));
        assert!(glob_match_nocase(b"[L-N]ax*", b"maxclients"));
        assert!(glob_match_nocase(b"\\Max*", b"maxclients"));
        assert!(!glob_match(b"MAX*", b"maxclients"));
    }

    #[test]
    fn pathological_patterns_are_linear() {
        // Exponential for a recursive matcher; here about a million steps.
        let s = vec![b'a'; 100_000];
        let mut p = b"*a".repeat(1000);
        p.extend_from_slice(b"*b");
        assert!(!glob_match(&p, &s));
        let mut p = b"*a".repeat(50_000);
        p.extend_from_slice(b"*");
        assert!(glob_match(&p, &s));
        let p = b"*".repeat(1 << 20);
        assert!(glob_match(&p, b"x"));
        assert!(!glob_match(&b"[".repeat(1 << 20), b"x"));
    }
}
