//! The crate's promise under network faults: a proxy between client and server splits the
//! stream into 1-byte and random pieces, holds pieces back, and cuts or resets links in
//! either direction, wherever that falls in a frame. The client has auto-restart; the
//! server echoes every message back.
//!
//! Every message carries a sequence number and a filler derived from it. The checks:
//! - on each link the server receives consecutive sequence numbers (nothing is lost from the
//!   middle of a link: a gap can only fall where a link died), and across links they only
//!   grow (each message at most once, in order); every payload is intact;
//! - an acknowledged send (modes 1, 3, 5) either returned `Ok` and its message arrived, or
//!   returned [`Error::AckUncertain`]: never a hang, never another error;
//! - the echoes reach the client in order, at most once, intact;
//! - messages lost are only those at the end of a link that died (handed to the dying
//!   socket); the counts are printed (`cargo test --test faults -- --nocapture`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Chunks, Cut, Delay, Dir, Faults, Proxy, Rng};
use common::T;
use serpy::{Bytes, Connection, Error, Message, Mode, Protocol, ServerBuilder};

/// What is sent, and how.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// v1 in one mode: text in modes 0, 1, 4, 5 (a pickle of the text in 4 and 5), any
    /// bytes in modes 2 and 3.
    V1(Mode),
    /// v2: ints, text and bytes in turn.
    V2,
    /// v2 with frames of about 100 KB, so that cuts fall inside large payloads.
    V2Large,
    /// v1 bytes of 20-40 KB in mode 2 or 3, whose base85 blocks the writer encodes just
    /// before it writes them: cuts fall inside blocks, which go out again re-encoded.
    V1Large(Mode),
}

impl Kind {
    fn protocol(self) -> Protocol {
        match self {
            Kind::V1(_) | Kind::V1Large(_) => Protocol::V1,
            Kind::V2 | Kind::V2Large => Protocol::V2,
        }
    }

    fn mode(self) -> Mode {
        match self {
            Kind::V1(m) | Kind::V1Large(m) => m,
            _ => Mode::Plain,
        }
    }

    /// How many messages a run sends.
    fn count(self) -> u64 {
        match self {
            Kind::V2Large | Kind::V1Large(_) => 60,
            _ => 300,
        }
    }

    /// The time between two sends. Unacknowledged sends return at once: without a pace
    /// the whole run would be handed to the first link's socket in one write, and the
    /// later faults would find nothing to break. An instrument sends at some rate too.
    fn pace(self) -> Duration {
        match self {
            Kind::V2Large | Kind::V1Large(_) => Duration::from_millis(4),
            _ => Duration::from_millis(1),
        }
    }

    /// Scales where the cuts fall (about the bytes of one message on the wire).
    fn wire_size(self) -> usize {
        match self {
            // Smaller than a frame, so that every cut of the schedule is reached.
            Kind::V2Large | Kind::V1Large(_) => 25_000,
            _ => 50,
        }
    }
}

fn filler_len(kind: Kind, seq: u64) -> usize {
    match kind {
        Kind::V2Large => 90_000 + (seq as usize * 7919) % 20_000,
        Kind::V1Large(_) => 20_000 + (seq as usize * 7919) % 20_000,
        _ => (seq as usize * 13) % 61,
    }
}

/// Letters only: text that travels raw in modes 0 and 1.
fn text_of(kind: Kind, seq: u64) -> String {
    let mut s = format!("{seq:08}:");
    s.extend(
        (0..filler_len(kind, seq)).map(|i| (b'a' + ((seq as usize + i * 7) % 26) as u8) as char),
    );
    s
}

/// Any bytes, the v2 magic and the v1 separators among them.
fn bytes_of(kind: Kind, seq: u64) -> Vec<u8> {
    let mut v = format!("{seq:08}:").into_bytes();
    if seq % 5 == 0 {
        v.extend_from_slice(&[0xDE, 0xCA, 0xFE, 0xCA, 0xFE, 0x1F, 0x04, 0x01]);
    }
    v.extend(
        (0..filler_len(kind, seq))
            .map(|i| (seq as u8).wrapping_mul(31).wrapping_add((i * 17) as u8)),
    );
    v
}

