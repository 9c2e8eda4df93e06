//! Bounded-time fuzzing on a stable toolchain, with no dependency.
//!
//! Each target in `tests/targets.rs` feeds one parser inputs for a fixed
//! time: random bytes, and valid seeds (fixtures, encoded batches) bent by
//! random edits, or structures drawn field by field. A failure (an `Err`
//! from the check, or a panic) is shrunk where the input is bytes (edits
//! dropped, the tail cut) and reported with the input and the seed that
//! found it. A found crash becomes a file in `regressions/TARGET/`, which
//! every later run feeds first, as a seed.
//!
//! The budget per target is `FLOWGATE_FUZZ_SECONDS` (default 2, so that
//! `cargo test` stays quick; `scripts/test.sh` gives each target longer).

use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long each target runs unless `FLOWGATE_FUZZ_SECONDS` says otherwise.
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

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

/// xorshift64*: small, fast, and reproducible from the printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Text: mostly short names, sometimes long or arbitrary (UTF-8 of
    /// random bytes).
    pub fn text(&mut self, max: usize) -> String {
        match self.below(4) {
            0 => String::new(),
            1 => {
                let n = 1 + self.below(20);
                (0..n)
                    .map(|_| *self.pick(b"abcdefghijklmnopqrstuvwxyz0123456789-.") as char)
                    .collect()
            }
            2 => "x".repeat(self.below(max + 1)),
            _ => String::from_utf8_lossy(&self.bytes(max)).into_owned(),
        }
    }

    /// A value at an edge of its type more often than by chance.
    pub fn u64_edgy(&mut self) -> u64 {
        match self.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => self.below(1000) as u64,
            _ => self.next_u64(),
        }
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
    fn random(rng: &mut Rng) -> Edit {
        let pos = rng.next_u64() as usize;
        match rng.below(6) {
            0 => Edit::Flip {
                at: pos,
                mask: 1 + rng.below(255) as u8,
            },
            1 => Edit::Insert {
                at: pos,
                bytes: {
                    let mut b = rng.bytes(15);
                    b.push(rng.next_u64() as u8);
                    b
                },
            },
            2 => Edit::Remove {
                at: pos,
                len: 1 + rng.below(63),
            },
            3 => Edit::Truncate { at: pos },
            4 => Edit::Repeat {
                from: pos,
                len: 1 + rng.below(255),
                to: rng.next_u64() as usize,
            },
            _ => Edit::Special {
                at: pos,
                which: rng.below(SPECIALS.len()),
            },
        }
    }

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

/// A byte input: which seed, and the edits bent into it (or raw bytes).
#[derive(Debug, Clone)]
pub enum BytesCase {
    Bent { seed: usize, edits: Vec<Edit> },
    Raw(Vec<u8>),
}

impl BytesCase {
    pub fn bytes(&self, seeds: &[Vec<u8>]) -> Vec<u8> {
        match self {
            BytesCase::Bent { seed, edits } => {
                let mut data = seeds[*seed].clone();
                for e in edits {
                    e.apply(&mut data);
                }
                data
            }
            BytesCase::Raw(b) => b.clone(),
        }
    }

    fn random(rng: &mut Rng, seeds: usize) -> BytesCase {
        if rng.chance(9) {
            return BytesCase::Raw(rng.bytes(512));
        }
        let n = rng.below(8);
        BytesCase::Bent {
            seed: rng.below(seeds),
            edits: (0..n).map(|_| Edit::random(rng)).collect(),
        }
    }

    /// Smaller cases: one edit fewer, or (raw) a shorter input.
    fn smaller(&self) -> Vec<BytesCase> {
        match self {
            BytesCase::Bent { seed, edits } => (0..edits.len())
                .map(|i| {
                    let mut e = edits.clone();
                    e.remove(i);
                    BytesCase::Bent {
                        seed: *seed,
                        edits: e,
                    }
                })
                .collect(),
            BytesCase::Raw(b) if !b.is_empty() => vec![
                BytesCase::Raw(b[..b.len() / 2].to_vec()),
                BytesCase::Raw(b[1..].to_vec()),
                BytesCase::Raw(b[..b.len() - 1].to_vec()),
            ],
            BytesCase::Raw(_) => Vec::new(),
        }
    }
}

/// Runs `check` on one input; a panic counts as a failure.
fn attempt<T>(check: &impl Fn(&T) -> Result<(), String>, input: &T) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

/// What a target's run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub cases: u64,
    pub elapsed: Duration,
}

