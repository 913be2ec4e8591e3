//! The fleet file: which databases one supervisor runs, read and checked
//! whole before anything starts. Errors are the recipe's
//! ([`crate::recipe::Diagnostic`]): the file, line and column, the field
//! (`databases[2].port`), the database by name, and the fix.
//!
//! ```yaml
//! defaults: { image: images/postgres-17.img, memory_mib: 128, idle_timeout: 30s }
//! control: fleet.sock            # default: FILE with .sock
//! logs: fleet.logs               # default: FILE with .logs; NAME.log each
//! databases:
//!   - name: db1
//!     volume: vols/db1           # optional; hibernate_dir then defaults to vols/db1.hibernate
//!     port: 16001                # 127.0.0.1:16001, or listen: "[::1]:16001"
//!   - name: db2                  # in memory: its RAM is its data
//!     hibernate_dir: hib/db2
//!     port: 16002
//! ```
//!
//! Relative paths start at the file's directory.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::recipe::{Diagnostic, FieldInfo, RecipeError};
use crate::vmm;

const WHAT: &str = "fleet file";

/// Longest path a unix socket takes (`sun_path`, 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A fleet file, checked: every path absolute.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The file, canonical.
    pub file: PathBuf,
    /// The supervisor's control socket (`pgkraft fleet status`).
    pub control: PathBuf,
    /// Each database's server log goes to `logs/NAME.log`.
    pub logs: PathBuf,
    pub databases: Vec<Database>,
}

#[derive(Clone, Debug)]
pub struct Database {
    pub name: String,
    pub image: PathBuf,
    pub volume: Option<PathBuf>,
    /// With an idle timeout: when and where it hibernates.
    pub hibernate: Option<vmm::HibernateConfig>,
    /// The host address its clients connect to (guest port 5432).
    pub listen: SocketAddr,
    /// None: the image's (its recipe's `vm.memory_mib`).
    pub memory_mib: Option<u32>,
}

impl Database {
    pub fn publish(&self) -> vmm::PublishRule {
        vmm::PublishRule {
            host: self.listen,
            guest_port: 5432,
        }
    }

    pub fn log(&self, fleet: &Fleet) -> PathBuf {
        fleet.logs.join(format!("{}.log", self.name))
    }
}

// The YAML shape. Spanned values remember where they were written, for
// the checks serde cannot make.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    defaults: RawDefaults,
    control: Option<Spanned<String>>,
    logs: Option<Spanned<String>>,
    databases: Spanned<Vec<RawDatabase>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    image: Option<Spanned<String>>,
    memory_mib: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: Spanned<String>,
    image: Option<Spanned<String>>,
    volume: Option<Spanned<String>>,
    hibernate_dir: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    listen: Option<Spanned<String>>,
    memory_mib: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<String>>,
}

const FIELDS: &[FieldInfo] = &[
    FieldInfo::new(
        "",
        "a mapping with `databases` and optionally `defaults`, `control`, `logs`",
        "databases:\n  - name: db1\n    image: postgres-17.img\n    port: 16001\n    \
         hibernate_dir: hib/db1\n    idle_timeout: 30s",
    ),
    FieldInfo::new(
        "defaults",
        "a mapping with any of `image`, `memory_mib`, `idle_timeout`",
        "defaults: { image: postgres-17.img, memory_mib: 128, idle_timeout: 30s }",
    ),
    FieldInfo::new(
        "defaults.image",
        "an image path (a string)",
        "image: images/postgres-17.img",
    ),
    FieldInfo::new(
        "defaults.memory_mib",
        "a whole number of MiB from 16 to 65536",
        "memory_mib: 128",
    ),
    FieldInfo::new(
        "defaults.idle_timeout",
        "a duration such as 500ms, 30s or 5m",
        "idle_timeout: 30s",
    ),
    FieldInfo::new(
        "control",
        "a path for the control socket (a string)",
        "control: fleet.sock",
    ),
    FieldInfo::new(
        "logs",
        "a directory for the databases' logs (a string)",
        "logs: fleet.logs",
    ),
    FieldInfo::new(
        "databases",
        "a list of databases, each a mapping with at least `name` and `port`",
        "databases:\n  - name: db1\n    port: 16001",
    ),
    FieldInfo::new(
        "databases[]",
        "a mapping with at least `name` and `port`",
        "- name: db1\n  port: 16001",
    ),
    FieldInfo::new(
        "databases[].name",
        "a name of lowercase letters, digits, '_' and '-'",
        "name: db1",
    ),
    FieldInfo::new(
        "databases[].image",
        "an image path (a string)",
        "image: images/postgres-17.img",
    ),
    FieldInfo::new(
        "databases[].volume",
        "a directory for the data (a string)",
        "volume: vols/db1",
    ),
    FieldInfo::new(
        "databases[].hibernate_dir",
        "a directory for the hibernated RAM (a string)",
        "hibernate_dir: hib/db1",
    ),
    FieldInfo::new(
        "databases[].port",
        "a TCP port from 1 to 65535",
        "port: 16001",
    ),
    FieldInfo::new(
        "databases[].listen",
        "a host address with its port (a string)",
        "listen: \"[::1]:16001\"",
    ),
    FieldInfo::new(
        "databases[].memory_mib",
        "a whole number of MiB from 16 to 65536",
        "memory_mib: 128",
    ),
    FieldInfo::new(
        "databases[].idle_timeout",
        "a duration such as 500ms, 30s or 5m",
        "idle_timeout: 30s",
    ),
];