fn message_of(kind: Kind, seq: u64) -> Message {
    match kind {
        Kind::V1(m) if m.is_base85() && !m.is_pickle() => bytes_of(kind, seq).into(),
        Kind::V1(_) => text_of(kind, seq).into(),
        Kind::V2 => match seq % 3 {
            0 => Message::Int(seq as i64),
            1 => text_of(kind, seq).into(),
            _ => bytes_of(kind, seq).into(),
        },
        Kind::V2Large | Kind::V1Large(_) => bytes_of(kind, seq).into(),
    }
}

/// The sequence number of a message as it arrived; panics if it is not intact.
fn seq_of(kind: Kind, got: &Message) -> u64 {
    let seq_in = |b: &[u8]| -> u64 {
        let head = std::str::from_utf8(&b[..b.len().min(8)]).unwrap_or("");
        head.parse()
            .unwrap_or_else(|_| panic!("{kind:?}: corrupt message {:?}", &b[..b.len().min(40)]))
    };
    let bytes = match got {
        Message::Int(i) => return *i as u64,
        Message::Text(t) => {
            let seq = seq_in(t.as_bytes());
            assert_eq!(t.as_str(), text_of(kind, seq), "{kind:?}: corrupt text");
            return seq;
        }
        Message::Bytes(b) => b.clone(),
        Message::Pickle(p) => {
            // Protocol 3: 80 03 'X' <u32 length> <utf-8> '.'
            assert!(
                p.len() >= 8 && p.starts_with(b"\x80\x03X") && p.ends_with(b"."),
                "{kind:?}: corrupt pickle {p:?}"
            );
            let text = &p[7..p.len() - 1];
            assert_eq!(
                u32::from_le_bytes(p[3..7].try_into().unwrap()) as usize,
                text.len()
            );
            let seq = seq_in(text);
            assert_eq!(
                text,
                text_of(kind, seq).as_bytes(),
                "{kind:?}: corrupt pickle"
            );
            return seq;
        }
        other => panic!("{kind:?}: unexpected {other:?}"),
    };
    let seq = seq_in(&bytes);
    let want: Bytes = match message_of(kind, seq) {
        Message::Text(t) => t.into_bytes(),
        m => m.into_bytes(),
    };
    assert_eq!(
        &bytes[..],
        &want[..],
        "{kind:?}: corrupt bytes of message {seq}"
    );
    seq
}

/// Links 0 to 5 of a run are faulty, each cut once its bytes reach its cut; the
/// links after them are clean.
const FAULTY_LINKS: usize = 6;

/// Of the faulty links, at least this many are cut by the proxy. A link may also end
/// before its cut, closed from the client's side: a v2 writer told that the peer's data
/// ended writes what is queued first, and when one of those writes fails and the link
/// is brought back at once, it then takes the new link down as well (seen under load
/// on the link after one cut with a FIN; `Writer::peer_done`).
const MIN_CUTS: usize = 4;

/// Most end markers a run sends: enough to carry every faulty link to its end (about
/// 6 MB toward the server for `V2Large`, the losses in dying sockets included).
const MAX_END_MARKERS: u64 = 2000;

