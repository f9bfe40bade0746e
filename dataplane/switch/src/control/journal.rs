//! The event journal: every event the switch emits, numbered 1, 2, 3, …
//! without gaps, kept on disk until the control plane acknowledges it.
//!
//! Layout, in `$CODEB_DATA_DIR/events/`:
//! - `journal_id`: a random id made when the journal is first created; a
//!   client that remembers another id knows this journal is not the one it
//!   read (the directory was lost) and reads everything again.
//! - `acked`: the highest acknowledged seq (written to a temporary file,
//!   synced, renamed).
//! - `seg-<first seq, 20 digits>.log`: append-only segments. A record is
//!   `len: u32 LE`, `crc32(payload): u32 LE`, `payload` (the protobuf
//!   `Event`, which carries its seq). A segment is closed at
//!   [`SEGMENT_BYTES`]; acknowledging deletes every segment whose events
//!   are all acknowledged (the acked seq is written first).
//!
//! Durability: a batch of records is written with one `write` and made
//! durable with one `fdatasync` before [`Journal::append`] returns, and
//! events are streamed to clients only after that, so an event a client
//! saw is never lost, even to SIGKILL or power loss. On open, the last
//! segment is read through: a torn or corrupt tail (a crash mid-write) is
//! cut off at the last good record, and the sequence continues after it.
//!
//! Bounds: the retained (unacknowledged) events are bounded by count and
//! bytes. Past either soft bound the journal reports itself full (the
//! switch then refuses new calls), but it keeps recording the events of
//! calls in progress up to a hard bound an eighth above the soft one; past
//! that, events are dropped and counted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use codeb_proto::v1::Event;
use prost::Message as _;

/// Segments are closed at this size (smaller when the byte bound is
/// small, so acknowledging frees space in steps).
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// The largest record accepted on reading; an event is far smaller.
const MAX_RECORD: u32 = 1 << 20;

/// IEEE CRC-32 (the zlib / Ethernet polynomial, reflected).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for b in data {
        c = TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// How much the journal may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Retained events past which the journal is full.
    pub max_events: u64,
    /// Retained bytes past which the journal is full.
    pub max_bytes: u64,
}

impl Limits {
    fn hard_events(&self) -> u64 {
        self.max_events.saturating_add(self.max_events / 8)
    }

    fn hard_bytes(&self) -> u64 {
        self.max_bytes.saturating_add(self.max_bytes / 8)
    }

    fn segment_bytes(&self) -> u64 {
        SEGMENT_BYTES.min((self.max_bytes / 8).max(4096))
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    /// Highest seq in it; `first - 1` while empty.
    last: u64,
    bytes: u64,
    path: PathBuf,
}

/// What a reader needs, taken under the lock and used without it.
#[derive(Debug, Clone)]
pub struct ReadView {
    segments: Vec<(u64, u64, PathBuf)>,
    acked: u64,
    last_seq: u64,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    id: String,
    limits: Limits,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    file: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Events refused at the hard bound (or too large to record).
    pub dropped: u64,
    /// Tests: the next write puts this many bytes of its batch on disk,
    /// then fails (a full disk, an I/O error).
    #[cfg(test)]
    fail_next_write: Option<usize>,
    /// Tests: every write fails (a disk gone bad).
    #[cfg(test)]
    pub(crate) fail_every_write: bool,
}

/// A batch the journal could not write (the disk is full, say): nothing
/// of it was kept, and the journal is as it was before it. The events come
/// back, to be written again later.
#[derive(Debug)]
pub struct Unwritten {
    pub error: io::Error,
    pub events: Vec<Event>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// Writes `data` to `path` atomically and durably.
fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Reads the records of a segment from byte `offset` (where the record of
/// seq `first` starts): each event with the offset just past its record,
/// and the length of the valid prefix (shorter than the file when its tail
/// is torn or corrupt). Sequence numbers must run on from `first`.
fn scan(
    path: &Path,
    (offset, first): (u64, u64),
    mut each: impl FnMut(Event, u64) -> bool,
) -> io::Result<(u64, bool)> {
    let mut file = File::open(path)?;
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset))?;
    }
    let mut r = BufReader::new(file);
    let mut good = offset;
    let mut expect = first;
    let mut head = [0u8; 8];
    loop {
        match read_full(&mut r, &mut head)? {
            0 => return Ok((good, true)),
            n if n < head.len() => return Ok((good, false)),
            _ => {}
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return Ok((good, false));
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut r, &mut payload)? < payload.len() || crc32(&payload) != crc {
            return Ok((good, false));
        }
        let Ok(ev) = Event::decode(payload.as_slice()) else {
            return Ok((good, false));
        };
        if ev.seq != expect {
            return Ok((good, false));
        }
        expect += 1;
        good += 8 + u64::from(len);
        if !each(ev, good) {
            return Ok((good, true));
        }
    }
}

