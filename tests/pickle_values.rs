//! Round trips Rust -> pickle -> Rust (property tests), the conversions of `Message` and
//! `Value`, the views of received bytes, and the serde bridge.

use proptest::prelude::*;
use serpy::pickle::{self, Array, BigInt, ByteOrder, DType, Value};
use serpy::{Bytes, Message};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<i128>().prop_map(Value::from),
        any::<u128>().prop_map(Value::from),
        any::<f64>().prop_map(Value::Float),
        (any::<f64>(), any::<f64>()).prop_map(|(re, im)| Value::Complex { re, im }),
        ".{0,20}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Value::Bytes(b.into())),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Value::ByteArray(b.into())),
        (
            proptest::collection::vec(any::<u16>(), 0..24),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(v, big, f)| {
                let n = v.len();
                let order = if big {
                    ByteOrder::Big
                } else {
                    ByteOrder::Little
                };
                let data: Vec<u8> = v
                    .iter()
                    .flat_map(|x| {
                        if big {
                            x.to_be_bytes()
                        } else {
                            x.to_le_bytes()
                        }
                    })
                    .collect();
                let shape = if n % 2 == 0 && n > 0 {
                    vec![2, n / 2]
                } else {
                    vec![n]
                };
                let d = DType::new(pickle::Kind::UInt, 2, order).unwrap();
                Value::Array(Array::new(d, shape, f, data.into()).unwrap())
            }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..8)
                .prop_map(|v| Value::Set(v.into_iter().filter(Value::is_hashable).collect())),
            proptest::collection::vec(inner.clone(), 0..8)
                .prop_map(|v| Value::FrozenSet(v.into_iter().filter(Value::is_hashable).collect())),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(|v| Value::Dict(
                v.into_iter().filter(|(k, _)| k.is_hashable()).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn values_round_trip(v in value()) {
        let p = pickle::encode(&v).unwrap();
        let back = pickle::decode(&p).unwrap();
        // Debug, not ==: NaN != NaN.
        prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        // Also through a message, as a connection delivers it.
        let m = Message::pickle(&v).unwrap();
        prop_assert_eq!(format!("{:?}", m.to_value().unwrap()), format!("{v:?}"));
    }

    #[test]
    fn bigints_round_trip(x in any::<i128>()) {
        let b = BigInt::from(x);
        prop_assert_eq!(b.to_i128(), Some(x));
        prop_assert_eq!(b.to_string(), x.to_string());
        prop_assert_eq!(b.to_string().parse::<BigInt>().unwrap(), b);
    }
}

#[test]
fn unhashable_keys_are_refused_both_ways() {
    let bad = Value::Dict(vec![(Value::List(vec![]), Value::None)]);
    let e = pickle::encode(&bad).unwrap_err();
    assert!(e.to_string().contains("unhashable"), "{e}");
    assert!(pickle::encode(&Value::Set(vec![Value::Set(vec![])])).is_err());
    assert!(pickle::encode(&Value::Set(vec![Value::FrozenSet(vec![])])).is_ok());
    // {[]: None} and {[]} written by hand: Python's unpickler refuses them, so does this one.
    assert!(matches!(
        pickle::decode(b"}]Ns."),
        Err(pickle::Error::Malformed { .. })
    ));
    assert!(matches!(
        pickle::decode(b"\x80\x04\x8f(]\x90."),
        Err(pickle::Error::Malformed { .. })
    ));
}

#[test]
fn message_conversions() {
    assert_eq!(Message::from(true), Message::Int(1));
    assert_eq!(Message::try_from(5u64).unwrap(), Message::Int(5));
    assert_eq!(Message::try_from(5usize).unwrap(), Message::Int(5));
    let e = Message::try_from(u64::MAX).unwrap_err();
    assert!(e.to_string().contains("18446744073709551615"), "{e}");
    assert_eq!(Message::from(7u32), Message::Int(7));
    assert_eq!(Message::from(0.5f32), Message::Float(0.5));

    // What v1 delivers (text), v2 delivers (typed) and pickles all convert.
    let pickled = |v: Value| Message::pickle(&v).unwrap();
    assert_eq!(
        u64::try_from(Message::from("18446744073709551615")).unwrap(),
        u64::MAX
    );
    assert_eq!(
        u64::try_from(pickled(Value::from(u64::MAX))).unwrap(),
        u64::MAX
    );
    assert!(u64::try_from(Message::from(-1)).is_err());
    assert!(u64::try_from(Message::from(1.5)).is_err());
    assert_eq!(
        u32::try_from(Message::from("4294967295")).unwrap(),
        u32::MAX
    );
    assert!(u32::try_from(Message::from("4294967296")).is_err());
    assert_eq!(usize::try_from(Message::from(12)).unwrap(), 12);
    assert!(bool::try_from(pickled(Value::Bool(true))).unwrap());
    assert!(!bool::try_from(Message::from(0)).unwrap());
    assert!(bool::try_from(Message::from("yes")).is_err());
    assert_eq!(f32::try_from(Message::from("0.25")).unwrap(), 0.25);
    assert_eq!(f32::try_from(pickled(Value::Float(1.5))).unwrap(), 1.5);
    assert_eq!(f64::try_from(pickled(Value::Int(3))).unwrap(), 3.0);
    assert_eq!(i64::try_from(pickled(Value::Int(-3))).unwrap(), -3);
    let v: Value = Message::from("x").try_into().unwrap();
    assert_eq!(v, Value::from("x"));
    // A pickle that is not a number is a clear error.
    let e = i64::try_from(pickled(Value::from("x"))).unwrap_err();
    assert!(e.to_string().contains("pickle"), "{e}");
    // A damaged pickle says so.
    let e = Message::Pickle(Bytes::from_static(b"\x80\x04K"))
        .to_value()
        .unwrap_err();
    assert!(
        matches!(e, serpy::Error::Pickle(pickle::Error::Truncated { .. })),
        "{e}"
    );
}

#[test]
fn views_of_received_bytes() {
    // Bytes with an aligned start: a view without a copy.
    let samples: Vec<f32> = vec![0.5, -1.0, 3.25, 1e-3];
    let raw: Vec<u8> = samples.iter().flat_map(|x| x.to_ne_bytes()).collect();
    let aligned = Bytes::from(bytemuck_free_aligned(&raw));
    let msg = Message::Bytes(aligned.clone());
    let view = msg.as_slice_of::<f32>().unwrap();
    assert_eq!(view, &samples[..]);
    assert_eq!(view.as_ptr() as *const u8, aligned.as_ptr(), "copied");
    // One byte further on, the same floats are misaligned: a clear error, and the copy works.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&raw);
    let b = Bytes::from(shifted).slice(1..);
    let msg = Message::Bytes(b);
    if (msg.as_bytes().unwrap().as_ptr() as usize) % 4 != 0 {
        let e = msg.as_slice_of::<f32>().unwrap_err();
        assert!(e.to_string().contains("aligned"), "{e}");
    }
    assert_eq!(msg.to_vec_of::<f32>(ByteOrder::NATIVE).unwrap(), samples);
    // Wrong lengths and kinds.
    assert!(Message::from(&[0u8; 5]).as_slice_of::<u32>().is_err());
    assert!(Message::from(&[0u8; 5])
        .to_vec_of::<u16>(ByteOrder::Big)
        .is_err());
    assert!(Message::from(1).as_slice_of::<u8>().is_err());
    assert_eq!(
        Message::from(&[1u8, 2]).as_slice_of::<u8>().unwrap(),
        &[1, 2]
    );
    assert_eq!(
        Message::from(&[0u8, 0, 0, 1, 0, 0, 0, 2])
            .to_vec_of::<i32>(ByteOrder::Big)
            .unwrap(),
        vec![1, 2]
    );
}

/// `raw` copied into memory that starts 8-aligned (a Vec<u64>'s buffer).
fn bytemuck_free_aligned(raw: &[u8]) -> Vec<u8> {
    let words: Vec<u64> = raw
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_ne_bytes(w)
        })
        .collect();
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    v.truncate(raw.len());
    v
}