/// The faults of link `i`: [`FAULTY_LINKS`] faulty links, then clean ones.
fn schedule(kind: Kind, seed: u64, i: usize) -> Faults {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
    let scale = kind.wire_size();
    let cut = |rng: &mut Rng, dir, most: usize, reset| {
        Some(Cut {
            dir,
            after: rng.range(1, most * scale / 50),
            reset,
        })
    };
    let ms = Duration::from_millis;
    let faults = match i {
        // Byte by byte, then a FIN toward the server mid-stream.
        0 => Faults {
            chunks: Chunks::OneByte,
            delay: None,
            cut: cut(&mut rng, Dir::ToServer, 1500, false),
        },
        // Tiny pieces, some held back; the way back is reset.
        1 => Faults {
            chunks: Chunks::Random { max: 7 },
            delay: Some(Delay {
                one_in: 20,
                max: ms(3),
            }),
            cut: cut(&mut rng, Dir::ToClient, 600, true),
        },
        // Larger pieces; reset toward the server.
        2 => Faults {
            chunks: Chunks::Random { max: 2000 },
            delay: None,
            cut: cut(&mut rng, Dir::ToServer, 3000, true),
        },
        // Whole reads, often held back; FIN on the way back.
        3 => Faults {
            chunks: Chunks::Whole,
            delay: Some(Delay {
                one_in: 5,
                max: ms(2),
            }),
            cut: cut(&mut rng, Dir::ToClient, 600, false),
        },
        // Reset within the first frame or two.
        4 => Faults {
            chunks: Chunks::OneByte,
            delay: None,
            cut: Some(Cut {
                dir: Dir::ToServer,
                after: rng.range(0, 20),
                reset: true,
            }),
        },
        5 => {
            let reset = rng.next_u64() % 2 == 0;
            Faults {
                chunks: Chunks::Random { max: 3 },
                delay: Some(Delay {
                    one_in: 50,
                    max: ms(2),
                }),
                cut: cut(&mut rng, Dir::ToServer, 3000, reset),
            }
        }
        _ => Faults {
            chunks: Chunks::Random { max: 64 },
            delay: None,
            cut: None,
        },
    };
    if matches!(kind, Kind::V2Large | Kind::V1Large(_)) {
        // Frames of 100 KB (blocks of 25-50 KB): coarser pieces and rarer holds, or a run would take minutes.
        Faults {
            chunks: match faults.chunks {
                Chunks::OneByte => Chunks::Random { max: 512 },
                Chunks::Random { max } => Chunks::Random { max: max * 64 },
                Chunks::Whole => Chunks::Whole,
            },
            delay: faults.delay.map(|d| Delay {
                one_in: d.one_in * 50,
                ..d
            }),
            ..faults
        }
    } else {
        faults
    }
}

/// What a run measured.
#[derive(Debug, Default)]
#[allow(dead_code)] // some fields are only read through Debug, for the printed report
struct Report {
    sent: u64,
    acked_ok: u64,
    ack_uncertain: u64,
    uncertain_arrived: u64,
    received: u64,
    lost: u64,
    echoes_sent: u64,
    echoes_received: u64,
    links: usize,
    cuts: usize,
    delays: usize,
    millis: u128,
}

