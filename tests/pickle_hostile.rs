//! Pickles a hostile or broken peer could send: each gives a typed error at once, never a
//! panic, a stack overflow, a hang or an allocation beyond what arrived; nothing is run.

use serpy::pickle::{self, decode, DecodeOptions, Error, Value};
use serpy::Bytes;

fn repeat(prefix: &[u8], body: &[u8], n: usize, tail: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    for _ in 0..n {
        p.extend_from_slice(body);
    }
    p.extend_from_slice(tail);
    p
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let n = 200_000;
    // [[[[...]]]]: EMPTY_LIST n times, then APPEND n-1 times.
    let mut lists = repeat(b"\x80\x02", b"]", n, b"");
    lists.extend(std::iter::repeat(b'a').take(n - 1));
    lists.push(b'.');
    // ((((),),),): EMPTY_TUPLE, then TUPLE1 n times.
    let tuples = repeat(b"\x80\x02)", b"\x85", n, b".");
    // {0: {0: ...}}: n empty dicts, each set into the one before with key 0.
    let mut dicts = b"\x80\x02".to_vec();
    for _ in 0..n {
        dicts.extend_from_slice(b"}K\x00");
    }
    dicts.extend_from_slice(b"}");
    dicts.extend(std::iter::repeat(b's').take(n));
    dicts.push(b'.');
    for p in [lists, tuples, dicts] {
        assert_eq!(
            decode(&p).unwrap_err(),
            Error::TooDeep {
                max: pickle::DEFAULT_MAX_DEPTH
            }
        );
    }
    // Just within the limit is fine.
    let ok = repeat(b"\x80\x02)", b"\x85", pickle::DEFAULT_MAX_DEPTH - 1, b".");
    assert!(decode(&ok).is_ok());
}

#[test]
fn memo_expansion_is_bounded() {
    // l0 = [0]; l(k+1) = [lk, lk] for 64 levels: 2^64 values from 700 bytes.
    let mut p = b"\x80\x02]q\x00K\x00a".to_vec();
    for k in 0..64u8 {
        p.extend_from_slice(&[b']', b'q', k + 1, b'(', b'h', k, b'h', k, b'e']);
    }
    p.push(b'.');
    assert!(p.len() < 1000);
    assert!(matches!(decode(&p), Err(Error::TooManyValues { .. })));

    // set(L) repeated: each copy costs 4 bytes of input but len(L) values.
    let mut q = b"\x80\x02c__builtin__\nset\nq\x01]q\x00(".to_vec();
    q.extend(std::iter::repeat(b'N').take(10_000));
    q.extend_from_slice(b"e");
    for _ in 0..100_000 {
        q.extend_from_slice(b"h\x01h\x00\x85R0");
    }
    q.extend_from_slice(b"N.");
    assert!(matches!(decode(&q), Err(Error::TooManyValues { .. })));

    // Legitimate sharing beyond the default: inner = [1] * 1000; [inner] * 1000 is a
    // million values from 4 kB; raising the limit reads it.
    let mut shared = b"\x80\x02](]q\x00(".to_vec();
    shared.extend(std::iter::repeat(&b"K\x01"[..]).take(1000).flatten());
    shared.extend_from_slice(b"e");
    shared.extend(std::iter::repeat(&b"h\x00"[..]).take(999).flatten());
    shared.extend_from_slice(b"e.");
    let shared = Bytes::from(shared);
    let e = pickle::decode_bytes(&shared).unwrap_err();
    assert!(matches!(e, Error::TooManyValues { .. }), "{e}");
    assert!(e.to_string().contains("max_values"), "{e}");
    let big = pickle::decode_with(&shared, &DecodeOptions::new().max_values(3_000_000)).unwrap();
    assert_eq!(big.as_slice().map(|l| l.len()), Some(1000));

    // A small explicit limit.
    let opts = DecodeOptions::new().max_values(10);
    let list = Bytes::from(repeat(b"\x80\x02](", b"K\x01", 20, b"e."));
    assert!(matches!(
        pickle::decode_with(&list, &opts),
        Err(Error::TooManyValues { max: 10 })
    ));
}