/// Like `read_exact`, but says how much it got before the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn random_id() -> io::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, repairing a torn tail.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let id_path = dir.join("journal_id");
        let id = match fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() && s.trim().len() <= 64 => s.trim().to_owned(),
            Ok(_) | Err(_) => {
                let id = random_id()?;
                // A journal without its id is a new journal: old segments,
                // if any, cannot be vouched for.
                for e in fs::read_dir(dir)? {
                    let p = e?.path();
                    if p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("seg-") || n == "acked")
                    {
                        fs::remove_file(&p)?;
                    }
                }
                write_atomic(dir, &id_path, id.as_bytes())?;
                tracing::info!(journal_id = %id, "new event journal");
                id
            }
        };
        let acked = fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut firsts: Vec<u64> = Vec::new();
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let Some(n) = name.to_str() else { continue };
            if let Some(first) = n
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|d| d.parse::<u64>().ok())
                .filter(|f| *f >= 1)
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = Vec::with_capacity(firsts.len());
        for (i, first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(*first));
            let bytes = fs::metadata(&path)?.len();
            let last = match firsts.get(i + 1) {
                Some(next) => next - 1,
                None => first - 1,
            };
            segments.push(Segment {
                first: *first,
                last,
                bytes,
                path,
            });
        }
        // The last segment is read through: its end is where a crash
        // could have cut a write.
        if let Some(seg) = segments.last_mut() {
            let mut last = seg.first - 1;
            let (good, clean) = scan(&seg.path, (0, seg.first), |ev, _| {
                last = ev.seq;
                true
            })?;
            if !clean || good != seg.bytes {
                tracing::warn!(
                    segment = %seg.path.display(),
                    kept_bytes = good,
                    file_bytes = seg.bytes,
                    "event journal: torn or corrupt tail cut off"
                );
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(good)?;
                f.sync_all()?;
                seg.bytes = good;
            }
            seg.last = last;
        }
        let written = segments.last().map(|s| s.last).unwrap_or(0);
        let mut j = Journal {
            dir: dir.to_owned(),
            id,
            limits,
            segments,
            file: None,
            next_seq: written.max(acked) + 1,
            acked,
            dropped: 0,
            #[cfg(test)]
            fail_next_write: None,
            #[cfg(test)]
            fail_every_write: false,
        };
        // Segments an interrupted Ack did not get to delete.
        j.drop_acked()?;
        if let Some(seg) = j.segments.last() {
            j.file = Some(OpenOptions::new().append(true).open(&seg.path)?);
        }
        Ok(j)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The highest seq written (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Events written and not acknowledged.
    pub fn retained(&self) -> u64 {
        let first = self
            .segments
            .first()
            .map(|s| s.first.max(self.acked + 1))
            .unwrap_or(self.next_seq);
        self.next_seq.saturating_sub(first)
    }

    pub fn retained_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Past a soft bound: new calls should be refused.
    pub fn is_full(&self) -> bool {
        self.retained() >= self.limits.max_events || self.retained_bytes() >= self.limits.max_bytes
    }

    /// Numbers `events` (their `seq` and `journal_id` are set here), writes
    /// them durably, and returns those written. Past the hard bound the
    /// rest are dropped (counted in `dropped`). All or nothing: if a write
    /// fails, the journal is put back as it was (a partly written record
    /// would end every segment read at it, and the next batch would be
    /// written after it) and the events are handed back.
    pub fn append(&mut self, events: Vec<Event>) -> Result<Vec<Event>, Unwritten> {
        let before = (
            self.next_seq,
            self.segments.len(),
            self.segments.last().map(|s| (s.last, s.bytes)),
        );
        let mut kept = Vec::with_capacity(events.len());
        match self.append_all(events, &mut kept) {
            Ok(()) => Ok(kept),
            Err(error) => {
                self.undo(before);
                for ev in &mut kept {
                    ev.seq = 0;
                    ev.journal_id.clear();
                }
                Err(Unwritten {
                    error,
                    events: kept,
                })
            }
        }
    }

    /// Puts the journal back as it was before a failed append: the
    /// segments it opened removed, the one it wrote to cut back, the
    /// numbering restored. (Events it dropped, at the hard bound or too
    /// large, stay dropped and counted: they are not handed back.)
    fn undo(&mut self, (next_seq, segments, last): (u64, usize, Option<(u64, u64)>)) {
        while self.segments.len() > segments {
            if let Some(seg) = self.segments.pop() {
                let _ = fs::remove_file(&seg.path);
            }
        }
        self.file = None;
        if let (Some(seg), Some((last, bytes))) = (self.segments.last_mut(), last) {
            seg.last = last;
            seg.bytes = bytes;
            let reopened = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .and_then(|f| {
                    f.set_len(bytes)?;
                    Ok(f)
                });
            match reopened {
                Ok(f) => self.file = Some(f),
                // Not appended to again: the next append opens a new
                // segment (which the reader takes from its first seq).
                Err(e) => tracing::error!(segment = %seg.path.display(), error = %e,
                    "event journal: a failed write could not be cut back"),
            }
        }
        self.next_seq = next_seq;
    }

    fn append_all(&mut self, mut events: Vec<Event>, kept: &mut Vec<Event>) -> io::Result<()> {
        let mut buf = Vec::new();
        let (mut count, mut bytes) = (self.retained(), self.retained_bytes());
        for mut ev in events.drain(..) {
            if count >= self.limits.hard_events() || bytes >= self.limits.hard_bytes() {
                self.dropped += 1;
                tracing::error!(
                    call_id = %ev.call_id,
                    retained = count,
                    "event journal at its hard bound: event dropped (is the control plane acknowledging?)"
                );
                continue;
            }
            if self.file.is_none()
                || self
                    .segments
                    .last()
                    .is_some_and(|s| s.bytes >= self.limits.segment_bytes())
            {
                self.flush(&mut buf)?;
                self.roll()?;
            }
            ev.seq = self.next_seq;
            ev.journal_id.clone_from(&self.id);
            let payload = ev.encode_to_vec();
            let Some(len) = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
            else {
                self.dropped += 1;
                tracing::error!(call_id = %ev.call_id, bytes = payload.len(),
                    "event too large for the journal: dropped");
                continue;
            };
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            let rec = 8 + u64::from(len);
            if let Some(seg) = self.segments.last_mut() {
                seg.last = ev.seq;
                seg.bytes += rec;
            }
            self.next_seq += 1;
            count += 1;
            bytes += rec;
            kept.push(ev);
        }
        self.flush(&mut buf)
    }

    /// Writes and syncs what `buf` holds to the open segment.
    fn flush(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.fail_every_write {
            return Err(io::Error::other("injected write failure"));
        }
        #[cfg(test)]
        if let Some(n) = self.fail_next_write.take()
            && let Some(f) = self.file.as_mut()
        {
            f.write_all(&buf[..n.min(buf.len())])?;
            return Err(io::Error::other("injected write failure"));
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no open segment"))?;
        f.write_all(buf)?;
        f.sync_data()?;
        buf.clear();
        Ok(())
    }

    /// Starts a new segment at the next seq.
    fn roll(&mut self) -> io::Result<()> {
        let path = self.dir.join(segment_name(self.next_seq));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first: self.next_seq,
            last: self.next_seq - 1,
            bytes: 0,
            path,
        });
        self.file = Some(f);
        Ok(())
    }

    /// Forgets every event with seq <= `up_to` (bounded by what was
    /// written): the acked seq is made durable, then whole segments go.
    pub fn ack(&mut self, up_to: u64) -> io::Result<()> {
        let up_to = up_to.min(self.last_seq());
        if up_to <= self.acked {
            return Ok(());
        }
        write_atomic(
            &self.dir,
            &self.dir.join("acked"),
            up_to.to_string().as_bytes(),
        )?;
        self.acked = up_to;
        self.drop_acked()
    }

    fn drop_acked(&mut self) -> io::Result<()> {
        let mut removed = false;
        while let Some(seg) = self.segments.first() {
            let empty_tail = self.segments.len() == 1 && seg.bytes == 0;
            if seg.last > self.acked || empty_tail {
                break;
            }
            if self.segments.len() == 1 {
                self.file = None;
            }
            fs::remove_file(&seg.path)?;
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn view(&self) -> ReadView {
        ReadView {
            segments: self
                .segments
                .iter()
                .map(|s| (s.first, s.last, s.path.clone()))
                .collect(),
            acked: self.acked,
            last_seq: self.last_seq(),
        }
    }
}

impl ReadView {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Up to `max` retained events with seq > `after`, from disk, in
    /// order. A segment deleted meanwhile (acknowledged) is skipped.
    pub fn read_after(&self, after: u64, max: usize) -> Vec<Event> {
        self.read_from(after, max, None).0
    }

    /// [`Self::read_after`] for a reader going through the journal in
    /// order: `pos`, where its last read stopped, lets this one start
    /// there instead of reading the segment from its start again (a
    /// catch-up of a long backlog read each segment once, not once per
    /// batch). Returns where this read stopped.
    pub fn read_from(
        &self,
        after: u64,
        max: usize,
        pos: Option<ReadPos>,
    ) -> (Vec<Event>, Option<ReadPos>) {
        let after = after.max(self.acked);
        let mut out = Vec::new();
        let mut stopped = None;
        for (first, last, path) in &self.segments {
            if *last <= after || out.len() >= max {
                continue;
            }
            let start = match pos {
                Some(p) if p.segment == *first && p.next_seq == after + 1 => (p.offset, p.next_seq),
                _ => (0, *first),
            };
            let res = scan(path, start, |ev, end| {
                if ev.seq > self.last_seq {
                    return false;
                }
                if ev.seq > after {
                    stopped = Some(ReadPos {
                        segment: *first,
                        offset: end,
                        next_seq: ev.seq + 1,
                    });
                    out.push(ev);
                }
                out.len() < max
            });
            match res {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(segment = %path.display(), error = %e, "event journal segment unreadable");
                    break;
                }
            }
        }
        (out, stopped)
    }
}

