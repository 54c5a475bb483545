//! The "camera" server (protocol v2): an integer `p` as a request returns an image, a
//! 512 × 512 float32 array (little endian, row after row) whose content depends on `p`.
//! Other requests are ignored; the text `/KTHXBYE` stops it.
//!
//! ```text
//! cargo run --release --example instrument_server
//! cargo run --release --example instrument_client     # in another terminal
//! ```
//!
//! It answers the original Python `test_serpy2_2_instrumentClient` as well: the images
//! are the same, bit for bit.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use serpy::{Message, Protocol, Received, Server};

const USAGE: &str = "\
instrument_server: a camera-like server (v2): send it an integer p, get back an image

usage: instrument_server [--bind ADDR] [--port N] [--size S]

  --bind ADDR  address to listen on (default 127.0.0.1: this machine only;
               0.0.0.0 opens the server to the network)
  --port N     port to listen on (default 8000; 0 picks a free port)
  --size S     image side in pixels (default 512: 512 x 512, 1 MiB per image)
  -h, --help   print this help

The image for p is S x S float32 pixels, little endian, row after row:
pixel (row i, column j) = cos(x[j]) * sin(y[i]) with x = y = linspace(0, p*pi, S).
Other requests are ignored. The first line printed is `listening on ADDR:PORT`.
A client stops the server by sending the text /KTHXBYE. Try it with instrument_client.";

/// How long sending one image may wait for room in the client's outgoing queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    bind: String,
    port: u16,
    side: usize,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        bind: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
        side: 512,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--bind" => o.bind = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            "--size" => o.side = common::check_side(args.value(&flag)?)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("instrument_server", run(options))
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let server = common::listen(
        Server::builder()
            .protocol(Protocol::V2)
            .max_message_size(common::max_message_size(o.side)),
        &o.bind,
        o.port,
    )?;
    println!(
        "instrument server (v2, {0} x {0} float32 images) started; a client sends {1} to stop it",
        o.side,
        common::STOP
    );
    loop {
        let Received {
            connection,
            message,
            ..
        } = server.recv_any()?;
        let p = match message {
            Message::Int(p) => p,
            ref other if common::is_stop(other, Protocol::V2) => break,
            other => {
                println!("{}: ignored", common::describe(&other));
                continue;
            }
        };
        let image = common::image(p, o.side);
        println!("int {p}: sending a {0} x {0} image", o.side);
        match connection.send_data_timeout(image, serpy::Mode::Plain, SEND_TIMEOUT) {
            Ok(()) => {}
            // The client left before its image: nobody to send it to.
            Err(serpy::Error::Disconnected | serpy::Error::Closed) => {}
            Err(e) => eprintln!("could not send the image: {e}"),
        }
    }
    println!("{} received: closing the server", common::STOP);
    server.close_all();
    println!("server closed");
    Ok(())
}