#[test]
fn claimed_lengths_beyond_the_input_are_refused_before_allocating() {
    let cases: [&[u8]; 8] = [
        b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7fabc", // BINBYTES8 of 2^63
        b"\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\xffabc", // BYTEARRAY8 of 2^64-1
        b"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x01abc", // BINUNICODE8
        b"\x80\x03B\xff\xff\xff\xffabc",                    // BINBYTES
        b"\x80\x03X\xff\xff\xff\x7fabc",                    // BINUNICODE
        b"\x80\x02\x8b\xff\xff\xff\x7fabc",                 // LONG4
        b"\x80\x02T\xff\xff\xff\x7fabc",                    // BINSTRING
        b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xffK\x01.", // FRAME (ignored)
    ];
    for (i, p) in cases.iter().enumerate() {
        let r = decode(p);
        if i == 7 {
            assert_eq!(r.unwrap(), Value::Int(1));
        } else {
            assert!(matches!(r, Err(Error::Truncated { .. })), "case {i}: {r:?}");
        }
    }
    assert!(matches!(
        decode(b"\x80\x02\x8b\xff\xff\xff\xffabc"),
        Err(Error::Malformed { .. })
    ));
    // An array whose shape claims more than its data.
    let p = b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93(C\x04abcd\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02u1\x89\x88\x87R(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbJ\x00\xca\x9a;\x85\x8c\x01Ct\x94R.";
    assert!(
        matches!(decode(p), Err(Error::Malformed { .. })),
        "{:?}",
        decode(p)
    );
}

#[test]
fn no_global_outside_the_allow_list_is_ever_used() {
    let cases: [(&[u8], &str, &str); 7] = [
        (b"cos\nsystem\n(S'echo hi'\ntR.", "os", "system"),
        (
            b"cposix\nsystem\nq\x00X\x02\x00\x00\x00hi\x85R.",
            "posix",
            "system",
        ),
        (
            b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.",
            "builtins",
            "eval",
        ),
        (b"c__builtin__\ngetattr\n.", "__builtin__", "getattr"),
        (
            b"ccopy_reg\n_reconstructor\n.",
            "copy_reg",
            "_reconstructor",
        ),
        (b"\x80\x03csubprocess\nPopen\n.", "subprocess", "Popen"),
        (b"(ios\nsystem\nS'echo hi'\n.", "os", "system"), // INST
    ];
    for (p, module, name) in cases {
        match decode(p) {
            Err(Error::UnknownGlobal {
                module: m, name: n, ..
            }) => {
                assert_eq!((m.as_str(), n.as_str()), (module, name));
            }
            other => panic!("{module}.{name}: {other:?}"),
        }
    }
    let e = decode(b"cos\nsystem\n.").unwrap_err();
    assert!(e.to_string().contains("os.system"), "{e}");
    // An allowed global that is not called is not data.
    assert!(matches!(
        decode(b"c__builtin__\nset\n."),
        Err(Error::Unsupported { .. })
    ));
    // Objects, persistent ids and extension codes.
    for p in [
        &b"\x80\x02c__builtin__\nset\n)\x81."[..],
        b"P1\n.",
        b"\x80\x02\x82\x01.",
    ] {
        assert!(matches!(decode(p), Err(Error::Unsupported { .. })), "{p:?}");
    }
}

#[test]
fn self_references_are_refused() {
    // a = []; a.append(a); pickle.dumps(a, 2)
    assert!(matches!(
        decode(b"\x80\x02]q\x00h\x00a."),
        Err(Error::Recursive { .. })
    ));
    // d = {}; d['d'] = d; pickle.dumps(d, 4)
    let p = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01d\x94h\x00s.";
    assert!(matches!(decode(p), Err(Error::Recursive { .. })));
    // Shared (not recursive) references are fine: a = [1]; [a, a]
    assert_eq!(
        decode(b"\x80\x02]q\x00(]q\x01K\x01ah\x01e.")
            .unwrap()
            .to_string(),
        "[[1], [1]]"
    );
}

#[test]
fn other_breakage_gives_typed_errors() {
    assert!(matches!(decode(b""), Err(Error::Truncated { .. })));
    assert!(matches!(
        decode(b"\x80\x04K\x01"),
        Err(Error::Truncated { .. })
    )); // no STOP
    assert!(matches!(
        decode(b"\x80\x06K\x01."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        decode(b"\xffK\x01."),
        Err(Error::UnknownOpcode {
            opcode: 0xff,
            at: 0
        })
    ));
    assert!(matches!(decode(b"."), Err(Error::Malformed { .. }))); // empty stack
    assert!(matches!(decode(b"(."), Err(Error::Malformed { .. }))); // only a mark
    assert!(matches!(decode(b"K\x01(a."), Err(Error::Malformed { .. }))); // APPEND across a mark
    assert!(matches!(decode(b"h\x05."), Err(Error::Malformed { .. }))); // memo not written
    assert!(matches!(
        decode(b"\x80\x03X\x01\x00\x00\x00\xff."),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(decode(b"L1234x\n."), Err(Error::Malformed { .. })));
    let long = format!("L{}\n.", "9".repeat(5000));
    assert!(matches!(
        decode(long.as_bytes()),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        decode(b"\x80\x05\x97."),
        Err(Error::Unsupported { .. })
    )); // NEXT_BUFFER
        // Bytes after STOP are ignored, as Python's pickle.loads does.
    assert_eq!(decode(b"K\x07.garbage").unwrap(), Value::Int(7));
}

#[test]
fn every_prefix_and_many_mutations_of_real_pickles_are_handled() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/numpy_pickles.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let mut seen = 0;
    for c in cases.iter().filter(|c| {
        let n = c["name"].as_str().unwrap();
        n.starts_with(">u2_2d") || n == "np_float64" || n == "f8_0d"
    }) {
        let h = c["pickle"].as_str().unwrap();
        let p: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        let whole = decode(&p).unwrap();
        for n in 0..p.len() {
            // Every proper prefix is an error (a prefix cut after STOP cannot exist).
            assert!(decode(&p[..n]).is_err(), "prefix {n} of {}", c["name"]);
        }
        for i in 0..p.len() {
            for x in [0x00u8, 0x01, 0x7f, 0x80, 0xff, b'(', b'.', b'h'] {
                let mut q = p.clone();
                q[i] = x;
                let _ = decode(&q); // must not panic
            }
        }
        assert!(!whole.type_name().is_empty());
        seen += 1;
    }
    assert!(seen >= 12);
}
