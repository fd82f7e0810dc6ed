//! Calls `GetHeaders` N times on one connection, for profiling the daemon
//! (e.g. under `valgrind --tool=callgrind`): `hammer SOCKET CREDENTIAL N`.

use std::time::Instant;

use tokend::proto::GetHeadersRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(credential), Some(n)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: hammer SOCKET CREDENTIAL N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let mut client = tokend::proto::token_broker_client::TokenBrokerClient::new(
        tokend_client::channel(socket.as_ref())
            .await
            .expect("connect"),
    );
    let started = Instant::now();
    for _ in 0..n {
        client
            .get_headers(GetHeadersRequest {
                credential: credential.clone(),
                required_scopes: vec!["SEARCH".into()],
                ..Default::default()
            })
            .await
            .expect("GetHeaders");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{n} calls in {secs:.2}s: {:.0} calls/s", n as f64 / secs);
}