fn base_seed() -> u64 {
    // A different seed every run, printed so a failure can be replayed
    // (FLOWGATE_FUZZ_SEED).
    std::env::var("FLOWGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn finish(target: &str, cases: u64, started: Instant) -> Report {
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

/// Runs `check` on inputs drawn by `draw` until the budget is spent; the
/// first failure fails the test with the input and its seed.
pub fn fuzz<T: Debug>(
    target: &str,
    draw: impl Fn(&mut Rng) -> T,
    check: impl Fn(&T) -> Result<(), String>,
) -> Report {
    let (budget, started, seed) = (budget(), Instant::now(), base_seed());
    let mut rng = Rng::new(seed);
    let mut cases = 0u64;
    while started.elapsed() < budget {
        let input = draw(&mut rng);
        cases += 1;
        if let Err(reason) = attempt(&check, &input) {
            panic!(
                "fuzz target {target} failed (FLOWGATE_FUZZ_SEED={seed}, case {cases}): {reason}\ninput: {input:#?}"
            );
        }
    }
    finish(target, cases, started)
}

/// [`fuzz`] for a byte parser: seeds bent by edits, or random bytes. A
/// failing input is shrunk, then printed and written beside the
/// regressions for the developer to keep.
pub fn fuzz_bytes(
    target: &str,
    seeds: &[Vec<u8>],
    check: impl Fn(&[u8]) -> Result<(), String>,
) -> Report {
    assert!(!seeds.is_empty(), "a byte target needs at least one seed");
    let check = |b: &Vec<u8>| check(b);
    // Seeds first: every regression input must pass as it is.
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(reason) = attempt(&check, seed) {
            panic!("fuzz target {target}: seed {i} fails as it is: {reason}");
        }
    }
    let (budget, started, seed) = (budget(), Instant::now(), base_seed());
    let mut rng = Rng::new(seed);
    let mut cases = 0u64;
    while started.elapsed() < budget {
        let case = BytesCase::random(&mut rng, seeds.len());
        cases += 1;
        if let Err(reason) = attempt(&check, &case.bytes(seeds)) {
            let (case, reason) = shrink(case, reason, |c| attempt(&check, &c.bytes(seeds)));
            let bytes = case.bytes(seeds);
            let saved = std::env::temp_dir().join(format!("flowgate-fuzz-{target}-{seed}"));
            let _ = std::fs::write(&saved, &bytes);
            panic!(
                "fuzz target {target} failed (FLOWGATE_FUZZ_SEED={seed}): {reason}\n\
                 minimal input ({} bytes, saved as {}): {:?}\n\
                 Copy it to fuzz/regressions/{target}/ and fix the parser.",
                bytes.len(),
                saved.display(),
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    finish(target, cases, started)
}

fn shrink(
    mut case: BytesCase,
    mut reason: String,
    fails: impl Fn(&BytesCase) -> Result<(), String>,
) -> (BytesCase, String) {
    'outer: for _ in 0..256 {
        for smaller in case.smaller() {
            if let Err(r) = fails(&smaller) {
                case = smaller;
                reason = r;
                continue 'outer;
            }
        }
        break;
    }
    (case, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_of_any_input() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let mut data = rng.bytes(8);
            for _ in 0..rng.below(16) {
                Edit::random(&mut rng).apply(&mut data);
            }
        }
    }

    #[test]
    #[should_panic(expected = "fuzz target always-fails failed")]
    fn a_failing_check_fails_the_target() {
        fuzz_bytes("always-fails", &[b"seed".to_vec()], |b| {
            if b == b"seed" {
                Ok(())
            } else {
                Err("bent".into())
            }
        });
    }

    #[test]
    fn a_failure_shrinks_to_the_edit_that_matters() {
        let seeds = [b"abcdef".to_vec()];
        let case = BytesCase::Bent {
            seed: 0,
            edits: vec![
                Edit::Flip { at: 0, mask: 1 },
                Edit::Insert {
                    at: 3,
                    bytes: b"!".to_vec(),
                },
                Edit::Flip { at: 5, mask: 2 },
            ],
        };
        let fails = |c: &BytesCase| {
            if c.bytes(&seeds).contains(&b'!') {
                Err("bang".to_owned())
            } else {
                Ok(())
            }
        };
        let (small, _) = shrink(case, "bang".into(), fails);
        assert_eq!(small.bytes(&seeds), b"abc!def".to_vec());
    }
}