#[test]
fn arrays_of_every_element_type() {
    fn check<T: pickle::Element + PartialEq + std::fmt::Debug>(items: &[T]) {
        let a = Array::from_slice(items, &[items.len()]).unwrap();
        let back: Array = pickle::decode(&pickle::encode(&Value::from(a.clone())).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(back, a);
        assert_eq!(back.to_vec::<T>().unwrap(), items);
    }
    check(&[1u8, 255]);
    check(&[-1i8, 127]);
    check(&[1u16, 65535]);
    check(&[-1i16, 300]);
    check(&[1u32, u32::MAX]);
    check(&[-1i32, i32::MIN]);
    check(&[1u64, u64::MAX]);
    check(&[-1i64, i64::MIN]);
    check(&[1.5f32, f32::MAX]);
    check(&[1.5f64, f64::MIN_POSITIVE]);
    // Complex arrays view as interleaved floats.
    let d: DType = "<c16".parse().unwrap();
    let data: Vec<u8> = [1.0f64, 2.0, -3.0, 0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let c = Array::new(d, vec![2], false, data.into()).unwrap();
    assert_eq!(c.to_vec::<f64>().unwrap(), vec![1.0, 2.0, -3.0, 0.5]);
    assert_eq!(Value::from(c).to_string(), "array([(1+2j), (-3+0.5j)])");
}

#[cfg(feature = "serde")]
#[test]
fn serde_bridge() {
    use std::collections::BTreeMap;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum State {
        Idle,
        Busy(u32),
    }
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Frame {
        id: u64,
        state: State,
        other: State,
        tags: BTreeMap<String, i32>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        pair: (f32, bool),
    }
    let f = Frame {
        id: u64::MAX,
        state: State::Idle,
        other: State::Busy(3),
        tags: [("a".to_string(), -1)].into(),
        raw: vec![0, 1, 2],
        pair: (0.5, true),
    };
    let m = Message::from_serialize(&f).unwrap();
    assert_eq!(m.deserialize::<Frame>().unwrap(), f);
    assert_eq!(
        m.to_value().unwrap().to_string(),
        "{'id': 18446744073709551615, 'state': 'Idle', 'other': {'Busy': 3}, 'tags': {'a': -1}, 'raw': b'\\x00\\x01\\x02', 'pair': (0.5, True)}"
    );
    assert_eq!(pickle::to_value(&f).unwrap(), m.to_value().unwrap());
    // v2 and v1 messages deserialize as their value.
    assert_eq!(Message::from(7).deserialize::<u8>().unwrap(), 7);
    assert_eq!(Message::from("hi").deserialize::<String>().unwrap(), "hi");
    // A mismatch is a typed error.
    let e = Message::from("hi").deserialize::<u8>().unwrap_err();
    assert!(
        matches!(e, serpy::Error::Pickle(pickle::Error::Serde(_))),
        "{e}"
    );
    // JSON of a value, as a command-line tool prints it.
    let v = Value::dict([
        ("a", Value::from(vec![Value::from(1), Value::None])),
        ("b", Value::from(u128::MAX)),
    ]);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"a":[1,null],"b":"340282366920938463463374607431768211455"}"#
    );
}
