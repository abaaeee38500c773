//! Every list format over the wire: RPZ actions and local data, adblock
//! exceptions and `$important`, registry decisions in the EDE text, keywords.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

fn data(file: &str) -> String {
    format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn rpz_semantics() {
    let up = Upstream::start().await;
    up.set("pass.bad.example.", RecordType::A, Canned::Answer(vec![a("pass.bad.example.", 60, "198.51.100.20")]));
    up.set("wild.example.", RecordType::A, Canned::Answer(vec![a("wild.example.", 60, "198.51.100.21")]));
    let lists = format!("[[lists]]\nname = \"rpz\"\nsource = \"{}\"\nformat = \"rpz\"\nede = 15\n", data("sample.rpz"));
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let q = |n: &'static str, t: RecordType| {
        let addr = srv.addr;
        async move { udp(addr, n, t, EDNS).await }
    };
    // name CNAME . : NXDOMAIN for the name itself
    assert_eq!(q("bad.example.", RecordType::A).await.unwrap().metadata.response_code, ResponseCode::NXDomain);
    // *.name CNAME . : names below, not the name itself
    assert_eq!(q("x.wild.example.", RecordType::A).await.unwrap().metadata.response_code, ResponseCode::NXDomain);
    let m = q("wild.example.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "the wildcard trigger does not cover its own name");
    // CNAME *. : NODATA
    let m = q("nodata.example.", RecordType::A).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // rpz-passthru beats the wildcard above it
    let m = q("pass.bad.example.", RecordType::A).await.unwrap();
    assert_eq!(m.answers.len(), 1, "passthru: {m:?}");
    assert_eq!(q("other.bad.example.", RecordType::A).await.unwrap().metadata.response_code, ResponseCode::NXDomain);
    // rpz-drop: no reply
    let (_, raw) = query_bytes("drop.example.", RecordType::A, EDNS);
    assert!(udp_raw(srv.addr, &raw, std::time::Duration::from_millis(500)).await.is_none());
    // local data answers by type
    let m = q("local.example.", RecordType::A).await.unwrap();
    assert_eq!(m.answers[0].data, RData::A("192.0.2.10".parse().unwrap()));
    let m = q("local.example.", RecordType::AAAA).await.unwrap();
    assert_eq!(m.answers[0].data, RData::AAAA("2001:db8::10".parse().unwrap()));
    let m = q("local.example.", RecordType::TXT).await.unwrap();
    assert!(matches!(&m.answers[0].data, RData::TXT(t) if t.to_string().contains("blocked by order")), "{:?}", m.answers);
    let m = q("local.example.", RecordType::MX).await.unwrap();
    assert!(m.answers.is_empty(), "no MX local data: NODATA");
    // CNAME to another name: local CNAME answer
    let m = q("redirect.example.", RecordType::A).await.unwrap();
    assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_string() == "walled.garden.test."), "{:?}", m.answers);
    assert_eq!(ede(&m).first().map(|e| e.0), Some(15));
    srv.shutdown().await;
}

#[tokio::test]
async fn adblock_semantics() {
    let up = Upstream::start().await;
    for n in ["sub.exact.example.", "good.ads.example.", "thirdparty.example.", "tracker.example."] {
        up.set(n, RecordType::A, Canned::Answer(vec![a(n, 60, "198.51.100.30")]));
    }
    let lists = format!("[[lists]]\nname = \"ads\"\nsource = \"{}\"\nformat = \"adblock\"\n", data("sample.adblock"));
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let rc = |n: &'static str| {
        let addr = srv.addr;
        async move { udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code }
    };
    assert_eq!(rc("ads.example.").await, ResponseCode::NXDomain, "||name^");
    assert_eq!(rc("x.ads.example.").await, ResponseCode::NXDomain, "||name^ covers the subtree");
    assert_eq!(rc("good.ads.example.").await, ResponseCode::NoError, "@@ exception");
    assert_eq!(rc("exact.example.").await, ResponseCode::NXDomain, "|name^");
    assert_eq!(rc("sub.exact.example.").await, ResponseCode::NoError, "|name^ is exact");
    assert_eq!(rc("imp.example.").await, ResponseCode::NXDomain, "$important beats @@");
    assert_eq!(rc("tracker42.example.").await, ResponseCode::NXDomain, "/regex/");
    assert_eq!(rc("tracker.example.").await, ResponseCode::NoError);
    assert_eq!(rc("thirdparty.example.").await, ResponseCode::NoError, "unsupported modifier: not a block");
    srv.shutdown().await;
}

#[tokio::test]
async fn registry_decision_id_in_ede_and_idn() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = "Updated: 2016-06-13 12:04:00 +0000\n\
                1.2.3.4;пример.рф;;Роскомнадзор;9843-URL-on;2013-08-06\n\
                5.6.7.8;extremist.example;http://extremist.example/page;Генпрокуратура;27-31-2015/Ид2971-15;2015-02-18\n";
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(text);
    std::fs::write(dir.path().join("dump.csv"), &bytes).unwrap();
    let src = dir.path().join("dump.csv").display().to_string();
    let lists = format!("[[lists]]\nname = \"zapret\"\nsource = \"{src}\"\nformat = \"registry-csv\"\nede = 16\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let m = udp(srv.addr, "www.extremist.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let e = ede(&m);
    assert_eq!(e[0].0, 16);
    assert!(e[0].1.contains("27-31-2015/Ид2971-15"), "decision id in EXTRA-TEXT: {e:?}");
    assert!(e[0].1.contains("zapret"), "{e:?}");
    // the Cyrillic IDN name, queried in its A-label form
    let m = udp(srv.addr, "xn--e1afmkfd.xn--p1ai.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(ede(&m)[0].1.contains("9843-URL-on"));
    srv.shutdown().await;
}

#[tokio::test]
async fn keywords_match_anywhere_in_the_name() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kw = write_list(dir.path(), "kw.txt", "# keywords\ncasino\njihad-recruit\n");
    let lists = format!("[[lists]]\nname = \"kw\"\nsource = \"{kw}\"\nformat = \"keywords\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let rc = |n: &'static str| {
        let addr = srv.addr;
        async move { udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code }
    };
    assert_eq!(rc("best-casino-online.example.").await, ResponseCode::NXDomain);
    assert_eq!(rc("www.jihad-recruit.test.").await, ResponseCode::NXDomain);
    assert_eq!(rc("news.example.").await, ResponseCode::NoError);
    srv.shutdown().await;
}
