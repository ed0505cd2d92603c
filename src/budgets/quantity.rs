//! Kubernetes resource quantities (`500m`, `2`, `64Gi`, `1e3`), read
//! exactly into thousandths (the API's `MilliValue`, rounded up), without
//! allocating: they are read from pods on the request path.

use std::fmt;

/// A quantity, in thousandths of its unit (millicores, millibytes, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(pub i128);

/// The most digits read (the API server keeps 18 + 18; more would only be
/// rounding, and 30 always fit before scaling).
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// A whole number of units (`pods: 40`).
    pub fn units(n: i64) -> Self {
        Quantity(i128::from(n) * 1000)
    }

    /// In units, for metrics (cores, bytes, pods).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Reads `text` as the API server does; `None` when it is not a quantity.
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.contains('.')
            || whole.len() + fraction.len() > MAX_DIGITS
        {
            return None;
        }
        // The digits as one integer, and the power of ten they are scaled by.
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa * 10 + i128::from(digit - b'0');
        }
        let mut exponent10: i32 = -(fraction.len() as i32);
        let mut power2: u32 = 0;
        match suffix {
            "" => {}
            "Ki" => power2 = 10,
            "Mi" => power2 = 20,
            "Gi" => power2 = 30,
            "Ti" => power2 = 40,
            "Pi" => power2 = 50,
            "Ei" => power2 = 60,
            "n" => exponent10 -= 9,
            "u" => exponent10 -= 6,
            "m" => exponent10 -= 3,
            "k" => exponent10 += 3,
            "M" => exponent10 += 6,
            "G" => exponent10 += 9,
            "T" => exponent10 += 12,
            "P" => exponent10 += 15,
            "E" => exponent10 += 18,
            exponent => {
                let digits = exponent.strip_prefix(['e', 'E'])?;
                let (sign, digits) = match digits.as_bytes().first()? {
                    b'-' => (-1, &digits[1..]),
                    b'+' => (1, &digits[1..]),
                    _ => (1, digits),
                };
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                exponent10 += sign * digits.parse::<i32>().ok()?;
            }
        }
        // Thousandths: three more powers of ten.
        exponent10 += 3;
        let mut value = mantissa.checked_mul(1i128.checked_shl(power2)?)?;
        if exponent10 >= 0 {
            value = value.checked_mul(10i128.checked_pow(exponent10 as u32)?)?;
        } else {
            let divisor = 10i128.checked_pow(exponent10.unsigned_abs());
            value = match divisor {
                // Rounded up, as MilliValue does.
                Some(d) => value / d + i128::from(value % d != 0),
                None => i128::from(value != 0),
            };
        }
        Some(Quantity(if negative { -value } else { value }))
    }
}

impl fmt::Display for Quantity {
    /// Whole units when exact, else thousandths (`m`).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    /// From a string (`"500m"`) or a number (`2`), as the API accepts both.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MaybeQuantity::deserialize(deserializer)?
            .0
            .ok_or_else(|| serde::de::Error::custom("not a Kubernetes quantity"))
    }
}

/// A quantity, or nothing when absent or unreadable: how a pod's requests
/// are read (the API server decodes quantities before admission, so an
/// unreadable one only comes from hand-written input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaybeQuantity(pub Option<Quantity>);

impl<'de> serde::Deserialize<'de> for MaybeQuantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess};
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MaybeQuantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes quantity")
            }
            fn visit_str<E>(self, v: &str) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(Quantity::parse(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(Some(Quantity::units(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(i64::try_from(v).ok().map(Quantity::units)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(Quantity::parse(&v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeQuantity, E> {
                Ok(MaybeQuantity(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeQuantity, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeQuantity(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeQuantity, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeQuantity(None))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(text: &str) -> Option<i128> {
        Quantity::parse(text).map(|q| q.0)
    }

    #[test]
    fn reads_every_suffix_into_thousandths() {
        for (text, expected) in [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            (".25", 250),
            ("2.", 2000),
            ("+3", 3000),
            ("-2", -2000),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("64Gi", 64 * (1i128 << 30) * 1000),
            ("1Ki", 1_024_000),
            ("1.5Gi", 1_610_612_736_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1.5e+2", 150_000),
            ("100n", 1),
            ("1u", 1),
            ("0", 0),
            ("1Ei", (1i128 << 60) * 1000),
        ] {
            assert_eq!(milli(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn rounds_up_below_a_thousandth() {
        assert_eq!(milli("0.0001"), Some(1));
        assert_eq!(milli("1500u"), Some(2));
        assert_eq!(milli("1n"), Some(1));
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for text in [
            "",
            "x",
            "1x",
            "Gi",
            "1.2.3",
            "1e",
            ".",
            "1 Gi",
            "1ki",
            "1e1000",
            "--1",
            "1234567890123456789012345678901234567890123",
            "999999999999999999999999999999Ei",
        ] {
            assert_eq!(milli(text), None, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[-+]?[0-9.]{0,36}([KMGTPE]i?|[numk]|[eE][-+]?[0-9]{0,4})?") {
            let _ = Quantity::parse(&text);
        }

        #[test]
        fn whole_numbers_and_millis_read_exactly(n in 0i64..1_000_000_000_000, m in 0i64..1_000_000) {
            proptest::prop_assert_eq!(Quantity::parse(&n.to_string()), Some(Quantity::units(n)));
            proptest::prop_assert_eq!(Quantity::parse(&format!("{m}m")), Some(Quantity(m.into())));
            proptest::prop_assert_eq!(Quantity::parse(&format!("{n}Ki")), Some(Quantity(i128::from(n) * 1024 * 1000)));
        }
    }

    #[test]
    fn shows_units_or_thousandths() {
        assert_eq!(Quantity::parse("2").unwrap().to_string(), "2");
        assert_eq!(Quantity::parse("250m").unwrap().to_string(), "250m");
        assert_eq!(Quantity::units(40).to_string(), "40");
    }

    #[test]
    fn deserialises_strings_and_numbers_without_allocating_a_string() {
        let q: Vec<Quantity> = serde_json::from_str(r#"["250m", 2, 0.5]"#).unwrap();
        assert_eq!(q, [Quantity(250), Quantity(2000), Quantity(500)]);
        assert!(serde_json::from_str::<Quantity>(r#""lots""#).is_err());
        assert!(serde_json::from_str::<Quantity>("true").is_err());
        // Leniently: whatever is not a quantity reads as none, and the rest
        // of the input is still read.
        let q: Vec<MaybeQuantity> =
            serde_json::from_str(r#"["250m", "lots", true, {"a": [1]}, [2], null, 3]"#).unwrap();
        assert_eq!(
            q.iter().map(|m| m.0).collect::<Vec<_>>(),
            [
                Some(Quantity(250)),
                None,
                None,
                None,
                None,
                None,
                Some(Quantity(3000))
            ]
        );
    }
}
