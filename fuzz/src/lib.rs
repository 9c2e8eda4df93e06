//! Bounded-time fuzzing on a stable toolchain.
//!
//! Each target in `tests/targets.rs` feeds one parser inputs for a fixed
//! time: random bytes, and valid seeds (fixtures, encoded batches) bent by
//! random edits. proptest generates them and, on a failure, shrinks the
//! input to a small one that still fails and prints it with the seed that
//! found it. A found crash becomes a file in `regressions/TARGET/`, which
//! every later run feeds first.
//!
//! The budget per target is `FLOWGATE_FUZZ_SECONDS` (default 2, so that
//! `cargo test` stays quick; `scripts/test.sh` gives each target longer).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// How long each target runs unless `FLOWGATE_FUZZ_SECONDS` says otherwise.
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// Cases per proptest run; runs repeat with fresh seeds until the budget ends.
const CASES_PER_RUN: u32 = 64;

/// The time each target gets.
pub fn budget() -> Duration {
    match std::env::var("FLOWGATE_FUZZ_SECONDS") {
        Ok(s) => match s.parse::<f64>() {
            Ok(secs) if secs > 0.0 => Duration::from_secs_f64(secs),
            _ => panic!("FLOWGATE_FUZZ_SECONDS={s:?}: expected a positive number of seconds"),
        },
        Err(_) => DEFAULT_BUDGET,
    }
}

/// Where a target's regression inputs live.
pub fn regressions_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target)
}

/// The regression inputs of `target`, by file name (none yet is fine).
pub fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(regressions_dir(target)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let path = e.path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// One edit of a seed.
#[derive(Debug, Clone)]
pub enum Edit {
    /// XOR the byte at this position (modulo the length) with a mask.
    Flip { at: usize, mask: u8 },
    /// Insert bytes at this position.
    Insert { at: usize, bytes: Vec<u8> },
    /// Remove up to `len` bytes from this position.
    Remove { at: usize, len: usize },
    /// Cut everything from this position on.
    Truncate { at: usize },
    /// Copy a span to another place (repeats structure: nesting, lists).
    Repeat { from: usize, len: usize, to: usize },
    /// Overwrite with a value parsers treat specially.
    Special { at: usize, which: usize },
}

/// Bytes that tend to matter: lengths at type edges, separators, quotes.
const SPECIALS: &[&[u8]] = &[
    &[0x00],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    b"\n",
    b"---\n",
    b": ",
    b"- ",
    b"'",
    b"\"",
    b"{",
    b"[",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"~",
    b"1e309",
    b"-1",
    b"18446744073709551616",
    b"::",
    b"/",
];

fn at(pos: usize, len: usize) -> usize {
    if len == 0 { 0 } else { pos % (len + 1) }
}

impl Edit {
    fn apply(&self, data: &mut Vec<u8>) {
        let len = data.len();
        match self {
            Edit::Flip { at: pos, mask } => {
                if len > 0 {
                    data[pos % len] ^= mask;
                }
            }
            Edit::Insert { at: pos, bytes } => {
                let p = at(*pos, len);
                data.splice(p..p, bytes.iter().copied());
            }
            Edit::Remove { at: pos, len: n } => {
                let p = at(*pos, len);
                let end = (p + n).min(len);
                data.drain(p..end);
            }
            Edit::Truncate { at: pos } => data.truncate(at(*pos, len)),
            Edit::Repeat { from, len: n, to } => {
                let f = at(*from, len);
                let end = (f + n).min(len);
                let span: Vec<u8> = data[f..end].to_vec();
                let t = at(*to, len);
                data.splice(t..t, span);
            }
            Edit::Special { at: pos, which } => {
                let s = SPECIALS[which % SPECIALS.len()];
                let p = at(*pos, len);
                let end = (p + s.len()).min(len);
                data.splice(p..end, s.iter().copied());
            }
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let pos = any::<usize>();
    prop_oneof![
        (pos, 1u8..).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        (pos, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (pos, 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        pos.prop_map(|at| Edit::Truncate { at }),
        (pos, 1usize..256, pos).prop_map(|(from, len, to)| Edit::Repeat { from, len, to }),
        (pos, any::<usize>()).prop_map(|(at, which)| Edit::Special { at, which }),
    ]
}

/// Inputs for a byte parser: a seed bent by a few edits (mostly), or
/// random bytes.
pub fn bytes_from(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty(), "a byte target needs at least one seed");
    let n = seeds.len();
    let bent = (0..n, prop::collection::vec(edit(), 0..8)).prop_map(move |(i, edits)| {
        let mut data = seeds[i].clone();
        for e in &edits {
            e.apply(&mut data);
        }
        data
    });
    prop_oneof![
        8 => bent,
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

/// Inputs for a text parser: [`bytes_from`] read as UTF-8 (lossily, so
/// the edits still reach the parser).
pub fn text_from(seeds: Vec<String>) -> BoxedStrategy<String> {
    bytes_from(seeds.into_iter().map(String::into_bytes).collect())
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
        .boxed()
}

/// What a target's run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub cases: u64,
    pub elapsed: Duration,
}

/// Runs `check` on inputs of `strategy` until the budget is spent. A
/// failure (an `Err`, or a panic) is shrunk and reported with the seed that
/// found it; the test then fails.
pub fn fuzz<T, S>(target: &str, strategy: S, check: impl Fn(&T) -> Result<(), String>) -> Report
where
    S: Strategy<Value = T>,
    T: Debug,
{
    let budget = budget();
    let started = Instant::now();
    let mut cases = 0u64;
    // A different seed every run, printed so a failure can be replayed.
    let base_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut round = 0u64;
    while started.elapsed() < budget {
        let seed = base_seed.wrapping_add(round);
        round += 1;
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            cases: CASES_PER_RUN,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        let result = runner.run(&strategy, |input| {
            check(&input).map_err(TestCaseError::fail)
        });
        cases += u64::from(CASES_PER_RUN);
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => panic!(
                "fuzz target {target} failed (seed {seed}): {reason}\nminimal input: {input:#?}\n\
                 Save that input under fuzz/regressions/{target}/ and fix the parser."
            ),
            Err(TestError::Abort(reason)) => panic!("fuzz target {target} aborted: {reason}"),
        }
    }
    let report = Report {
        cases,
        elapsed: started.elapsed(),
    };
    eprintln!(
        "fuzz {target}: {} cases in {:.1?}, no failure",
        report.cases, report.elapsed
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_of_any_input() {
        let mut runner = TestRunner::deterministic();
        runner
            .run(
                &(prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(edit(), 0..16)),
                |(mut data, edits)| {
                    for e in &edits {
                        e.apply(&mut data);
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    #[should_panic(expected = "fuzz target always-fails failed")]
    fn a_failing_check_fails_the_target() {
        fuzz("always-fails", bytes_from(vec![b"seed".to_vec()]), |b| {
            if b.len() < 1000 {
                Err("short".into())
            } else {
                Ok(())
            }
        });
    }
}
