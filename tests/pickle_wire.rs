//! Pickles through a real connection (v1 modes 4 and 5, both directions): values and serde
//! types sent by this crate, and pickles made by Python and numpy, arrive and decode.

mod common;

use common::{pair, server, T};
use serde_json::Value as Json;
use serpy::pickle::{Array, Value};
use serpy::{ConnectionBuilder, Message, Mode, ServerBuilder};

fn python_pickles(file: &str, names: &[&str]) -> Vec<(String, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| names.contains(&c["name"].as_str().unwrap()))
        .map(|c| {
            let h = c["pickle"].as_str().unwrap();
            let b = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            (
                format!("{} p{}", c["name"].as_str().unwrap(), c["protocol"]),
                b,
            )
        })
        .collect()
}

fn sample_values() -> Vec<Value> {
    vec![
        Value::dict([("exposure", Value::from(10)), ("gain", Value::from(2.5))]),
        Value::from(vec![
            Value::None,
            Value::Bool(true),
            Value::from(u64::MAX),
            Value::from("µ"),
        ]),
        Value::Tuple(vec![Value::Set(vec![1.into()]), Value::FrozenSet(vec![])]),
        Value::ByteArray(serpy::Bytes::from_static(b"\x00\x1f\x04\x01")),
        Value::from(Array::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.5], &[2, 3]).unwrap()),
        Value::from(Array::from_slice(&(0..1000u16).collect::<Vec<_>>(), &[10, 100]).unwrap()),
    ]
}

#[test]
fn values_travel_in_modes_4_and_5_both_ways() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    for (from, to) in [(&client, &peer), (&peer, &client)] {
        for mode in [Mode::Pickle, Mode::PickleAck] {
            for v in sample_values() {
                from.send_data(Message::pickle(&v).unwrap(), mode).unwrap();
                let (got, got_mode) = to.get_data_with_mode(Some(T)).unwrap();
                assert_eq!(got_mode, Some(mode));
                assert_eq!(got.to_value().unwrap(), v, "mode {mode}");
            }
            // Plain messages in a pickle mode arrive as pickles of the native object.
            from.send_data(12345, mode).unwrap();
            let got = to.get_data_timeout(T).unwrap();
            assert_eq!(got.to_value().unwrap(), Value::Int(12345));
            assert_eq!(i64::try_from(got.clone()).unwrap(), 12345);
            assert_eq!(u32::try_from(got).unwrap(), 12345);
        }
    }
}

#[test]
fn python_pickles_travel_and_decode() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    let mut cases = python_pickles(
        "pickles.json",
        &["dict_settings", "everything", "int_big", "bytes_all"],
    );
    cases.extend(python_pickles(
        "numpy_pickles.json",
        &["u2_image", "<f8_2d_F", ">i4_2d_C", "np_float64"],
    ));
    assert_eq!(cases.len(), 8 * 6);
    for (i, (name, p)) in cases.iter().enumerate() {
        let mode = if i % 2 == 0 {
            Mode::Pickle
        } else {
            Mode::PickleAck
        };
        let want = serpy::pickle::decode(p).unwrap();
        client
            .send_data(Message::Pickle(serpy::Bytes::from(p.clone())), mode)
            .unwrap();
        let got = peer.get_data_timeout(T).unwrap();
        assert_eq!(got.as_bytes(), Some(&p[..]), "{name}");
        assert_eq!(
            got.to_value().unwrap().to_string(),
            want.to_string(),
            "{name}"
        );
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_types_travel() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Settings {
        exposure: u32,
        gain: f64,
        name: String,
        roi: Vec<u16>,
        mode: Option<String>,
    }
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    let sent = Settings {
        exposure: 10,
        gain: 2.5,
        name: "cam 1".into(),
        roi: vec![0, 0, 640, 480],
        mode: None,
    };
    for mode in [Mode::Pickle, Mode::PickleAck] {
        client
            .send_data(Message::from_serialize(&sent).unwrap(), mode)
            .unwrap();
        let got = peer.get_data_timeout(T).unwrap();
        assert_eq!(got.deserialize::<Settings>().unwrap(), sent);
        assert_eq!(
            got.to_value().unwrap().get("name").and_then(Value::as_str),
            Some("cam 1")
        );
    }
    // A numpy array deserializes as its tolist().
    let a = Value::from(Array::from_slice(&[1u8, 2, 3, 4], &[2, 2]).unwrap());
    peer.send_data(Message::pickle(&a).unwrap(), Mode::PickleAck)
        .unwrap();
    let got = client.get_data_timeout(T).unwrap();
    assert_eq!(
        got.deserialize::<Vec<Vec<u8>>>().unwrap(),
        vec![vec![1, 2], vec![3, 4]]
    );
}
