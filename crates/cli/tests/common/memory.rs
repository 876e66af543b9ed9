//! A process's memory as an attacker with the node's privileges reads it: every writable
//! mapping (heap, stacks, anonymous maps, data) through /proc/PID/mem.
#![allow(dead_code)] // each test binary uses its own part
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use std::io::{Read, Seek, SeekFrom};

/// Calls `f` with the contents of each writable mapping of process `pid` that can be read.
fn each_region(pid: u32, mut f: impl FnMut(&[u8])) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
        // Keys live in writable memory; the rest is code and read-only data.
        if !perms.starts_with("rw") || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut data = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut data).is_ok() {
            f(&data);
        }
    }
}

/// Calls `f(data, i)` for every position `i` of every readable writable mapping `data` of
/// process `pid`, skipping pages of zeroes.
fn each_position(pid: u32, mut f: impl FnMut(&[u8], usize)) {
    each_region(pid, |data| {
        for (k, page) in data.chunks(4096).enumerate() {
            if page.chunks_exact(8).all(|c| c == [0; 8]) {
                continue;
            }
            (k * 4096..k * 4096 + page.len()).for_each(|i| f(data, i));
        }
    });
}

/// How often any of `patterns` occurs in the writable memory of process `pid`.
pub fn find_in_memory(pid: u32, patterns: &[Vec<u8>]) -> usize {
    let mut first = [false; 256];
    patterns.iter().for_each(|p| first[usize::from(p[0])] = true);
    let mut hits = 0;
    // One pass: compare where a pattern's first byte is.
    each_position(pid, |data, i| {
        if first[usize::from(data[i])] {
            hits += patterns.iter().filter(|p| data[i..].starts_with(p)).count();
        }
    });
    hits
}

/// Pieces of a node's key document in plaintext in the memory of process `pid`: its SAD
/// (`"sad-entry"`) and every JSON key field (`...key":"<hex>"`) with a key that is not all zeroes
/// (public keys aside).
pub fn key_documents_in_memory(pid: u32) -> Vec<String> {
    const SAD: &[u8] = b"\"sad-entry\"";
    const FIELD: &[u8] = b"key\":\"";
    let mut found = Vec::new();
    each_position(pid, |data, i| {
        match data[i] {
            b'"' if data[i..].starts_with(SAD) => found.push("\"sad-entry\"".to_owned()),
            b'k' if data[i..].starts_with(FIELD) => {
                let value = &data[i + FIELD.len()..];
                let hex = value.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                // The seal's X25519 public keys ("public-key", or a leftover tail of it).
                let name = data[..i].iter().rev().take_while(|b| b.is_ascii_lowercase() || **b == b'-').count();
                let public = name > 0 && b"public-".ends_with(&data[i - name..i]);
                if !public && hex >= 32 && value.get(hex) == Some(&b'"') && value[..hex].iter().any(|&b| b != b'0') {
                    let shown = &data[i.saturating_sub(24)..i + FIELD.len() + 8];
                    found.push(String::from_utf8_lossy(shown).into_owned());
                }
            }
            _ => {}
        }
    });
    found
}
