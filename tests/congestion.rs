//! The builders' `congestion_control` option: a name the kernel has is used on both ends
//! of a link and messages flow; a name it does not have fails `connect` and `bind` at
//! once with a typed error that says what to do (on systems without the option, with
//! `Error::Unsupported`).

mod common;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
use common::T;
use serpy::{Connection, Error, Server};
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
use serpy::{Mode, Protocol};

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
#[test]
fn a_link_with_reno_on_both_ends_carries_messages_both_ways() {
    // `reno` is built into every Linux kernel and always allowed.
    let server = Server::builder()
        .protocol(Protocol::V2)
        .congestion_control("reno")
        .bind("127.0.0.1:0")
        .unwrap();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .congestion_control("reno")
        .connect(server.local_addr())
        .unwrap();
    let peer = server.get_connection_timeout(T).unwrap();
    for i in 0..100u32 {
        client.send_data(vec![i as u8; 4096], Mode::Plain).unwrap();
    }
    for i in 0..100u32 {
        let m = peer.get_data_timeout(T).unwrap();
        assert_eq!(m.as_bytes().unwrap(), &vec![i as u8; 4096][..]);
    }
    peer.send("back").unwrap();
    assert_eq!(client.get_data_timeout(T).unwrap().as_str(), Some("back"));
    client.close();
    server.close();
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
#[test]
fn an_unknown_congestion_control_fails_bind_and_connect_with_what_to_do() {
    let name = "no-such-algorithm";
    match Server::builder()
        .congestion_control(name)
        .bind("127.0.0.1:0")
    {
        Err(e @ Error::CongestionControl { .. }) => {
            let text = e.to_string();
            assert!(text.contains(name), "{text}");
            assert!(text.contains("congestion_control"), "{text}");
        }
        other => panic!("expected CongestionControl, got {:?}", other.map(|_| ())),
    }
    let server = Server::bind("127.0.0.1:0").unwrap();
    for background in [false, true] {
        let r = Connection::builder()
            .congestion_control(name)
            .connect_in_background(background)
            .connect(server.local_addr());
        assert!(
            matches!(&r, Err(Error::CongestionControl { name: n, .. }) if n == name),
            "background {background}: {:?}",
            r.map(|_| ())
        );
    }
    server.close();
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
#[test]
fn congestion_control_is_refused_where_the_system_has_no_choice_of_it() {
    let r = Server::builder()
        .congestion_control("reno")
        .bind("127.0.0.1:0");
    assert!(matches!(r, Err(Error::Unsupported { .. })));
    let server = Server::bind("127.0.0.1:0").unwrap();
    let r = Connection::builder()
        .congestion_control("reno")
        .connect(server.local_addr());
    assert!(matches!(r, Err(Error::Unsupported { .. })));
    server.close();
}
