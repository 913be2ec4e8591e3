//! What `pgkraft fleet status` shows: each database's state, memory and
//! last wake, as the supervisor keeps them ([`Record`]) and as it answers
//! on its control socket ([`Status`], one JSON document), and the table
//! made of that document without `--json`.

use std::ops::Range;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its turn to boot, or booted and not yet accepting
    /// connections.
    Booting,
    /// Accepting connections (or woken to shut down).
    Running,
    /// Its RAM in its memory file; the next connection wakes it.
    Hibernated,
    /// Ended cleanly.
    Stopped,
    /// Could not boot, died, or ended with another status than 0.
    Failed,
}

impl State {
    pub fn ended(self) -> bool {
        matches!(self, State::Stopped | State::Failed)
    }

    fn word(self) -> &'static str {
        match self {
            State::Booting => "booting",
            State::Running => "running",
            State::Hibernated => "hibernated",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// One database as the supervisor keeps it.
pub struct Record {
    pub name: String,
    pub listen: std::net::SocketAddr,
    pub memory_mib: u32,
    pub state: State,
    pub error: Option<String>,
    /// Where its guest RAM lies in this process while it runs (none when
    /// hibernated or ended).
    pub ram: Vec<Range<usize>>,
    /// The data bytes of its last hibernation's memory file.
    pub memory_file_bytes: Option<u64>,
    pub hibernations: u64,
    pub wakes: u64,
    pub last_wake: Option<LastWake>,
}

impl Record {
    pub fn new(name: String, listen: std::net::SocketAddr, memory_mib: u32) -> Record {
        Record {
            name,
            listen,
            memory_mib,
            state: State::Booting,
            error: None,
            ram: Vec::new(),
            memory_file_bytes: None,
            hibernations: 0,
            wakes: 0,
            last_wake: None,
        }
    }

    fn status(&self, vmas: &[Vma], present: &mut dyn FnMut(Range<usize>) -> u64) -> DatabaseStatus {
        DatabaseStatus {
            name: self.name.clone(),
            listen: self.listen.to_string(),
            port: self.listen.port(),
            state: self.state,
            error: self.error.clone(),
            memory: Memory {
                memory_mib: self.memory_mib,
                guest_resident_bytes: resident_in(vmas, &self.ram, present),
                memory_file_bytes: self.memory_file_bytes,
            },
            hibernations: self.hibernations,
            wakes: self.wakes,
            last_wake: self.last_wake.clone(),
        }
    }
}

/// The supervisor's answer to `status`.
#[derive(Serialize, Deserialize)]
pub struct Status {
    /// The fleet file.
    pub file: String,
    pub pid: u32,
    /// The supervisor's resident memory: its own and every running guest's.
    pub rss_bytes: Option<u64>,
    pub databases: Vec<DatabaseStatus>,
}

#[derive(Serialize, Deserialize)]
pub struct DatabaseStatus {
    pub name: String,
    pub listen: String,
    pub port: u16,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub memory: Memory,
    pub hibernations: u64,
    pub wakes: u64,
    pub last_wake: Option<LastWake>,
}

#[derive(Serialize, Deserialize)]
pub struct Memory {
    /// Guest RAM as configured.
    pub memory_mib: u32,
    /// Host memory resident behind guest RAM now: 0 unless it runs.
    pub guest_resident_bytes: u64,
    /// Bytes of data in its memory file on disk (the last hibernation's;
    /// a woken guest's RAM is mapped from it).
    pub memory_file_bytes: Option<u64>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct LastWake {
    /// When the wake began (the client's connection seen), Unix ms.
    pub at_unix_ms: u64,
    /// `connection` or `signal`.
    pub cause: String,
    pub restore_ms: f64,
    /// From the wake's start to the guest's first bytes to a client
    /// (none until then, or if none came within 10 s).
    pub first_answer_ms: Option<f64>,
}

/// `at` as Unix milliseconds.
pub fn unix_ms(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// The status document of `records`, memory read now.
pub fn document<'a>(file: &str, records: impl Iterator<Item = &'a Record>) -> Status {
    let records: Vec<&Record> = records.collect();
    let vmas = if records.iter().any(|r| !r.ram.is_empty()) {
        read_smaps()
    } else {
        Vec::new()
    };
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").ok();
    let mut present = |r: Range<usize>| pagemap_present(&mut pagemap, r);
    Status {
        file: file.to_string(),
        pid: std::process::id(),
        rss_bytes: crate::serve::rss_bytes(),
        databases: records
            .iter()
            .map(|r| r.status(&vmas, &mut present))
            .collect(),
    }
}

/// One mapping of this process and its resident bytes.
struct Vma {
    range: Range<usize>,
    rss: u64,
}

/// This process's mappings with their `Rss`, from /proc/self/smaps.
fn read_smaps() -> Vec<Vma> {
    let Ok(text) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    parse_smaps(&text)
}

fn parse_smaps(text: &str) -> Vec<Vma> {
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            vmas.push(Vma {
                range: a..b,
                rss: 0,
            });
        } else if let Some(kb) = line.strip_prefix("Rss:")
            && let Some(v) = vmas.last_mut()
        {
            v.rss = kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                * 1024;
        }
    }
    vmas
}

/// Resident bytes of guest RAM at `ranges`. Guest RAM is one mapping, or
/// after a wake several (the memory file's regions mapped over it); the
/// kernel may merge an anonymous one with a neighbour of the same kind
/// (another VM's RAM), so a mapping reaching out of `ranges` has its pages
/// counted one by one (`present`), not its `Rss`.
fn resident_in(
    vmas: &[Vma],
    ranges: &[Range<usize>],
    present: &mut dyn FnMut(Range<usize>) -> u64,
) -> u64 {
    let mut bytes = 0;
    for r in ranges {
        for v in vmas {
            let (start, end) = (v.range.start.max(r.start), v.range.end.min(r.end));
            if start >= end || v.rss == 0 {
                continue;
            }
            bytes += match start == v.range.start && end == v.range.end {
                true => v.rss,
                false => present(start..end),
            };
        }
    }
    bytes
}

/// Bytes of the pages present in memory at `range` of this process, from
/// /proc/self/pagemap (one 64-bit entry per 4 KiB page, bit 63: present).
fn pagemap_present(pagemap: &mut Option<std::fs::File>, range: Range<usize>) -> u64 {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let Some(file) = pagemap else { return 0 };
    let mut present = 0;
    let mut buf = vec![0u8; 8 * 4096];
    let mut page = range.start / PAGE;
    let last = range.end.div_ceil(PAGE);
    while page < last {
        let n = (last - page).min(buf.len() / 8);
        let Ok(()) = file.read_exact_at(&mut buf[..n * 8], (page * 8) as u64) else {
            return present;
        };
        present += buf[..n * 8]
            .chunks_exact(8)
            .filter(|e| e[7] & 0x80 != 0)
            .count() as u64;
        page += n;
    }
    present * PAGE as u64
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The document as a table, for people.
pub fn table(s: &Status) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "LISTEN".into(),
        "STATE".into(),
        "GUEST MB".into(),
        "FILE MB".into(),
        "WAKES".into(),
        "LAST WAKE".into(),
        "FIRST ANSWER".into(),
    ]];
    for d in &s.databases {
        let ago = d.last_wake.as_ref().map(|w| {
            let now = unix_ms(Instant::now());
            format!(
                "{:.1} s ago",
                now.saturating_sub(w.at_unix_ms) as f64 / 1000.0
            )
        });
        rows.push([
            d.name.clone(),
            d.listen.clone(),
            d.state.word().into(),
            mb(d.memory.guest_resident_bytes),
            d.memory.memory_file_bytes.map_or("-".into(), mb),
            d.wakes.to_string(),
            ago.unwrap_or_else(|| "-".into()),
            d.last_wake
                .as_ref()
                .and_then(|w| w.first_answer_ms)
                .map_or("-".into(), |ms| format!("{ms:.1} ms")),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for d in s.databases.iter().filter(|d| d.error.is_some()) {
        out.push_str(&format!(
            "{} failed: {}\n",
            d.name,
            d.error.as_deref().unwrap_or_default()
        ));
    }
    let count = |st: State| s.databases.iter().filter(|d| d.state == st).count();
    out.push_str(&format!(
        "{} databases: {} running, {} hibernated, {} booting, {} stopped, {} failed; \
         supervisor pid {} resident {} MB\n",
        s.databases.len(),
        count(State::Running),
        count(State::Hibernated),
        count(State::Booting),
        count(State::Stopped),
        count(State::Failed),
        s.pid,
        s.rss_bytes.map_or("?".into(), mb),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                 512 kB
Pss:                 512 kB
7f0000200000-7f0000400000 r--p 00200000 fd:00 123    /hib/memory.raw
Size:               2048 kB
Rss:                1024 kB
7f0000400000-7f0000600000 rw-p 00000000 00:00 0
Rss:                   8 kB
VmFlags: rd wr mr mw me ac
";

    #[test]
    fn resident_sums_the_mappings_inside_guest_ram() {
        let vmas = parse_smaps(SMAPS);
        assert_eq!(vmas.len(), 3);
        let mut never = |r: Range<usize>| panic!("{r:x?} lies inside one mapping");
        let ram = vec![0x7f00_0000_0000..0x7f00_0040_0000, 0x1000..0x2000];
        assert_eq!(resident_in(&vmas, &ram, &mut never), (512 + 1024) * 1024);
        assert_eq!(resident_in(&vmas, &[], &mut never), 0);
        // Guest RAM merged with its neighbour's: its part is counted by page.
        let mut asked = Vec::new();
        let mut by_page = |r: Range<usize>| {
            asked.push(r.clone());
            4096
        };
        let ram = std::slice::from_ref(&(0x7f00_0010_0000..0x7f00_0030_0000));
        assert_eq!(resident_in(&vmas, ram, &mut by_page), 4096 * 2);
        assert_eq!(
            asked,
            [
                0x7f00_0010_0000..0x7f00_0020_0000,
                0x7f00_0020_0000..0x7f00_0030_0000
            ]
        );
    }

    #[test]
    fn pagemap_sees_what_this_process_touched() {
        let touched = vec![1u8; 64 * 4096];
        let start = touched.as_ptr() as usize;
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").ok();
        let whole_pages = start.next_multiple_of(4096)..(start + touched.len()) / 4096 * 4096;
        let n = whole_pages.len() as u64;
        assert_eq!(pagemap_present(&mut pagemap, whole_pages), n);
        assert_eq!(pagemap_present(&mut None, 0..4096), 0);
    }

    #[test]
    fn the_document_reads_back_and_makes_a_table() {
        let mut r = Record::new("db1".into(), "127.0.0.1:16001".parse().unwrap(), 128);
        r.state = State::Hibernated;
        r.memory_file_bytes = Some(27_000_000);
        r.wakes = 2;
        r.last_wake = Some(LastWake {
            at_unix_ms: unix_ms(Instant::now()),
            cause: "connection".into(),
            restore_ms: 1.0,
            first_answer_ms: Some(30.5),
        });
        let mut f = Record::new("db2".into(), "[::1]:16002".parse().unwrap(), 64);
        f.state = State::Failed;
        f.error = Some("the guest died".into());
        let doc = document("fleet.yaml", [&r, &f].into_iter());
        let text = serde_json::to_string(&doc).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back.databases[0].state, State::Hibernated);
        assert_eq!(back.databases[0].memory.guest_resident_bytes, 0);
        assert_eq!(back.databases[1].port, 16002);
        let t = table(&back);
        assert!(
            t.contains("db1") && t.contains("hibernated") && t.contains("30.5 ms"),
            "{t}"
        );
        assert!(t.contains("db2 failed: the guest died"), "{t}");
        assert!(t.contains("1 hibernated") && t.contains("1 failed"), "{t}");
    }
}