/// Where a read of the journal stopped: the segment (by its first seq),
/// the offset of the next record in it and that record's seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPos {
    segment: u64,
    offset: u64,
    next_seq: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use codeb_proto::v1::{CallEnded, event};

    use super::*;

    fn ev(call: &str) -> Event {
        Event {
            call_id: call.into(),
            at_unix_ms: 1_700_000_000_000,
            kind: Some(event::Kind::Ended(CallEnded {
                outcome: "busy".into(),
                sip_status: 486,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    const BIG: Limits = Limits {
        max_events: 1_000_000,
        max_bytes: 1 << 30,
    };

    /// Segment files in `d`.
    fn segs(d: &Path) -> usize {
        fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("seg-")
            })
            .count()
    }

    fn seqs(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn appends_number_without_gaps_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), BIG).unwrap();
        let id = j.id().to_owned();
        assert_eq!(id.len(), 32);
        let w = j.append(vec![ev("a"), ev("b")]).unwrap();
        assert_eq!(seqs(&w), [1, 2]);
        assert!(w.iter().all(|e| e.journal_id == id));
        let w = j.append(vec![ev("c")]).unwrap();
        assert_eq!(seqs(&w), [3]);
        drop(j);
        let mut j = Journal::open(dir.path(), BIG).unwrap();
        assert_eq!(j.id(), id, "the id is kept");
        assert_eq!(j.last_seq(), 3);
        let back = j.view().read_after(0, 100);
        assert_eq!(seqs(&back), [1, 2, 3]);
        assert_eq!(back[2].call_id, "c");
        assert_eq!(back[0], w0(&back[0]));
        assert_eq!(seqs(&j.append(vec![ev("d")]).unwrap()), [4]);
        assert_eq!(seqs(&j.view().read_after(2, 100)), [3, 4]);
        assert_eq!(seqs(&j.view().read_after(0, 2)), [1, 2]);
    }

    fn w0(e: &Event) -> Event {
        let mut x = ev("a");
        x.seq = 1;
        x.journal_id = e.journal_id.clone();
        x
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_the_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), BIG).unwrap();
        j.append(vec![ev("a"), ev("b"), ev("c")]).unwrap();
        let seg = dir.path().join(segment_name(1));
        let full = fs::read(&seg).unwrap();
        drop(j);
        // Half of the last record: a crash mid-write.
        let rec = full.len() / 3;
        fs::write(&seg, &full[..full.len() - rec / 2]).unwrap();
        let mut j = Journal::open(dir.path(), BIG).unwrap();
        assert_eq!(j.last_seq(), 2);
        assert_eq!(
            fs::metadata(&seg).unwrap().len() as usize,
            full.len() - rec,
            "truncated at the last good record"
        );
        assert_eq!(seqs(&j.append(vec![ev("c2")]).unwrap()), [3]);
        drop(j);
        // A flipped bit in the last record: its CRC fails.
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        let j = Journal::open(dir.path(), BIG).unwrap();
        assert_eq!(j.last_seq(), 2);
        // Garbage appended (a length far too large): cut, no panic.
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0xff; 5]).unwrap();
        drop(f);
        let j = Journal::open(dir.path(), BIG).unwrap();
        assert_eq!(j.last_seq(), 2);
        assert_eq!(seqs(&j.view().read_after(0, 10)), [1, 2]);
    }

    #[test]
    fn ack_forgets_events_deletes_segments_and_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        // 4 KiB segments: a few dozen events each.
        let small = Limits {
            max_events: 1_000_000,
            max_bytes: 32 << 10,
        };
        let mut j = Journal::open(dir.path(), small).unwrap();
        for _ in 0..20 {
            j.append((0..10).map(|_| ev("x")).collect()).unwrap();
        }
        assert_eq!(j.last_seq(), 200);
        let before = segs(dir.path());
        assert!(before > 2, "{before} segments");
        j.ack(150).unwrap();
        assert!(segs(dir.path()) < before, "acknowledged segments deleted");
        assert_eq!(j.retained(), 50);
        assert_eq!(seqs(&j.view().read_after(0, 1000)).first(), Some(&151));
        j.ack(100).unwrap();
        assert_eq!(j.acked(), 150, "an older ack changes nothing");
        drop(j);
        let mut j = Journal::open(dir.path(), small).unwrap();
        assert_eq!(j.acked(), 150);
        assert_eq!(j.view().read_after(0, 1000).len(), 50);
        // Everything acknowledged: no segment left, the sequence goes on.
        j.ack(u64::MAX).unwrap();
        assert_eq!(j.acked(), 200, "bounded by what was written");
        assert_eq!(segs(dir.path()), 0);
        assert_eq!(j.retained(), 0);
        drop(j);
        let mut j = Journal::open(dir.path(), small).unwrap();
        assert_eq!(j.last_seq(), 200);
        assert_eq!(seqs(&j.append(vec![ev("y")]).unwrap()), [201]);
        assert_eq!(seqs(&j.view().read_after(0, 10)), [201]);
    }

    #[test]
    fn bounds_make_it_full_then_drop_past_the_hard_bound() {
        let dir = tempfile::tempdir().unwrap();
        let lim = Limits {
            max_events: 16,
            max_bytes: 1 << 30,
        };
        let mut j = Journal::open(dir.path(), lim).unwrap();
        j.append((0..15).map(|_| ev("x")).collect()).unwrap();
        assert!(!j.is_full());
        j.append(vec![ev("x")]).unwrap();
        assert!(j.is_full(), "full at the soft bound");
        // Calls in progress still record, up to 16 + 16/8 = 18.
        let w = j.append((0..5).map(|_| ev("x")).collect()).unwrap();
        assert_eq!(seqs(&w), [17, 18]);
        assert_eq!(j.dropped, 3);
        j.ack(10).unwrap();
        assert!(!j.is_full());
        assert_eq!(seqs(&j.append(vec![ev("x")]).unwrap()), [19], "no gap");

        let dir = tempfile::tempdir().unwrap();
        let by_bytes = Limits {
            max_events: 1_000_000,
            max_bytes: 8192,
        };
        let mut j = Journal::open(dir.path(), by_bytes).unwrap();
        while !j.is_full() {
            j.append(vec![ev("x")]).unwrap();
        }
        assert!(j.retained_bytes() >= 8192);
    }

    /// A reader that goes on from where its last read stopped gets every
    /// event once and in order, across segments, and after an
    /// acknowledgement deleted the segment its position was in.
    #[test]
    fn reads_go_on_from_where_the_last_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let small = Limits {
            max_events: 1_000_000,
            max_bytes: 64 * 1024,
        };
        let mut j = Journal::open(dir.path(), small).unwrap();
        for _ in 0..30 {
            j.append((0..20).map(|_| ev("x")).collect()).unwrap();
        }
        assert!(segs(dir.path()) > 2);
        let view = j.view();
        let (mut after, mut pos, mut got) = (0, None, Vec::new());
        loop {
            let (batch, p) = view.read_from(after, 7, pos);
            if batch.is_empty() {
                break;
            }
            after = batch.last().unwrap().seq;
            got.extend(seqs(&batch));
            pos = p;
        }
        assert_eq!(got, (1..=600).collect::<Vec<_>>());
        // Mid-way, the segment of its position acknowledged and deleted.
        let (batch, pos) = view.read_from(0, 5, None);
        assert_eq!(seqs(&batch), [1, 2, 3, 4, 5]);
        j.ack(300).unwrap();
        let view = j.view();
        let (batch, _) = view.read_from(5, 3, pos);
        assert_eq!(seqs(&batch), [301, 302, 303]);
        // A position for another point is not taken.
        let (_, pos) = view.read_from(400, 2, None);
        let (batch, _) = view.read_from(310, 2, pos);
        assert_eq!(seqs(&batch), [311, 312]);
    }

    /// A write that fails halfway (a full disk) leaves nothing behind:
    /// the events come back unnumbered, the next batch takes their numbers
    /// and is readable after those before it, now and after a reopen.
    #[test]
    fn a_failed_write_leaves_the_journal_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let small = Limits {
            max_events: 1_000_000,
            max_bytes: 1 << 30,
        };
        let mut j = Journal::open(dir.path(), small).unwrap();
        assert_eq!(seqs(&j.append(vec![ev("a"), ev("b")]).unwrap()), [1, 2]);
        j.fail_next_write = Some(10);
        let failed = j.append(vec![ev("c"), ev("d")]).unwrap_err();
        assert_eq!(failed.events.len(), 2);
        assert!(
            failed
                .events
                .iter()
                .all(|e| e.seq == 0 && e.journal_id.is_empty())
        );
        assert_eq!(j.last_seq(), 2);
        assert_eq!(seqs(&j.append(failed.events).unwrap()), [3, 4]);
        assert_eq!(seqs(&j.view().read_after(0, 10)), [1, 2, 3, 4]);
        drop(j);
        let mut j = Journal::open(dir.path(), small).unwrap();
        assert_eq!(seqs(&j.view().read_after(0, 10)), [1, 2, 3, 4]);
        // A failure in a batch that opens a new segment removes it.
        let segments = segs(dir.path());
        j.file = None;
        j.fail_next_write = Some(3);
        assert!(j.append(vec![ev("e")]).is_err());
        assert_eq!(segs(dir.path()), segments);
        assert_eq!(seqs(&j.append(vec![ev("e")]).unwrap()), [5]);
        assert_eq!(seqs(&j.view().read_after(0, 10)), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_lost_id_starts_a_new_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), BIG).unwrap();
        let id = j.id().to_owned();
        j.append(vec![ev("a")]).unwrap();
        drop(j);
        fs::remove_file(dir.path().join("journal_id")).unwrap();
        let j = Journal::open(dir.path(), BIG).unwrap();
        assert_ne!(j.id(), id);
        assert_eq!(j.last_seq(), 0);
        assert!(j.view().read_after(0, 10).is_empty());
    }
}
