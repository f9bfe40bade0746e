//! Shared helpers for the corpus tests: reading the shared test data and
//! screening a message under the policy a B2BUA's answering side uses.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use bytes::Bytes;
use codeb_sip::{Limits, MethodSet, Policy, Role, Verdict, screen_datagram};

/// `shared/testdata/sip/<sub>`, found beside the checkout (CI has the same
/// layout: the crate is `dataplane/sip` inside the repository).
pub fn corpus(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/sip")
        .join(sub)
}

/// Every file in `dir` with extension `ext`, sorted by name.
pub fn files(dir: &str, ext: &str) -> Vec<(String, Bytes)> {
    let path = corpus(dir);
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, Bytes::from(std::fs::read(&p).unwrap()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The answering side of our B2BUA: every known method implemented, SDP
/// and a few common body types accepted, answers carry SDP.
pub const UAS: Policy<'static> = Policy {
    role: Role::Uas,
    implemented: Some(MethodSet::all_known()),
    supported: &["100rel", "timer", "replaces", "path", "outbound"],
    accepted: Some(&["application/sdp", "multipart/mixed", "text/plain"]),
    answer_type: Some("application/sdp"),
    accept_tel: false,
    tag_key: 0x5eed,
};

/// What a server does with a message, reduced for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reply(u16),
    Drop,
}

pub fn outcome(v: &Verdict) -> Outcome {
    match v {
        Verdict::Accept(_) => Outcome::Accept,
        Verdict::Reply { response, .. } => Outcome::Reply(response.status.as_u16()),
        Verdict::Drop(_) => Outcome::Drop,
    }
}

pub fn screen(bytes: &Bytes, policy: &Policy<'_>) -> Verdict {
    screen_datagram(bytes.clone(), &Limits::default(), policy)
}
