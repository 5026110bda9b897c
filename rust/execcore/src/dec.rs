//! Exact decimals with Python `decimal` semantics for the few operations the engine uses.
//!
//! A value is `(-1)^neg x coef x 10^exp`, like a Python `Decimal`: the exponent is part of the
//! value's identity ("0.10" and "0.1" are equal but print differently), and every operation
//! here gives the coefficient and exponent that CPython's `decimal` gives in the engine's
//! 100-digit context. The coefficient is a 512-bit integer (154 digits): inputs have at most 40
//! characters, so products, alignments and quotients stay far inside it. No float anywhere.

use bnum::cast::As;
use bnum::types::U512;
use std::cmp::Ordering;

pub type Coef = U512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dec {
    pub neg: bool,
    pub coef: Coef,
    pub exp: i32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rounding {
    Floor,
    Ceiling,
    HalfUp,
    HalfEven,
}

static POW10: std::sync::LazyLock<Vec<Coef>> = std::sync::LazyLock::new(|| {
    let ten: Coef = 10u8.as_();
    (0..=154).map(|n| ten.pow(n)).collect()
});

fn pow10(n: u32) -> Coef {
    POW10[n as usize]
}

const U128_MAX_DIGITS: u32 = 38;

fn as_u128(c: &Coef) -> Option<u128> {
    if c.bit_width() <= 128 { Some((*c).as_()) } else { None }
}

/// Quotient and remainder, in u128 when both fit (the common case: 512-bit division is slow).
fn div_rem(a: &Coef, b: &Coef) -> (Coef, Coef) {
    if let (Some(x), Some(y)) = (as_u128(a), as_u128(b)) {
        return ((x / y).as_(), (x % y).as_());
    }
    (*a / *b, *a % *b)
}

/// Product, in u128 when it surely fits.
fn mul(a: &Coef, b: &Coef) -> Coef {
    if a.bit_width() + b.bit_width() <= 128 {
        let (x, y): (u128, u128) = ((*a).as_(), (*b).as_());
        return (x * y).as_();
    }
    *a * *b
}

/// `c x 10^n`.
fn scale(c: &Coef, n: u32) -> Coef {
    if n <= U128_MAX_DIGITS
        && let Some(x) = as_u128(c)
        && let Some(v) = x.checked_mul(10u128.pow(n))
    {
        return v.as_();
    }
    *c * pow10(n)
}

fn small(v: u64) -> Coef {
    v.as_()
}

impl Dec {
    pub fn zero() -> Dec {
        Dec { neg: false, coef: zero_coef(), exp: 0 }
    }

    pub fn is_zero(&self) -> bool {
        self.coef == zero_coef()
    }

    /// Parses `[-]digits[.digits][(e|E)[+-]digits]`; None for anything else.
    pub fn parse(s: &str) -> Option<Dec> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut neg = false;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            neg = b[i] == b'-';
            i += 1;
        }
        let mut coef = zero_coef();
        let mut digits = 0usize;
        let mut frac = 0i64;
        let mut seen_dot = false;
        let ten: Coef = small(10);
        // Accumulate in u64 chunks of up to 18 digits: one wide multiply per chunk.
        let mut chunk: u64 = 0;
        let mut chunk_len: u32 = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_digit() {
                chunk = chunk * 10 + u64::from(c - b'0');
                chunk_len += 1;
                if chunk_len == 18 {
                    coef = scale(&coef, 18).checked_add(small(chunk))?;
                    chunk = 0;
                    chunk_len = 0;
                }
                digits += 1;
                if seen_dot {
                    frac += 1;
                }
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if chunk_len > 0 {
            coef = scale(&coef, chunk_len).checked_add(small(chunk))?;
        }
        let _ = ten;
        if digits == 0 {
            return None;
        }
        let mut exp: i64 = -frac;
        if i < b.len() {
            if b[i] != b'e' && b[i] != b'E' {
                return None;
            }
            i += 1;
            let mut eneg = false;
            if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
                eneg = b[i] == b'-';
                i += 1;
            }
            let start = i;
            let mut e: i64 = 0;
            while i < b.len() && b[i].is_ascii_digit() {
                e = e.checked_mul(10)?.checked_add(i64::from(b[i] - b'0'))?;
                if e > 1_000_000 {
                    return None;
                }
                i += 1;
            }
            if i == start || i != b.len() {
                return None;
            }
            exp += if eneg { -e } else { e };
        }
        Some(Dec { neg, coef, exp: i32::try_from(exp).ok()? })
    }

    /// Number of decimal digits of the coefficient (1 for zero).
    pub fn digits(&self) -> u32 {
        if self.coef == zero_coef() {
            return 1;
        }
        // ilog10 is exact on integers.
        match as_u128(&self.coef) {
            Some(x) => x.ilog10() + 1,
            None => self.coef.ilog10() + 1,
        }
    }

    /// `format(value, "f")`: plain notation, the exponent kept.
    pub fn plain(&self) -> String {
        let mut out = String::with_capacity(48);
        self.write_plain(&mut out);
        out
    }

    pub fn write_plain(&self, out: &mut String) {
        if self.neg {
            out.push('-');
        }
        let digits = coef_string(&self.coef);
        if self.exp >= 0 {
            out.push_str(&digits);
            if self.coef != zero_coef() {
                for _ in 0..self.exp {
                    out.push('0');
                }
            }
            return;
        }
        let frac = (-self.exp) as usize;
        if digits.len() > frac {
            let (int, f) = digits.split_at(digits.len() - frac);
            out.push_str(int);
            out.push('.');
            out.push_str(f);
        } else {
            out.push_str("0.");
            for _ in 0..(frac - digits.len()) {
                out.push('0');
            }
            out.push_str(&digits);
        }
    }

    /// Numeric comparison (exponents aligned), signs included.
    pub fn cmp_value(&self, other: &Dec) -> Ordering {
        let a_zero = self.is_zero();
        let b_zero = other.is_zero();
        let sa = if a_zero { 0 } else if self.neg { -1 } else { 1 };
        let sb = if b_zero { 0 } else if other.neg { -1 } else { 1 };
        if sa != sb {
            return sa.cmp(&sb);
        }
        if sa == 0 {
            return Ordering::Equal;
        }
        let (a, b) = align(self, other);
        let mag = a.cmp(&b);
        if sa < 0 { mag.reverse() } else { mag }
    }

    pub fn is_positive(&self) -> bool {
        !self.is_zero() && !self.neg
    }

    /// `a * b`, exact (exponents add).
    pub fn mul(&self, other: &Dec) -> Dec {
        Dec { neg: self.neg != other.neg, coef: mul(&self.coef, &other.coef), exp: self.exp + other.exp }
    }

    /// `a - b`, exact; exponent = min of the two; an exact zero is positive (as in CPython
    /// outside ROUND_FLOOR).
    pub fn sub(&self, other: &Dec) -> Dec {
        let neg_other = Dec { neg: !other.neg, coef: other.coef, exp: other.exp };
        self.add(&neg_other)
    }

    pub fn add(&self, other: &Dec) -> Dec {
        let exp = self.exp.min(other.exp);
        let (a, b) = align(self, other);
        if self.neg == other.neg {
            let coef = a + b;
            let neg = if coef == zero_coef() { self.neg && other.neg } else { self.neg };
            return Dec { neg, coef, exp };
        }
        match a.cmp(&b) {
            Ordering::Equal => Dec { neg: false, coef: zero_coef(), exp },
            Ordering::Greater => Dec { neg: self.neg, coef: a - b, exp },
            Ordering::Less => Dec { neg: other.neg, coef: b - a, exp },
        }
    }

    /// `value.quantize(10^exp, rounding)`: the value at exponent `exp`, rounded.
    pub fn quantize(&self, exp: i32, rounding: Rounding) -> Dec {
        if self.exp >= exp {
            let coef = scale(&self.coef, (self.exp - exp) as u32);
            return Dec { neg: self.neg, coef, exp };
        }
        let shift = (exp - self.exp) as u32;
        if shift > 150 {
            // Far below the quantum: the quotient is 0 with a non-zero remainder.
            let coef = round_quotient(zero_coef(), Ordering::Less, self.coef == zero_coef(), self.neg, rounding);
            return Dec { neg: self.neg, coef, exp };
        }
        let d = pow10(shift);
        let (q, r) = div_rem(&self.coef, &d);
        let half_cmp = (r * small(2)).cmp(&d);
        let coef = round_quotient(q, half_cmp, r == zero_coef(), self.neg, rounding);
        Dec { neg: self.neg, coef, exp }
    }

    /// `round(self / step)` with `rounding`, times `step`, at the step's exponent (the engine's
    /// grid rule for steps that are not a power of ten; both values positive).
    pub fn round_to_multiple(&self, step: &Dec, rounding: Rounding) -> Dec {
        let (a, b) = align(self, step);
        let (q, r) = div_rem(&a, &b);
        let half_cmp = (r * small(2)).cmp(&b);
        let k = round_quotient(q, half_cmp, r == zero_coef(), self.neg != step.neg, rounding);
        Dec { neg: false, coef: mul(&k, &step.coef), exp: step.exp }
    }

    /// True when the value is a bare power of ten as written: coefficient 1 (so "0.01", not "0.010").
    pub fn is_power_of_ten(&self) -> bool {
        !self.neg && self.coef == small(1)
    }

    /// `normalize()` in a context of `prec` digits, ROUND_HALF_EVEN: rounded to `prec` digits,
    /// trailing zeros stripped.
    pub fn normalize(&self, prec: u32) -> Dec {
        let mut v = self.clone();
        let n = v.digits();
        if n > prec {
            v = v.quantize(v.exp + (n - prec) as i32, Rounding::HalfEven);
            // A carry (999.. -> 1000..) adds a digit; the trailing zero is stripped below.
        }
        if v.coef == zero_coef() {
            return Dec { neg: v.neg, coef: zero_coef(), exp: 0 };
        }
        let ten = small(10);
        loop {
            let (q, r) = div_rem(&v.coef, &ten);
            if r != zero_coef() {
                break;
            }
            v.coef = q;
            v.exp += 1;
        }
        v
    }
}

