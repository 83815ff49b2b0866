//! `metrics::install` inside an actix `System`: the listener binds, serves the text exposition
//! with histograms as `_bucket` series, and reports bind and double-install errors.
//!
//! One test function on purpose: the recorder is process-global.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ledger_actors::LedgerError;
use ledger_actors::metrics;

fn free_loopback_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    probe.local_addr().expect("local address")
}

fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the exporter");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

/// The exporter installs inside an actix System, serves `/metrics` and `/health` while the
/// System's thread is blocked, and reports a taken port and a second install as typed errors.
#[test]
fn install_inside_actix_system() {
    actix::System::new().block_on(async {
        // A port that is taken: the error names the address and nothing gets installed.
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("local address");
        match metrics::install(taken_addr) {
            Err(LedgerError::MetricsExporter { addr, reason }) => {
                assert_eq!(addr, taken_addr);
                assert!(reason.starts_with("cannot bind"), "{reason}");
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
        drop(taken);

        let addr = free_loopback_addr();
        let handle = metrics::install(addr).expect("install the exporter");

        ::metrics::histogram!(metrics::APPEND_DURATION_SECONDS).record(0.004);
        ::metrics::counter!(
            metrics::APPENDS_TOTAL,
            metrics::labels::OUTCOME => metrics::labels::OUTCOME_OK
        )
        .increment(3);

        let response = scrape(addr, "/metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("# TYPE ledger_append_duration_seconds histogram"),
            "{response}"
        );
        assert!(response.contains("ledger_append_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(response.contains("# HELP ledger_appends_total "));
        assert!(response.contains("ledger_appends_total{outcome=\"ok\"} 3"));
        assert!(response.contains("ledger_appends_total{outcome=\"conflict\"} 0"));
        assert!(response.contains("ledger_chain_breaks_total 0"));
        assert!(
            handle
                .render()
                .contains("ledger_appends_total{outcome=\"ok\"} 3")
        );

        // These scrapes block the System's only thread: the exporter runs on its own.
        assert!(scrape(addr, "/health").starts_with("HTTP/1.1 200"));

        match metrics::install(free_loopback_addr()) {
            Err(LedgerError::MetricsExporter { reason, .. }) => {
                assert_eq!(reason, metrics::ALREADY_INSTALLED);
            }
            other => panic!("expected AlreadyInstalled, got {other:?}"),
        }
    });
}
