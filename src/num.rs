//! Number parsing with Redis's exact rules (`string2ll`, `string2ld`),
//! shared by the RESP layer (arguments) and the state machine (stored
//! values). A leaf module: it imports nothing from the crate.

/// Redis `string2ll`: optional `-`, then `0` alone or a digit run not starting
/// with `0`; no `+`, no spaces, no `-0`, at most 20 bytes, `i64` range.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let magnitude = parse_digits(digits)?;
    if negative {
        // -(i64::MIN) = 2^63 = i64::MAX + 1
        if magnitude <= i64::MAX as u64 {
            Some(-(magnitude as i64))
        } else if magnitude == i64::MAX as u64 + 1 {
            Some(i64::MIN)
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Unsigned variant of [`parse_i64`]: same strictness, no sign at all,
/// `u64` range.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    parse_digits(s)
}

/// A non-empty digit run without a leading zero, as `u64` (checked).
fn parse_digits(digits: &[u8]) -> Option<u64> {
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Longest float text Redis accepts (`MAX_LONG_DOUBLE_CHARS` - 1).
pub const MAX_FLOAT_LEN: usize = 5 * 1024 - 1;

/// Redis `string2ld`/`strtold` rules: reject empty input, any whitespace,
/// trailing garbage, NaN, overflow to infinity and underflow to zero.
/// Accepts `inf`/`infinity` with optional sign (any case), `1e3`, `.5`,
/// `1.`. (C hex floats such as `0x1p3` are not accepted.)
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > MAX_FLOAT_LEN {
        return None;
    }
    // Restrict to the strtod decimal grammar before handing to Rust's
    // parser (which would also take e.g. "nan" and "NaN").
    let text = std::str::from_utf8(s).ok()?;
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return text.parse::<f64>().ok();
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !all_digits(int_part) || !all_digits(frac_part) {
        return None;
    }
    if let Some(exp) = exponent {
        let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if exp_digits.is_empty() || !all_digits(exp_digits) {
            return None;
        }
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() || value.is_infinite() {
        // Overflow (ERANGE with HUGE_VAL).
        return None;
    }
    if value == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
        // Underflow to zero (ERANGE with a zero result).
        return None;
    }
    Some(value)
}
