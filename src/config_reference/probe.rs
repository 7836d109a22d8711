//! Which keys a settings struct accepts and which names an enum takes, read from their derived
//! `Deserialize` impls by a deserializer that records what it is asked for and stops.

use serde::de::{self, DeserializeOwned, Visitor};

/// The error of [`Probe`]: it never deserialises anything.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// A deserializer that records the field names (of a struct) or variant names (of an enum) that a
/// derived `Deserialize` implementation passes to it, and then stops.
#[derive(Default)]
struct Probe {
    names: Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.names = Some(fields);
        Err(Stop)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.names = Some(variants);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn probe<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut p = Probe::default();
    let _ = T::deserialize(&mut p);
    p.names.unwrap_or_else(|| {
        panic!(
            "{} is not a struct or an externally tagged enum",
            std::any::type_name::<T>()
        )
    })
}

/// The keys a struct's derived `Deserialize` accepts (after `rename`s), in declaration order.
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    probe::<T>()
}

/// The variant names an enum's derived `Deserialize` accepts (after `rename_all`).
pub fn enum_variants<T: DeserializeOwned>() -> &'static [&'static str] {
    probe::<T>()
}
