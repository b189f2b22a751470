//! Nested JSON arrays ⇄ ndarray arrays.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value as Json;

/// Reads a rectangular nested array of numbers (a bare number is a 0-d array).
pub fn nested_array(value: &Json) -> Result<ArrayD<f64>, String> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Json::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::new();
    collect(value, &shape, &mut Vec::new(), &mut data)?;
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| e.to_string())
}

fn collect(
    value: &Json,
    shape: &[usize],
    at: &mut Vec<usize>,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    match (value, shape.split_first()) {
        (Json::Number(x), None) => {
            out.push(
                x.as_f64()
                    .ok_or_else(|| format!("{x} at {at:?} is not a number"))?,
            );
            Ok(())
        }
        (Json::Array(items), Some((&len, rest))) if items.len() == len => {
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                collect(item, rest, at, out)?;
                at.pop();
            }
            Ok(())
        }
        (Json::Array(items), Some((&len, _))) => Err(format!(
            "ragged array: {} entries at {at:?}, expected {len} like the first row",
            items.len()
        )),
        (other, _) => Err(format!(
            "expected {} at {at:?}, found {}",
            if shape.is_empty() {
                "a number"
            } else {
                "an array"
            },
            kind(other)
        )),
    }
}

/// The JSON kind of a value, for messages.
pub fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Serializes an array as nested JSON arrays (numbers in their own precision).
pub struct Nested<'a, F>(pub ArrayViewD<'a, F>);

impl<F: Serialize + Copy> Serialize for Nested<'_, F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.ndim() == 0 {
            return self
                .0
                .first()
                .expect("0-d arrays hold one value")
                .serialize(serializer);
        }
        let len = self.0.len_of(Axis(0));
        let mut seq = serializer.serialize_seq(Some(len))?;
        if self.0.ndim() == 1 {
            for x in &self.0 {
                seq.serialize_element(x)?;
            }
        } else {
            for row in self.0.axis_iter(Axis(0)) {
                seq.serialize_element(&Nested(row))?;
            }
        }
        seq.end()
    }
}

/// An array whose innermost rows may be padded with `−∞` at their ends (counts' `w`, each row
/// truncated at its own `K`): serialized as nested JSON arrays with the padding dropped, so
/// rows of different lengths come out as lists of different lengths.
pub struct Ragged<'a, F>(pub ArrayViewD<'a, F>);

impl<F: Serialize + num_traits::Float> Serialize for Ragged<'_, F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.ndim() <= 1 {
            let kept = self.0.iter().take_while(|x| **x != F::neg_infinity());
            return serializer.collect_seq(kept);
        }
        let len = self.0.len_of(Axis(0));
        let mut seq = serializer.serialize_seq(Some(len))?;
        for row in self.0.axis_iter(Axis(0)) {
            seq.serialize_element(&Ragged(row))?;
        }
        seq.end()
    }
}

/// Parses JSON text like `serde_json::from_str`, but refuses an object that names a key twice
/// (at any depth): a request is data a program wrote, and a duplicate is a bug in it that the
/// last-one-wins rule would hide.
pub fn parse_strict(text: &str) -> Result<Json, serde_json::Error> {
    let Strict(value) = serde_json::from_str(text)?;
    Ok(value)
}

/// A JSON value read with duplicate keys refused.
struct Strict(Json);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Strict, E> {
        Ok(Strict(Json::Bool(b)))
    }
    fn visit_i64<E>(self, x: i64) -> Result<Strict, E> {
        Ok(Strict(Json::from(x)))
    }
    fn visit_u64<E>(self, x: u64) -> Result<Strict, E> {
        Ok(Strict(Json::from(x)))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Strict, E> {
        Ok(Strict(Json::from(x)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Strict, E> {
        Ok(Strict(Json::String(s.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Json::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Json::Array(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Strict(Json::Object(object)))
    }
}