fn run(kind: Kind, seed: u64, auto_server: bool) -> Report {
    let started = Instant::now();
    let n = kind.count();
    let protocol = kind.protocol();
    let mode = kind.mode();
    let echo_mode = mode.with_ack(false);
    let server = common::server(ServerBuilder::new().protocol(if auto_server {
        Protocol::Auto
    } else {
        protocol
    }));
    let proxy = Proxy::start(server.local_addr(), seed, move |i| schedule(kind, seed, i));
    let client = Connection::builder()
        .protocol(protocol)
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20))
        .connect(proxy.addr())
        .expect("connect through the proxy");

    // The client reads the echoes until it is closed.
    let echo_reader = thread::spawn({
        let c = client.clone();
        move || {
            let mut seqs = Vec::new();
            while let Ok(m) = c.get_data() {
                seqs.push(seq_of(kind, &m));
            }
            seqs
        }
    });
    // The client sends 0..n, then end markers (n, n+1, ...) until the server has seen
    // one on a clean link, after every faulty link has ended. How many messages a link
    // carries before its cut depends on timing (a dying socket swallows what was handed
    // to it, and a loaded machine hands more); so the markers keep the traffic going,
    // both ways (the server echoes them), until the proxy has opened the first clean
    // link: every faulty link has then met its fault, whatever the timing.
    let (seen_end_tx, seen_end_rx) = crossbeam_channel::bounded::<()>(1);
    let sender = thread::spawn({
        let c = client.clone();
        move || {
            let (mut ok, mut uncertain) = (Vec::new(), Vec::new());
            let pace = crossbeam_channel::tick(kind.pace());
            for seq in 0..n {
                if !mode.is_acked() {
                    let _ = pace.recv();
                }
                match c.send_data_timeout(message_of(kind, seq), mode, T) {
                    Ok(()) => ok.push(seq),
                    Err(Error::AckUncertain) if mode.is_acked() => uncertain.push(seq),
                    Err(e) => panic!("{kind:?}: send {seq}: {e}"),
                }
            }
            let mut seq = n;
            while seen_end_rx.try_recv().is_err() {
                assert!(
                    seq < n + MAX_END_MARKERS,
                    "{kind:?}: {MAX_END_MARKERS} end markers sent, and the run has not ended"
                );
                if !mode.is_acked() {
                    let _ = pace.recv();
                }
                match c.send_data_timeout(message_of(kind, seq), mode, T) {
                    Ok(()) | Err(Error::AckUncertain) => {}
                    Err(e) => panic!("{kind:?}: send end marker {seq}: {e}"),
                }
                seq += 1;
            }
            (ok, uncertain)
        }
    });

    // The server: record what arrives on which link, echo it back.
    let mut by_link: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut echoes_sent = 0;
    loop {
        let r = server
            .recv_any_timeout(T)
            .unwrap_or_else(|e| panic!("{kind:?}: server: {e}; proxy: {:?}", proxy.stats()));
        let seq = seq_of(kind, &r.message);
        by_link.entry(r.connection.id()).or_default().push(seq);
        if seq >= n && proxy.stats().links.load(Ordering::Relaxed) > FAULTY_LINKS {
            let _ = seen_end_tx.try_send(());
            break;
        }
        if r.connection
            .send_data_timeout(r.message, echo_mode, T)
            .is_ok()
        {
            echoes_sent += 1;
        }
    }
    let (ok, uncertain) = sender.join().expect("sender");
    client.close();
    let echoes = echo_reader.join().expect("echo reader");
    let stats = (
        proxy.stats().links.load(Ordering::Relaxed),
        proxy.stats().cuts.load(Ordering::Relaxed),
        proxy.stats().delays.load(Ordering::Relaxed),
    );
    // Every link is down now: read what the server still holds of each.
    drop(proxy);
    for c in server.connections() {
        loop {
            match c.get_data_timeout(T) {
                Ok(m) => by_link.entry(c.id()).or_default().push(seq_of(kind, &m)),
                Err(Error::Disconnected) => break,
                Err(e) => panic!("{kind:?}: draining link {}: {e}", c.id()),
            }
        }
    }

    // On each link consecutive numbers; across links, growing numbers.
    let mut last: Option<u64> = None;
    for (link, seqs) in &by_link {
        for w in seqs.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "{kind:?}: link {link} skipped or repeated: {seqs:?}"
            );
        }
        if let (Some(l), Some(&first)) = (last, seqs.first()) {
            assert!(
                first > l,
                "{kind:?}: link {link} starts at {first} after {l}: duplicate or reordered"
            );
        }
        last = seqs.last().copied().or(last);
    }
    let arrived: BTreeSet<u64> = by_link
        .values()
        .flatten()
        .copied()
        .filter(|&s| s < n)
        .collect();
    for seq in &ok {
        if mode.is_acked() {
            assert!(
                arrived.contains(seq),
                "{kind:?}: acknowledged message {seq} never arrived"
            );
        }
    }
    for w in echoes.windows(2) {
        assert!(
            w[1] > w[0],
            "{kind:?}: echoes out of order or repeated: {} then {}",
            w[0],
            w[1]
        );
    }
    let report = Report {
        sent: n,
        acked_ok: if mode.is_acked() { ok.len() as u64 } else { 0 },
        ack_uncertain: uncertain.len() as u64,
        uncertain_arrived: uncertain.iter().filter(|s| arrived.contains(s)).count() as u64,
        received: arrived.len() as u64,
        lost: n - arrived.len() as u64,
        echoes_sent,
        echoes_received: echoes.iter().filter(|&&s| s < n).count() as u64,
        links: stats.0,
        cuts: stats.1,
        delays: stats.2,
        millis: started.elapsed().as_millis(),
    };
    eprintln!("faults {kind:?} seed {seed} auto server {auto_server}: {report:?}");
    assert!(
        (MIN_CUTS..=FAULTY_LINKS).contains(&report.cuts),
        "{kind:?}: {} cuts of {FAULTY_LINKS} faulty links",
        report.cuts
    );
    assert!(report.links > FAULTY_LINKS, "{kind:?}: {report:?}");
    report
}

