//! The DNS sink answers NXDOMAIN over UDP and TCP and audit-logs the names.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn dns_sink_answers_nxdomain_and_logs_the_name() {
    let upstream_ca = TestCa::new("it upstream CA");
    let mut policy = standard_policy(&[443], true);
    policy["dns_sink"] = serde_json::json!({"listen": "127.0.0.1:0"});
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let sink = proxy.dns_sink().expect("dns sink configured");

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&dns_query(0x1234, "exfil.example"), sink.udp_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("udp answer")
        .unwrap();
    assert_eq!(&buf[0..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 3, "NXDOMAIN");
    assert_eq!(&buf[12..len], &dns_query(0x1234, "exfil.example")[12..]);

    let mut tcp = tokio::net::TcpStream::connect(sink.tcp_addr).await.unwrap();
    let q = dns_query(0x4321, "over-tcp.example");
    tcp.write_u16(q.len() as u16).await.unwrap();
    tcp.write_all(&q).await.unwrap();
    let len = tcp.read_u16().await.unwrap() as usize;
    let mut answer = vec![0u8; len];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[0..2], &[0x43, 0x21]);
    assert_eq!(answer[3] & 0x0f, 3);

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"host\":\"exfil.example\""), "{audit}");
    assert!(audit.contains("\"host\":\"over-tcp.example\""), "{audit}");
    assert!(audit.contains("\"event\":\"dns\""), "{audit}");
}
