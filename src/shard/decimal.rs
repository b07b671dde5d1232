//! INCRBYFLOAT's arithmetic: Redis's float rules with an exact decimal
//! path for Redis-like formatting, overflow-safe (clamped exponents, checked
//! arithmetic), so no input can panic a replica.

use super::command::*;
use crate::num::parse_f64;

/// INCRBYFLOAT on texts: `current + by`, printed like Redis (fixed notation,
/// at most 17 decimals, trailing zeros trimmed).
///
/// Redis adds in `long double` and prints with `%.17Lf`; for the decimal
/// inputs people use (`10.50` + `0.1`) that is the exact decimal sum, which
/// plain `f64` would miss (`10.6` vs `10.599999999999999645`). So the sum is
/// done exactly in decimal when both operands fit in 30 significant digits,
/// and in `f64` otherwise.
pub fn incr_float(current: &[u8], by: &[u8]) -> Result<String, &'static str> {
    let a = parse_f64(current).ok_or(ERR_NOT_FLOAT)?;
    let b = parse_f64(by).ok_or(ERR_NOT_FLOAT)?;
    let sum = a + b;
    if !sum.is_finite() {
        return Err(ERR_NAN_INF);
    }
    if let (Some(x), Some(y)) = (Decimal::parse(current), Decimal::parse(by)) {
        if let Some(d) = x.add(&y).map(|d| d.round(17)) {
            if d.significant_digits() <= 19 {
                return Ok(d.to_fixed());
            }
        }
    }
    let s = format!("{:.17}", sum);
    Ok(trim_fraction(&s))
}

fn trim_fraction(s: &str) -> String {
    if !s.contains('.') {
        return s.to_string();
    }
    let t = s.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" || t.is_empty() {
        "0".to_string()
    } else {
        t.to_string()
    }
}

/// A decimal exponent (`[+-]digits`), clamped to ±10^9 so that no
/// arithmetic on it can overflow; `None` when it is not one.
pub(super) fn parse_exponent(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    const CLAMP: i64 = 1_000_000_000;
    let mut v: i64 = 0;
    for c in digits.bytes() {
        v = (v * 10 + i64::from(c - b'0')).min(CLAMP);
    }
    Some(if neg { -v } else { v })
}

/// An exact decimal `mantissa * 10^-scale`, for INCRBYFLOAT.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    /// Plain or exponent decimal text (`-1.5`, `.5`, `3e2`), at most 30
    /// significant digits and a scale within 0..=60; `None` otherwise.
    /// Exponents of any size are taken without overflow (`0e-2147483648`
    /// is zero; `1e-99999999999` is out of range).
    fn parse(s: &[u8]) -> Option<Decimal> {
        let s = std::str::from_utf8(s).ok()?;
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mant, exp) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], parse_exponent(&body[i + 1..])?),
            None => (body, 0),
        };
        let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
        let digits: String = format!("{int}{frac}");
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return None;
        }
        let mut m: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        if m == 0 {
            return Some(Decimal {
                mantissa: 0,
                scale: 0,
            });
        }
        // Both terms are bounded (the text, the clamped exponent): no overflow.
        let mut scale = frac.len() as i64 - exp;
        if scale < 0 {
            let up = u32::try_from(-scale).ok()?;
            m = m.checked_mul(10i128.checked_pow(up)?)?;
            scale = 0;
        }
        if scale > 60 || m.abs() >= 10i128.pow(36) {
            return None;
        }
        Some(Decimal {
            mantissa: if neg { -m } else { m },
            scale: scale as u32,
        })
    }

    fn rescale(&self, scale: u32) -> Option<i128> {
        self.mantissa
            .checked_mul(10i128.checked_pow(scale - self.scale)?)
    }

    fn add(&self, other: &Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let m = self.rescale(scale)?.checked_add(other.rescale(scale)?)?;
        Some(Decimal { mantissa: m, scale })
    }

    /// Rounded (half away from zero) to at most `decimals` places.
    fn round(self, decimals: u32) -> Decimal {
        let (mut m, mut scale) = (self.mantissa, self.scale);
        if scale > decimals {
            let Some(div) = 10i128.checked_pow(scale - decimals) else {
                // A divisor past i128 is far above any mantissa (< 10^37).
                return Decimal {
                    mantissa: 0,
                    scale: decimals,
                };
            };
            let (q, r) = (m / div, m % div);
            m = if r.abs() >= div - r.abs() {
                q + m.signum()
            } else {
                q
            };
            scale = decimals;
        }
        Decimal { mantissa: m, scale }
    }

    fn significant_digits(&self) -> usize {
        let digits = self.mantissa.unsigned_abs().to_string();
        digits.trim_end_matches('0').len()
    }

    /// Fixed notation, trailing zeros trimmed.
    fn to_fixed(self) -> String {
        let (m, scale) = (self.mantissa, self.scale);
        let neg = m < 0;
        let digits = m.unsigned_abs().to_string();
        let scale = scale as usize;
        let text = if scale == 0 {
            digits
        } else if digits.len() > scale {
            format!(
                "{}.{}",
                &digits[..digits.len() - scale],
                &digits[digits.len() - scale..]
            )
        } else {
            format!("0.{}{}", "0".repeat(scale - digits.len()), digits)
        };
        let text = trim_fraction(&text);
        if neg && text != "0" {
            format!("-{text}")
        } else {
            text
        }
    }
}
