//! Resuming a run after a power cut, bit for bit: a journal of every model evaluation.
//!
//! The samplers are deterministic functions of the model's outputs and the seed's noise, so a run
//! is fully described by its plan and the outputs of its model calls so far. [`Journal`] appends
//! each evaluation (its timestep, a hash of its input, its output and gate) to a file, one
//! checksummed record at a time, fsynced. After a crash (kill -9, power cut), the next start with
//! the same plan opens the journal, and [`super::Generator::sample_journaled`] runs the sampler
//! again from the start: the first evaluations are answered from the journal without the model
//! (their inputs checked against the recorded hashes), the rest by the model. The result is the
//! image an uninterrupted run makes. A torn last record (the crash hit mid-write) is dropped; a
//! journal of another plan, or one whose inputs stop matching, is discarded and the run starts
//! over.
//!
//! Format: `DSJ1\n`, the plan's fingerprint (64 hex digits) and `\n`, then records:
//! `u32 le payload length`, payload, `8 bytes` of the payload's sha256. Payload: `t` (f64 le),
//! input hash (8 bytes), gate flag (u8) and gate (2 x f32 le), output (f32 le).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sampler::{DenoiseError, Denoiser, EvalInfo};

const MAGIC: &[u8; 5] = b"DSJ1\n";

/// One recorded model evaluation.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    t: f64,
    input: [u8; 8],
    gate: Option<[f32; 2]>,
    output: Vec<f32>,
}

/// The evaluations of one run, on disk.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    fingerprint: String,
    file: File,
    records: Vec<Record>,
    /// Evaluations answered or recorded so far in this run.
    next: usize,
    /// Evaluations answered from the journal (not recomputed) in this run.
    replayed: usize,
}

impl Journal {
    /// Opens the journal at `path` for a run with this fingerprint: its records if it was left by
    /// the same plan, else a new, empty journal (the old file replaced).
    pub fn open(path: &Path, fingerprint: &str) -> io::Result<Journal> {
        // Whatever was read (nothing, or the whole records before a torn tail) is written anew.
        let records = read_records(path, fingerprint)?.unwrap_or_default();
        let file = write_journal(path, fingerprint, &records)?;
        Ok(Journal { path: path.to_owned(), fingerprint: fingerprint.to_owned(), file, records, next: 0, replayed: 0 })
    }

    /// Evaluations on record (from an earlier, interrupted run or this one).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Evaluations of this run that came from the journal instead of the model.
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// Removes the journal file (the run finished and its outputs are written).
    pub fn finish(self) -> io::Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path)
    }

    fn rewrite(&mut self) -> io::Result<()> {
        self.file = write_journal(&self.path, &self.fingerprint, &self.records)?;
        Ok(())
    }

    fn append(&mut self, r: Record) -> io::Result<()> {
        self.file.write_all(&encode(&r))?;
        self.file.sync_data()?;
        self.records.push(r);
        Ok(())
    }
}