/// Both coefficients at the smaller exponent.
fn align(a: &Dec, b: &Dec) -> (Coef, Coef) {
    match a.exp.cmp(&b.exp) {
        Ordering::Equal => (a.coef, b.coef),
        Ordering::Greater => (scale(&a.coef, (a.exp - b.exp) as u32), b.coef),
        Ordering::Less => (a.coef, scale(&b.coef, (b.exp - a.exp) as u32)),
    }
}

/// The rounded quotient from the truncated one: `half_cmp` compares 2 x remainder with the
/// divisor; `exact` means no remainder; `neg` is the sign of the exact quotient.
fn round_quotient(q: Coef, half_cmp: Ordering, exact: bool, neg: bool, rounding: Rounding) -> Coef {
    if exact {
        return q;
    }
    let up = match rounding {
        Rounding::Floor => neg,
        Rounding::Ceiling => !neg,
        Rounding::HalfUp => half_cmp != Ordering::Less,
        Rounding::HalfEven => match half_cmp {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => q % small(2) == small(1),
        },
    };
    if up { q + small(1) } else { q }
}

pub fn coef_string(c: &Coef) -> String {
    // Fast path for the common case: fits in a u128.
    if *c <= u128::MAX.as_() {
        let v: u128 = (*c).as_();
        return v.to_string();
    }
    c.to_string()
}

/// `round_half_even(num / den x 10^scale)` as the coefficient of a value at exponent `exp`.
pub fn div_scaled(num: &Dec, den: &Dec, power: i32, exp: i32) -> Dec {
    let e = num.exp - den.exp + power;
    let (n, d) = if e >= 0 { (scale(&num.coef, e as u32), den.coef) } else { (num.coef, scale(&den.coef, (-e) as u32)) };
    let (q, r) = div_rem(&n, &d);
    let half_cmp = (r * small(2)).cmp(&d);
    let neg = num.neg != den.neg;
    let coef = round_quotient(q, half_cmp, r == zero_coef(), neg, Rounding::HalfEven);
    // The sign survives a zero result when the exact quotient was non-zero (as in CPython).
    let neg = neg && !(num.is_zero());
    Dec { neg, coef, exp }
}

fn zero_coef() -> Coef {
    0u8.as_()
}