/// A few seeds per kind, so that cuts fall in different places.
fn runs(kind: Kind) {
    let reports: Vec<Report> = (1..=3).map(|seed| run(kind, seed, false)).collect();
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    eprintln!(
        "faults {kind:?} total: {} sent, {} lost ({} with AckUncertain, {} of those arrived all the same), {} cuts",
        sum(|r| r.sent),
        sum(|r| r.lost),
        sum(|r| r.ack_uncertain),
        sum(|r| r.uncertain_arrived),
        sum(|r| r.cuts as u64),
    );
}

#[test]
fn v1_mode0_under_faults() {
    runs(Kind::V1(Mode::Plain));
}

#[test]
fn v1_mode1_under_faults() {
    runs(Kind::V1(Mode::PlainAck));
}

#[test]
fn v1_mode2_under_faults() {
    runs(Kind::V1(Mode::Base85));
}

#[test]
fn v1_mode3_under_faults() {
    runs(Kind::V1(Mode::Base85Ack));
}

#[test]
fn v1_mode4_under_faults() {
    runs(Kind::V1(Mode::Pickle));
}

#[test]
fn v1_mode5_under_faults() {
    runs(Kind::V1(Mode::PickleAck));
}

#[test]
fn v1_mode2_large_blocks_under_faults() {
    runs(Kind::V1Large(Mode::Base85));
}

#[test]
fn v1_mode3_large_blocks_under_faults() {
    runs(Kind::V1Large(Mode::Base85Ack));
}

#[test]
fn v2_under_faults() {
    runs(Kind::V2);
}

#[test]
fn v2_large_frames_under_faults() {
    runs(Kind::V2Large);
}

/// The same through a server in auto mode, which tells each new link's protocol from
/// its first bytes (and holds what it sends until then).
#[test]
fn auto_server_under_faults() {
    run(Kind::V1(Mode::Base85Ack), 4, true);
    run(Kind::V1(Mode::Plain), 5, true);
    run(Kind::V2, 6, true);
}

/// Most messages `repeated_resets_from_outside` sends (one a millisecond).
const MAX_RESET_SENDS: u64 = 100_000;

/// A link cut from outside while both directions are busy, again and again.
#[test]
fn repeated_resets_from_outside() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let server = common::server(ServerBuilder::new().protocol(protocol));
        let proxy = Proxy::start(server.local_addr(), 7, |_| Faults {
            chunks: Chunks::Random { max: 300 },
            ..Faults::clean()
        });
        let client = Connection::builder()
            .protocol(protocol)
            .auto_restart(true)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20))
            .connect(proxy.addr())
            .unwrap();
        let kind = if protocol == Protocol::V1 {
            Kind::V1(Mode::Base85)
        } else {
            Kind::V2
        };
        // The client sends all along (paced, as an instrument does), so that each cut
        // finds the link busy, however the threads are scheduled.
        let sent = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let sender = thread::spawn({
            let (client, sent) = (client.clone(), sent.clone());
            move || {
                let pace = crossbeam_channel::tick(Duration::from_millis(1));
                for seq in 0..MAX_RESET_SENDS {
                    crossbeam_channel::select! {
                        recv(stop_rx) -> _ => return,
                        recv(pace) -> _ => {}
                    }
                    if client
                        .send_data(message_of(kind, seq), Mode::Base85)
                        .is_err()
                    {
                        return;
                    }
                    sent.store(seq + 1, Ordering::Release);
                }
            }
        });
        let mut by_link: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for round in 0..5 {
            // Wait until a message sent after the last cut arrived (the link is back),
            // then cut mid-stream.
            let since = sent.load(Ordering::Acquire);
            loop {
                let r = server.recv_any_timeout(T).unwrap_or_else(|e| {
                    panic!("{protocol}: round {round}: nothing sent since message {since} arrived: {e}")
                });
                let seq = seq_of(kind, &r.message);
                by_link.entry(r.connection.id()).or_default().push(seq);
                if seq >= since {
                    break;
                }
            }
            proxy.cut_all(round % 2 == 0);
        }
        drop(stop_tx);
        sender.join().unwrap();
        client.close();
        drop(proxy);
        for c in server.connections() {
            while let Ok(m) = c.get_data_timeout(T) {
                by_link.entry(c.id()).or_default().push(seq_of(kind, &m));
            }
        }
        let mut last = None;
        for seqs in by_link.values() {
            for w in seqs.windows(2) {
                assert_eq!(w[1], w[0] + 1, "{protocol}: {seqs:?}");
            }
            assert!(last < seqs.first().copied());
            last = seqs.last().copied();
        }
    }
}