/// Writes a whole journal (header and records) atomically; the file, open for appending.
fn write_journal(path: &Path, fingerprint: &str, records: &[Record]) -> io::Result<File> {
    let tmp = path.with_extension("journal-tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(fingerprint.as_bytes())?;
        f.write_all(b"\n")?;
        for r in records {
            f.write_all(&encode(r))?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

fn encode(r: &Record) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + 8 + 9 + 4 * r.output.len());
    payload.extend_from_slice(&r.t.to_le_bytes());
    payload.extend_from_slice(&r.input);
    match r.gate {
        Some(g) => {
            payload.push(1);
            payload.extend_from_slice(&g[0].to_le_bytes());
            payload.extend_from_slice(&g[1].to_le_bytes());
        }
        None => payload.extend_from_slice(&[0; 9]),
    }
    for v in &r.output {
        payload.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&Sha256::digest(&payload)[..8]);
    out
}

/// The whole records of a journal left by a run with this fingerprint; `None` if there is no
/// such journal (missing, another plan, not a journal).
fn read_records(path: &Path, fingerprint: &str) -> io::Result<Option<Vec<Record>>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let head = MAGIC.len() + fingerprint.len() + 1;
    if bytes.len() < head || &bytes[..MAGIC.len()] != MAGIC || &bytes[MAGIC.len()..head - 1] != fingerprint.as_bytes() {
        return Ok(None);
    }
    let mut records = Vec::new();
    let mut rest = &bytes[head..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 25 || (len - 25) % 4 != 0 || rest.len() < 4 + len + 8 {
            break; // torn or damaged: keep what came before
        }
        let payload = &rest[4..4 + len];
        if Sha256::digest(payload)[..8] != rest[4 + len..4 + len + 8] {
            break;
        }
        let f32_at = |i: usize| f32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&payload[..8]);
        let mut input = [0u8; 8];
        input.copy_from_slice(&payload[8..16]);
        let gate = (payload[16] == 1).then(|| [f32_at(17), f32_at(21)]);
        let output = (25..len).step_by(4).map(f32_at).collect();
        records.push(Record { t: f64::from_le_bytes(t), input, gate, output });
        rest = &rest[4 + len + 8..];
    }
    Ok(Some(records))
}

/// The first 8 bytes of the sha256 of an evaluation's input (x's bits and t).
fn input_hash(x: &[f32], t: f64) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(t.to_le_bytes());
    for v in x {
        h.update(v.to_le_bytes());
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize()[..8]);
    out
}

/// A denoiser that answers from the journal while the recorded inputs match, then calls the
/// model and records each new evaluation.
pub(super) struct Journaled<'a> {
    pub inner: &'a mut dyn Denoiser,
    pub journal: &'a mut Journal,
}

impl Denoiser for Journaled<'_> {
    fn sample_len(&self) -> usize {
        self.inner.sample_len()
    }

    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        let input = input_hash(x, t);
        let j = &mut *self.journal;
        if let Some(r) = j.records.get(j.next) {
            if r.input == input && r.t.to_bits() == t.to_bits() && r.output.len() == out.len() {
                out.copy_from_slice(&r.output);
                j.next += 1;
                j.replayed += 1;
                return Ok(EvalInfo { gate: r.gate });
            }
            log::warn!("journal {} stops matching at evaluation {}; recomputing from there", j.path.display(), j.next);
            j.records.truncate(j.next);
            j.rewrite().map_err(|e| DenoiseError(format!("cannot rewrite the journal {}: {e}", j.path.display())))?;
        }
        let info = self.inner.eval(x, t, out)?;
        let record = Record { t, input, gate: info.gate, output: out.to_vec() };
        j.append(record).map_err(|e| DenoiseError(format!("cannot write the journal {}: {e}", j.path.display())))?;
        j.next += 1;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_torn_tail_and_another_plan_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.journal");
        let fp = "a".repeat(64);
        {
            let mut j = Journal::open(&path, &fp).unwrap();
            j.append(Record { t: 99.0, input: [1; 8], gate: Some([0.25, 0.75]), output: vec![1.0, -2.0] }).unwrap();
            j.append(Record { t: 50.5, input: [2; 8], gate: None, output: vec![3.0, 4.0] }).unwrap();
        }
        // A crash in the middle of a third record.
        let mut bytes = std::fs::read(&path).unwrap();
        let third = encode(&Record { t: 1.0, input: [3; 8], gate: None, output: vec![5.0, 6.0] });
        bytes.extend_from_slice(&third[..third.len() - 3]);
        std::fs::write(&path, &bytes).unwrap();
        let j = Journal::open(&path, &fp).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.records[0].gate, Some([0.25, 0.75]));
        assert_eq!(j.records[1].output, vec![3.0, 4.0]);
        drop(j);
        // The torn tail is gone from the file too.
        assert_eq!(read_records(&path, &fp).unwrap().unwrap().len(), 2);
        // Another plan: nothing is reused.
        let j = Journal::open(&path, &"b".repeat(64)).unwrap();
        assert!(j.is_empty());
        j.finish().unwrap();
        assert!(!path.exists());
    }
}
