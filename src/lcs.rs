//! The longest common subsequence of two byte strings, for the LCS command:
//! Redis 7's algorithm step for step (the dynamic-programming table, then
//! the walk back from its corner that yields the string and the matched
//! ranges), so the string and the ranges come out exactly as Redis gives
//! them, with the work bounded: [`lcs`] refuses inputs whose table would
//! pass [`MAX_LCS_CELLS`] cells instead of allocating it.

/// Most cells of the table (`(len_a + 1) * (len_b + 1)`, 4 bytes each) one
/// LCS may build: 16,777,216, i.e. 64 MiB of memory and about as many steps
/// (two strings of 4,095 bytes). Redis 7 allocates the table for any inputs
/// up to its `proto-max-bulk-len` (512 MiB by default).
pub const MAX_LCS_CELLS: u64 = 1 << 24;

/// One run of matching bytes: `a[a_start..=a_end]` equals
/// `b[b_start..=b_end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub a_start: u32,
    pub a_end: u32,
    pub b_start: u32,
    pub b_end: u32,
}

impl Match {
    pub fn len(&self) -> u32 {
        self.a_end - self.a_start + 1
    }

    /// Never: a match holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What an LCS found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcs {
    /// The length of the longest common subsequence.
    pub len: u32,
    /// The subsequence itself (when asked for).
    pub string: Vec<u8>,
    /// The matched ranges, from the end of the strings backwards, those
    /// shorter than the minimum left out (when asked for).
    pub matches: Vec<Match>,
}

/// The error of an LCS over [`MAX_LCS_CELLS`].
pub fn too_big(a: usize, b: usize) -> String {
    format!(
        "ERR LCS of strings of {a} and {b} bytes needs a table of {} cells, over shoal's limit of {MAX_LCS_CELLS} (two strings of 4095 bytes)",
        (a as u128 + 1) * (b as u128 + 1)
    )
}

/// The LCS of `a` and `b`. `walk`: compute the string and the ranges
/// (else only the length); `min_match`: leave out ranges shorter than this
/// (0 keeps all). `Err` (the error text) when the table would pass
/// [`MAX_LCS_CELLS`].
pub fn lcs(a: &[u8], b: &[u8], walk: bool, min_match: u64) -> Result<Lcs, String> {
    let cells = (a.len() as u128 + 1) * (b.len() as u128 + 1);
    if cells > MAX_LCS_CELLS as u128 {
        return Err(too_big(a.len(), b.len()));
    }
    let (alen, blen) = (a.len(), b.len());
    let width = blen + 1;
    // table[i * width + j]: the LCS length of a[..i] and b[..j].
    let mut table = vec![0u32; cells as usize];
    for i in 1..=alen {
        for j in 1..=blen {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let len = table[alen * width + blen];
    let mut out = Lcs {
        len,
        string: Vec::new(),
        matches: Vec::new(),
    };
    if !walk {
        return Ok(out);
    }
    // Redis's walk back from the corner (t_string.c, lcsCommand): a match
    // extends the current range backwards when contiguous, anything else
    // closes it; a range is also closed at the first byte of either string.
    out.string = vec![0u8; len as usize];
    let mut idx = len as usize;
    let (mut i, mut j) = (alen, blen);
    let unset = alen;
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (unset, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            out.string[idx - 1] = a[i - 1];
            if a_start == unset {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * width + j] > table[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != unset {
                emit = true;
            }
        }
        if emit {
            let m = Match {
                a_start: a_start as u32,
                a_end: a_end as u32,
                b_start: b_start as u32,
                b_end: b_end as u32,
            };
            if min_match == 0 || m.len() as u64 >= min_match {
                out.matches.push(m);
            }
            a_start = unset;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: (u32, u32), b: (u32, u32)) -> Match {
        Match {
            a_start: a.0,
            a_end: a.1,
            b_start: b.0,
            b_end: b.1,
        }
    }

    /// The examples of Redis's LCS documentation.
    #[test]
    fn redis_documentation_examples() {
        let (a, b) = (b"ohmytext", b"mynewtext");
        let r = lcs(a, b, true, 0).unwrap();
        assert_eq!(r.string, b"mytext");
        assert_eq!(r.len, 6);
        assert_eq!(r.matches, vec![m((4, 7), (5, 8)), m((2, 3), (0, 1))]);
        let r = lcs(a, b, true, 4).unwrap();
        assert_eq!(r.matches, vec![m((4, 7), (5, 8))]);
        assert_eq!(lcs(a, b, false, 0).unwrap().len, 6);
        assert!(lcs(a, b, false, 0).unwrap().string.is_empty());
    }

    #[test]
    fn empty_and_disjoint() {
        let r = lcs(b"", b"abc", true, 0).unwrap();
        assert_eq!((r.len, r.string.len(), r.matches.len()), (0, 0, 0));
        let r = lcs(b"abc", b"xyz", true, 0).unwrap();
        assert_eq!((r.len, r.matches.len()), (0, 0));
        let r = lcs(b"abc", b"abc", true, 0).unwrap();
        assert_eq!(r.matches, vec![m((0, 2), (0, 2))]);
    }

    /// The length agrees with a plain two-row LCS, and the string is a
    /// subsequence of both inputs with that length.
    #[test]
    fn agrees_with_a_plain_lcs() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8 % 4 + b'a'
        };
        for n in 0..200 {
            let a: Vec<u8> = (0..n % 23).map(|_| next()).collect();
            let b: Vec<u8> = (0..n % 17).map(|_| next()).collect();
            let r = lcs(&a, &b, true, 0).unwrap();
            let mut prev = vec![0u32; b.len() + 1];
            for x in &a {
                let mut row = vec![0u32; b.len() + 1];
                for (j, y) in b.iter().enumerate() {
                    row[j + 1] = if x == y {
                        prev[j] + 1
                    } else {
                        prev[j + 1].max(row[j])
                    };
                }
                prev = row;
            }
            assert_eq!(r.len, prev[b.len()]);
            assert_eq!(r.string.len(), r.len as usize);
            let sub = |s: &[u8]| {
                let mut it = s.iter();
                r.string.iter().all(|c| it.any(|x| x == c))
            };
            assert!(sub(&a) && sub(&b), "{a:?} {b:?} {:?}", r.string);
            let total: u32 = r.matches.iter().map(Match::len).sum();
            assert_eq!(total, r.len);
            for x in &r.matches {
                assert_eq!(
                    a[x.a_start as usize..=x.a_end as usize],
                    b[x.b_start as usize..=x.b_end as usize]
                );
            }
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let a = vec![b'a'; 4095];
        assert!(lcs(&a, &a, true, 0).is_ok());
        let b = vec![b'a'; 4096];
        let e = lcs(&a, &b, false, 0).unwrap_err();
        assert!(e.contains("16781312 cells"), "{e}");
        assert!(lcs(&vec![0; (1 << 24) - 1], b"", false, 0).is_ok());
        assert!(lcs(&vec![0; 1 << 24], b"x", false, 0).is_err());
    }
}