/// Several threads send acknowledged messages at once through the faults: each `Ok` is
/// for a message that arrived, and each thread's messages arrive in its order, once.
#[test]
fn concurrent_acknowledged_senders_under_faults() {
    const THREADS: u64 = 3;
    const PER: u64 = 100;
    const END: u64 = 1_000_000;
    let kind = Kind::V1(Mode::PlainAck);
    let server = common::server(ServerBuilder::new());
    let proxy = Proxy::start(server.local_addr(), 11, move |i| schedule(kind, 11, i));
    let client = Connection::builder()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20))
        .connect(proxy.addr())
        .unwrap();
    let (mut got, ok) = thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let mut got: Vec<(u64, u64)> = Vec::new();
            loop {
                let r = server.recv_any_timeout(T).expect("a message");
                let seq = seq_of(kind, &r.message);
                got.push((r.connection.id(), seq));
                if seq >= END {
                    return got;
                }
            }
        });
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let c = client.clone();
                scope.spawn(move || {
                    let mut ok = Vec::new();
                    for i in 0..PER {
                        let seq = t * 10_000 + i;
                        let mode = if i % 2 == 0 {
                            Mode::PlainAck
                        } else {
                            Mode::Base85Ack
                        };
                        match c.send_data_timeout(message_of(kind, seq), mode, T) {
                            Ok(()) => ok.push(seq),
                            Err(Error::AckUncertain) => {}
                            Err(e) => panic!("thread {t}: {e}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: Vec<u64> = senders
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // An acknowledged end marker: once one is acknowledged, it arrived.
        let mut end = END;
        while client
            .send_data_timeout(message_of(kind, end), Mode::PlainAck, T)
            .is_err()
        {
            end += 1;
            assert!(end < END + 50);
        }
        (receiver.join().unwrap(), ok)
    });
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    client.close();
    drop(proxy);
    for c in server.connections() {
        while let Ok(m) = c.get_data_timeout(T) {
            got.push((c.id(), seq_of(kind, &m)));
        }
    }
    got.sort_by_key(|&(link, _)| link); // stable: keeps the arrival order on each link
    let arrived: Vec<u64> = got.iter().map(|&(_, s)| s).filter(|&s| s < END).collect();
    for t in 0..THREADS {
        let mine: Vec<u64> = arrived
            .iter()
            .copied()
            .filter(|s| s / 10_000 == t)
            .collect();
        for w in mine.windows(2) {
            assert!(w[1] > w[0], "thread {t}: {} arrived after {}", w[1], w[0]);
        }
    }
    for seq in &ok {
        assert!(arrived.contains(seq), "acknowledged {seq} never arrived");
    }
    eprintln!(
        "concurrent acknowledged senders: {} sent, {} acknowledged, {} arrived, {} cuts",
        THREADS * PER,
        ok.len(),
        arrived.len(),
        cuts
    );
}