/// Reads and checks the fleet file at `path`: every database named once,
/// on a port of its own, with an image that is there and directories no
/// other database uses.
pub fn load(path: &Path) -> Result<Fleet, RecipeError> {
    let (text, file) = crate::recipe::read(path, WHAT)?;
    let raw: RawFleet = crate::recipe::parse_yaml(path, &text, WHAT, FIELDS)?;
    Checker {
        shown: path,
        dir: file.parent().unwrap_or(Path::new("/")).to_path_buf(),
        text: &text,
    }
    .check(raw, file)
}

/// The control socket the fleet file names, without checking the rest
/// (`pgkraft fleet status FILE`: the file may have changed since).
pub fn control_socket(path: &Path) -> Result<PathBuf, RecipeError> {
    let (text, file) = crate::recipe::read(path, WHAT)?;
    let raw: RawFleet = crate::recipe::parse_yaml(path, &text, WHAT, FIELDS)?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    Ok(match &raw.control {
        Some(c) => dir.join(&c.value),
        None => file.with_extension("sock"),
    })
}

struct Checker<'a> {
    /// The path as the user gave it (messages use this).
    shown: &'a Path,
    /// The file's canonical directory: relative paths start here.
    dir: PathBuf,
    text: &'a str,
}

impl Checker<'_> {
    fn bad(
        &self,
        at: Option<Location>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> RecipeError {
        let d = Diagnostic::new(self.shown, message);
        let d = match at {
            Some(l) => d.at(self.text, l.line(), Some(l.column())),
            None => d,
        };
        RecipeError::Invalid(Box::new(d.field(field).fix(fix)))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn check(&self, raw: RawFleet, file: PathBuf) -> Result<Fleet, RecipeError> {
        let control = match &raw.control {
            Some(c) => self.path(&c.value),
            None => file.with_extension("sock"),
        };
        if control.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(self.bad(
                raw.control.as_ref().map(|c| c.referenced),
                "control",
                format!(
                    "the control socket's path {} is longer than a unix socket takes \
                     ({MAX_SOCKET_PATH} bytes)",
                    control.display()
                ),
                "give a shorter one, e.g. `control: /tmp/fleet.sock`",
            ));
        }
        let logs = match &raw.logs {
            Some(l) => self.path(&l.value),
            None => file.with_extension("logs"),
        };
        let memory_default = match &raw.defaults.memory_mib {
            Some(m) => Some(self.memory("defaults.memory_mib", "the defaults", m)?),
            None => None,
        };
        let timeout_default = match &raw.defaults.idle_timeout {
            Some(t) => Some(self.timeout("defaults.idle_timeout", "the defaults", t)?),
            None => None,
        };
        if raw.databases.value.is_empty() {
            return Err(self.bad(
                Some(raw.databases.referenced),
                "databases",
                "the fleet has no databases",
                "list at least one, e.g.\ndatabases:\n  - name: db1\n    port: 16001",
            ));
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ports: HashMap<u16, String> = HashMap::new();
        // Directories a database writes: no two may share one.
        let mut dirs: HashMap<PathBuf, (String, &'static str)> = HashMap::new();
        let mut databases = Vec::new();
        for (i, db) in raw.databases.value.iter().enumerate() {
            let at = |field: &str| format!("databases[{i}].{field}");
            let name = db.name.value.clone();
            if let Some(why) = name_problem(&name) {
                return Err(self.bad(
                    Some(db.name.referenced),
                    at("name"),
                    format!("database name {name:?} {why}"),
                    "use lowercase letters, digits, '_' and '-' (at most 63), e.g. `name: db1`",
                ));
            }
            if let Some(first) = names.insert(name.clone(), i) {
                return Err(self.bad(
                    Some(db.name.referenced),
                    at("name"),
                    format!("database `{name}` is named twice (databases[{first}] and here)"),
                    "give each database a name of its own",
                ));
            }
            let who = format!("database `{name}`");
            let image = match db.image.as_ref().or(raw.defaults.image.as_ref()) {
                Some(image) => {
                    let p = self.path(&image.value);
                    if !p.is_file() {
                        let field = if db.image.is_some() {
                            at("image")
                        } else {
                            "defaults.image".into()
                        };
                        return Err(self.bad(
                            Some(image.referenced),
                            field,
                            format!("{who}: image {} does not exist", p.display()),
                            format!(
                                "build it (`pgkraft build recipes/postgres-17.yaml --out DIR`) \
                                 or correct the path (relative paths start at {})",
                                self.dir.display()
                            ),
                        ));
                    }
                    p
                }
                None => {
                    return Err(self.bad(
                        Some(db.name.referenced),
                        at("image"),
                        format!("{who} names no image"),
                        "add `image: PATH` to it, or to `defaults` for every database",
                    ));
                }
            };
            let listen = self.listen(i, &who, db)?;
            if let Some(other) = ports.insert(listen.port(), name.clone()) {
                let l = db.port.as_ref().map(|p| p.referenced);
                let l = l.or(db.listen.as_ref().map(|p| p.referenced));
                return Err(self.bad(
                    l,
                    if db.port.is_some() {
                        at("port")
                    } else {
                        at("listen")
                    },
                    format!(
                        "{who}: port {} is database `{other}`'s already",
                        listen.port()
                    ),
                    "give each database a port of its own",
                ));
            }
            let memory_mib = match &db.memory_mib {
                Some(m) => Some(self.memory(&at("memory_mib"), &who, m)?),
                None => memory_default,
            };
            let timeout = match &db.idle_timeout {
                Some(t) => Some(self.timeout(&at("idle_timeout"), &who, t)?),
                None => timeout_default,
            };
            let volume = db.volume.as_ref().map(|v| self.path(&v.value));
            let hibernate = match (timeout, &db.hibernate_dir) {
                (None, Some(h)) => {
                    return Err(self.bad(
                        Some(h.referenced),
                        at("hibernate_dir"),
                        format!(
                            "{who} has a hibernate_dir but no idle_timeout: it never hibernates"
                        ),
                        "add `idle_timeout: 30s` to it (or to `defaults`), or remove hibernate_dir",
                    ));
                }
                (None, None) => None,
                (Some(after), dir) => {
                    let dir = dir.as_ref().map(|d| self.path(&d.value));
                    match crate::serve::hibernate_config(
                        after,
                        crate::vmm::IdlePolicy::Connections,
                        dir,
                        volume.as_deref(),
                    ) {
                        Ok(h) => Some(h),
                        Err(_) => {
                            return Err(self.bad(
                                Some(db.name.referenced),
                                at("hibernate_dir"),
                                format!(
                                    "{who} keeps its data in memory and hibernates: its RAM \
                                     needs a directory"
                                ),
                                format!(
                                    "add `hibernate_dir: hib/{name}`, or a `volume: vols/{name}` \
                                     (its RAM then goes to vols/{name}.hibernate)"
                                ),
                            ));
                        }
                    }
                }
            };
            let written = [
                volume.clone().map(|v| (v, "volume", db.volume.as_ref())),
                hibernate.as_ref().map(|h| {
                    (
                        h.dir.clone(),
                        "hibernate_dir",
                        db.hibernate_dir.as_ref().or(db.volume.as_ref()),
                    )
                }),
            ];
            for (dir, field, spanned) in written.into_iter().flatten() {
                if let Some((other, its)) = dirs.insert(dir.clone(), (name.clone(), field)) {
                    return Err(self.bad(
                        spanned.map(|s| s.referenced),
                        at(field),
                        format!(
                            "{who}: its {field} {} is database `{other}`'s {its} too",
                            dir.display()
                        ),
                        "give each database directories of its own",
                    ));
                }
            }
            databases.push(Database {
                name,
                image,
                volume,
                hibernate,
                listen,
                memory_mib,
            });
        }
        Ok(Fleet {
            file,
            control,
            logs,
            databases,
        })
    }

    fn listen(&self, i: usize, who: &str, db: &RawDatabase) -> Result<SocketAddr, RecipeError> {
        let at = |field: &str| format!("databases[{i}].{field}");
        let addr = match (&db.port, &db.listen) {
            (Some(p), Some(_)) => {
                return Err(self.bad(
                    Some(p.referenced),
                    at("port"),
                    format!("{who} has both `port` and `listen`"),
                    "keep one: `port: 16001` (on 127.0.0.1) or `listen: \"[::1]:16001\"`",
                ));
            }
            (None, None) => {
                return Err(self.bad(
                    Some(db.name.referenced),
                    at("port"),
                    format!("{who} has no port"),
                    "add `port: 16001` (on 127.0.0.1) or `listen: \"[::1]:16001\"`",
                ));
            }
            (Some(p), None) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p.value),
            (None, Some(l)) => l.value.parse::<SocketAddr>().map_err(|_| {
                self.bad(
                    Some(l.referenced),
                    at("listen"),
                    format!("{who}: {:?} is not an address with a port", l.value),
                    "write it as `listen: \"127.0.0.1:16001\"` or `listen: \"[::1]:16001\"`",
                )
            })?,
        };
        if addr.port() == 0 {
            let l = db.port.as_ref().map(|p| p.referenced);
            return Err(self.bad(
                l.or(db.listen.as_ref().map(|p| p.referenced)),
                at(if db.port.is_some() { "port" } else { "listen" }),
                format!("{who}: port 0 is no port clients could find"),
                "give a port from 1 to 65535, e.g. `port: 16001`",
            ));
        }
        Ok(addr)
    }

    fn memory(&self, field: &str, who: &str, m: &Spanned<u32>) -> Result<u32, RecipeError> {
        let range = crate::recipe::MEMORY_MIB_RANGE;
        if range.contains(&m.value) {
            return Ok(m.value);
        }
        Err(self.bad(
            Some(m.referenced),
            field,
            format!(
                "{who}: memory_mib {} is outside {} to {}",
                m.value,
                range.start(),
                range.end()
            ),
            "write e.g. `memory_mib: 128`",
        ))
    }

    fn timeout(
        &self,
        field: &str,
        who: &str,
        t: &Spanned<String>,
    ) -> Result<Duration, RecipeError> {
        crate::duration::parse(&t.value).map_err(|why| {
            self.bad(
                Some(t.referenced),
                field,
                format!("{who}: idle_timeout {why}"),
                "write e.g. `idle_timeout: 30s` or `idle_timeout: 500ms`",
            )
        })
    }
}

/// Why `name` cannot name a database, if it cannot: it names its log file
/// and its lines in `fleet status`.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > 63 {
        return Some("is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Some("has characters other than lowercase letters, digits, '_' and '-'");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with an "image" (any file will do for the spec) and
    /// `fleet.yaml` holding `text`.
    fn fleet(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.img"), b"not checked here").unwrap();
        let file = dir.path().join("fleet.yaml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    fn refused(text: &str, needles: &[&str]) {
        let (_dir, file) = fleet(text);
        let e = load(&file).unwrap_err().to_string();
        assert!(e.contains("fleet.yaml"), "names no file: {e}");
        assert!(e.contains("fix:"), "says no fix: {e}");
        for n in needles {
            assert!(e.contains(n), "lacks {n:?}: {e}");
        }
    }

    #[test]
    fn paths_start_at_the_file_and_defaults_fill_in() {
        let (dir, file) = fleet(
            "defaults: { image: pg.img, memory_mib: 128, idle_timeout: 30s }\n\
             databases:\n\
             - name: db1\n  volume: vols/db1\n  port: 16001\n\
             - name: db_2\n  hibernate_dir: hib/db2\n  listen: \"[::1]:16002\"\n  \
               memory_mib: 256\n  idle_timeout: 500ms\n\
             - name: db-3\n  port: 16003\n  hibernate_dir: /abs/hib\n",
        );
        let f = load(&file).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(f.control, root.join("fleet.sock"));
        assert_eq!(f.logs, root.join("fleet.logs"));
        let [a, b, c] = &f.databases[..] else {
            panic!("three databases")
        };
        assert_eq!(a.image, root.join("pg.img"));
        assert_eq!(a.volume, Some(root.join("vols/db1")));
        let h = a.hibernate.as_ref().unwrap();
        assert_eq!(h.dir, root.join("vols/db1.hibernate"));
        assert_eq!(h.after, Duration::from_secs(30));
        assert_eq!(a.listen, "127.0.0.1:16001".parse().unwrap());
        assert_eq!(a.memory_mib, Some(128));
        assert_eq!(b.listen, "[::1]:16002".parse().unwrap());
        assert_eq!(b.memory_mib, Some(256));
        assert_eq!(
            b.hibernate.as_ref().unwrap().after,
            Duration::from_millis(500)
        );
        assert_eq!(b.hibernate.as_ref().unwrap().dir, root.join("hib/db2"));
        assert_eq!(c.hibernate.as_ref().unwrap().dir, PathBuf::from("/abs/hib"));
        assert_eq!(a.log(&f), root.join("fleet.logs/db1.log"));
    }

    #[test]
    fn control_and_logs_may_be_named() {
        let (dir, file) = fleet(
            "control: run/f.sock\nlogs: /var/tmp/l\n\
             databases:\n- name: a\n  image: pg.img\n  port: 1\n",
        );
        let f = load(&file).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(f.control, root.join("run/f.sock"));
        assert_eq!(control_socket(&file).unwrap(), root.join("run/f.sock"));
        assert_eq!(f.logs, PathBuf::from("/var/tmp/l"));
        // Without an idle timeout a database never hibernates.
        assert!(f.databases[0].hibernate.is_none());
    }

    #[test]
    fn each_refusal_names_the_database_the_field_and_the_fix() {
        let db = |rest: &str| {
            format!("defaults: {{ image: pg.img, idle_timeout: 1s }}\ndatabases:\n{rest}")
        };
        refused(
            &db(
                "- name: a\n  port: 1\n  hibernate_dir: h/a\n- name: a\n  port: 2\n  hibernate_dir: h/b\n",
            ),
            &["databases[1].name", "`a` is named twice"],
        );
        refused(
            &db(
                "- name: a\n  port: 7\n  hibernate_dir: h/a\n- name: b\n  port: 7\n  hibernate_dir: h/b\n",
            ),
            &[
                "databases[1].port",
                "database `b`",
                "port 7 is database `a`'s",
            ],
        );
        refused(
            &db("- name: a\n  port: 1\n  image: nope.img\n  hibernate_dir: h/a\n"),
            &[
                "databases[0].image",
                "database `a`",
                "nope.img does not exist",
                "pgkraft build",
            ],
        );
        refused(
            &db("- name: a\n  port: 1\n"),
            &[
                "databases[0].hibernate_dir",
                "database `a`",
                "in memory",
                "hibernate_dir: hib/a",
            ],
        );
        refused(
            &db(
                "- name: a\n  port: 1\n  volume: v/a\n- name: b\n  port: 2\n  hibernate_dir: v/a.hibernate\n",
            ),
            &["databases[1].hibernate_dir", "database `a`'s hibernate_dir"],
        );
        refused(
            &db("- name: A!\n  port: 1\n  hibernate_dir: h/a\n"),
            &["databases[0].name", "lowercase"],
        );
        refused(
            &db("- name: a\n  port: 1\n  listen: \"[::1]:2\"\n  hibernate_dir: h/a\n"),
            &["databases[0].port", "both `port` and `listen`"],
        );
        refused(
            &db("- name: a\n  listen: localhost\n  hibernate_dir: h/a\n"),
            &["databases[0].listen", "not an address with a port"],
        );
        refused(
            &db("- name: a\n  hibernate_dir: h/a\n"),
            &["databases[0].port", "has no port"],
        );
        refused(
            &db("- name: a\n  port: 1\n  hibernate_dir: h/a\n  idle_timeout: soon\n"),
            &["databases[0].idle_timeout", "not a duration", "500ms"],
        );
        refused(
            &db("- name: a\n  port: 1\n  hibernate_dir: h/a\n  memory_mib: 8\n"),
            &["databases[0].memory_mib", "outside 16 to 65536"],
        );
        refused(
            &db("- name: a\n  port: 70000\n  hibernate_dir: h/a\n"),
            &["databases[0].port", "a TCP port from 1 to 65535"],
        );
        refused(
            &db("- name: a\n  prot: 1\n  hibernate_dir: h/a\n"),
            &["databases[0].prot", "did you mean `port`"],
        );
        refused(
            "databases:\n- name: a\n  port: 1\n  hibernate_dir: h/a\n  idle_timeout: 1s\n",
            &["databases[0].image", "names no image", "defaults"],
        );
        refused("databases: []\n", &["databases", "no databases"]);
    }

    #[test]
    fn a_duration_may_be_plain_seconds() {
        let (_dir, file) = fleet(
            "databases:\n- name: a\n  image: pg.img\n  port: 1\n  hibernate_dir: h\n  \
             idle_timeout: 2\n",
        );
        let f = load(&file).unwrap();
        let h = f.databases[0].hibernate.as_ref().unwrap();
        assert_eq!(h.after, Duration::from_secs(2));
    }
}
