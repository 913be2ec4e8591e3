//! build::select against synthetic install trees laid out as PostgreSQL 15
//! and 17 install them, and a synthetic cluster.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use pgkraft::build::rootfs::{self, Compression, RootfsOptions};
use pgkraft::build::select::{
    self, Choices, ExtensionFile, Layout, Reason, SelectError, SelectInput, Selection,
};

const TZIF: &[u8] = b"TZif2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// An installation as `make install` lays it out under the prefix, with a
/// share directory at `share_rel`. `major` picks the version differences
/// that matter here (15 has no system_functions.sql in this fixture, to
/// stand for files one version has and the other lacks).
fn install_tree(root: &Path, share_rel: &str, major: u32) {
    put(&root.join("bin/postgres"), b"\x7fELF server");
    put(&root.join("bin/initdb"), b"\x7fELF initdb");
    put(&root.join("lib/libpq.a"), b"!<arch>");
    put(&root.join("include/server/postgres.h"), b"/* */");
    let share = root.join(share_rel);
    for f in [
        "postgres.bki",
        "postgresql.conf.sample",
        "pg_hba.conf.sample",
        "pg_ident.conf.sample",
        "system_constraints.sql",
        "system_views.sql",
        "information_schema.sql",
        "sql_features.txt",
        "snowball_create.sql",
        "errcodes.txt",
        "psqlrc.sample",
    ] {
        put(&share.join(f), format!("-- {f}\n").as_bytes());
    }
    if major >= 17 {
        put(&share.join("system_functions.sql"), b"-- functions\n");
    }
    let tz = share.join("timezone");
    put(&tz.join("Etc/UTC"), TZIF);
    put(&tz.join("Europe/Paris"), TZIF);
    put(&tz.join("America/New_York"), TZIF);
    put(&tz.join("America/Argentina/Buenos_Aires"), TZIF);
    put(&tz.join("Broken"), b"not a zone file");
    symlink("Etc/UTC", tz.join("UTC")).unwrap();
    // zic may also hard-link; a hard link is just a file.
    fs::hard_link(tz.join("Etc/UTC"), tz.join("Zulu")).unwrap();

    let sets = share.join("timezonesets");
    put(
        &sets.join("Default"),
        b"# default set\nUTC 0\nCET 3600 # Central Europe\n",
    );
    put(
        &sets.join("Australia"),
        b"# Australia\n@INCLUDE Default\n@OVERRIDE\nACST 34200 D\n",
    );
    put(&sets.join("Loop"), b"@INCLUDE Loop\n");
    put(&sets.join("Africa.txt"), b"# reference only\n");

    let ext = share.join("extension");
    put(
        &ext.join("plpgsql.control"),
        b"# plpgsql extension\ncomment = 'PL/pgSQL procedural language'\ndefault_version = '1.0'\n\
          module_pathname = '$libdir/plpgsql'\nrelocatable = false\nschema = pg_catalog\n",
    );
    put(&ext.join("plpgsql--1.0.sql"), b"CREATE LANGUAGE plpgsql;\n");
    put(
        &ext.join("hstore.control"),
        b"comment = 'data type for storing sets of (key, value) pairs'\ndefault_version = '1.8'\n",
    );
    put(&ext.join("hstore--1.4.sql"), b"-- install\n");
    put(&ext.join("hstore--1.4--1.5.sql"), b"-- update\n");
    put(&ext.join("hstore--1.7--1.8.sql"), b"-- update\n");
    put(
        &ext.join("hstore_plperl.control"),
        b"requires = 'hstore,plperl'\n",
    );
    put(&ext.join("hstore_plperl--1.0.sql"), b"-- other extension\n");
    put(&ext.join("cube.control"), b"default_version = '1.5'\n");
    put(&ext.join("cube--1.2.sql"), b"-- install\n");
    put(&ext.join("cube--1.2--1.3.sql"), b"-- update\n");
    put(
        &ext.join("earthdistance.control"),
        b"default_version = '1.1'\nrequires = 'cube'\n",
    );
    put(&ext.join("earthdistance--1.1.sql"), b"-- install\n");
    put(&ext.join("broken.control"), b"default_version = '1.0'\n");
    put(&ext.join("broken--1.0--1.1.sql"), b"-- update only\n");
    put(
        &ext.join("moved.control"),
        b"default_version = '2.0'\ndirectory = 'moved_scripts' # relative to share\n",
    );
    put(&share.join("moved_scripts/moved--2.0.sql"), b"-- moved\n");
    put(&share.join("moved_scripts/moved--2.0.control"), b"# aux\n");

    put(&share.join("tsearch_data/english.stop"), b"a\nthe\n");
    put(
        &share.join("tsearch_data/synonym_sample.syn"),
        b"postgres pgsql\n",
    );
}

/// A cluster as initdb leaves it: 0700 directories, 0600 files, empty
/// directories the server needs, and what a server run leaves behind.
fn data_dir(root: &Path, major: u32) {
    fs::create_dir_all(root).unwrap();
    put(&root.join("PG_VERSION"), format!("{major}\n").as_bytes());
    put(&root.join("postgresql.conf"), b"max_connections = 20\n");
    put(&root.join("pg_hba.conf"), b"local all all scram-sha-256\n");
    put(&root.join("global/pg_control"), &[0u8; 64]);
    put(&root.join("base/1/1259"), &[0u8; 8192]);
    put(&root.join("pg_wal/000000010000000000000001"), &[0u8; 4096]);
    fs::create_dir_all(root.join("pg_tblspc")).unwrap();
    fs::create_dir_all(root.join("pg_notify")).unwrap();
    put(&root.join("postmaster.pid"), b"4242\n");
    put(&root.join("postmaster.opts"), b"postgres\n");
    for (p, mode) in [
        ("", 0o700),
        ("global", 0o700),
        ("base", 0o700),
        ("base/1", 0o700),
        ("pg_wal", 0o700),
        ("pg_tblspc", 0o700),
        ("pg_notify", 0o700),
        ("PG_VERSION", 0o600),
        ("postgresql.conf", 0o600),
        ("pg_hba.conf", 0o600),
        ("global/pg_control", 0o600),
        ("base/1/1259", 0o600),
        ("pg_wal/000000010000000000000001", 0o600),
    ] {
        chmod(&root.join(p), mode);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    install: PathBuf,
    data: PathBuf,
}

fn fixture(major: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let install = dir.path().join("destdir/usr/local/pgsql");
    install_tree(&install, "share", major);
    let data = dir.path().join("cluster");
    data_dir(&data, major);
    Fixture {
        _dir: dir,
        install,
        data,
    }
}

fn choices(major: u32) -> Choices {
    Choices {
        major,
        timezone: "UTC".into(),
        // The exact closures below list one zone; `None` (every zone) has
        // its own test.
        timezones: Some(Vec::new()),
        timezone_abbreviations: "Default".into(),
        extensions: vec!["plpgsql".into()],
        text_search: false,
        preinit: true,
    }
}

fn run(f: &Fixture, c: &Choices) -> Result<Selection, SelectError> {
    select::select(&SelectInput {
        install: &f.install,
        data_dir: c.preinit.then_some(f.data.as_path()),
        layout: &Layout::default(),
        choices: c,
    })
}

/// (image path, reason) of every entry.
fn listing(s: &Selection) -> Vec<(String, String)> {
    s.entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.reason.to_string()))
        .collect()
}

fn paths(s: &Selection) -> Vec<String> {
    s.entries
        .iter()
        .map(|e| e.path.display().to_string())
        .collect()
}

#[test]
fn default_closure_is_exactly_what_the_server_reads() {
    for major in [15, 17, 18] {
        let f = fixture(major);
        let s = run(&f, &choices(major)).unwrap();
        assert_eq!(s.share_dir, Path::new("/usr/local/pgsql/share"));
        assert_eq!(s.data_dir.as_deref(), Some(Path::new("/data")));
        let share = "/usr/local/pgsql/share";
        let data = "cluster: data directory";
        let want: Vec<(String, String)> = [
            ("/data", data),
            ("/data/PG_VERSION", data),
            ("/data/base", data),
            ("/data/base/1", data),
            ("/data/base/1/1259", data),
            ("/data/global", data),
            ("/data/global/pg_control", data),
            ("/data/pg_hba.conf", data),
            ("/data/pg_notify", data),
            ("/data/pg_tblspc", data),
            ("/data/pg_wal", data),
            ("/data/pg_wal/000000010000000000000001", data),
            ("/data/postgresql.conf", data),
            (
                &format!("{share}/extension/plpgsql--1.0.sql"),
                "extension plpgsql: install script plpgsql--1.0.sql",
            ),
            (
                &format!("{share}/extension/plpgsql.control"),
                "extension plpgsql: control file plpgsql.control",
            ),
            (
                &format!("{share}/timezone/UTC"),
                "timezone UTC (link to Etc/UTC)",
            ),
            (
                &format!("{share}/timezonesets/Default"),
                "timezonesets/Default (timezone_abbreviations, loaded at start)",
            ),
        ]
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect();
        assert_eq!(listing(&s), want, "PostgreSQL {major}");
    }
}

#[test]
fn linked_zone_ships_the_target_under_the_name() {
    let f = fixture(17);
    let s = run(&f, &choices(17)).unwrap();
    let utc = s
        .entries
        .iter()
        .find(|e| e.path.ends_with("timezone/UTC"))
        .unwrap();
    assert_eq!(
        utc.source,
        f.install
            .join("share/timezone/Etc/UTC")
            .canonicalize()
            .unwrap()
    );
    assert!(
        !fs::symlink_metadata(&utc.source)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(utc.mode, Some(select::SHARE_FILE_MODE));
    assert_eq!(
        utc.reason,
        Reason::TimeZone {
            zone: "UTC".into(),
            link_to: Some("Etc/UTC".into())
        }
    );
    // A hard link is an ordinary file.
    let mut c = choices(17);
    c.timezone = "Zulu".into();
    let s = run(&f, &c).unwrap();
    assert!(listing(&s).contains(&(
        "/usr/local/pgsql/share/timezone/Zulu".into(),
        "timezone Zulu".into()
    )));
}

#[test]
fn zones_are_matched_like_the_server_does() {
    let f = fixture(17);
    let mut c = choices(17);
    c.timezone = "europe/PARIS".into();
    let s = run(&f, &c).unwrap();
    let zone: Vec<_> = listing(&s)
        .into_iter()
        .filter(|(p, _)| p.contains("/timezone/"))
        .collect();
    assert_eq!(
        zone,
        [(
            "/usr/local/pgsql/share/timezone/Europe/Paris".to_owned(),
            "timezone Europe/Paris".to_owned()
        )]
    );
    c.timezone = "America/Argentina/Buenos_Aires".into();
    assert!(
        paths(&run(&f, &c).unwrap())
            .contains(&"/usr/local/pgsql/share/timezone/America/Argentina/Buenos_Aires".to_owned())
    );
}

#[test]
fn bad_zones() {
    let f = fixture(17);
    let mut c = choices(17);
    c.timezone = "Europe/Pari".into();
    let e = run(&f, &c).unwrap_err().to_string();
    assert!(e.contains("time zone `Europe/Pari` is not in"), "{e}");
    assert!(e.contains("did you mean `Europe/Paris`?"), "{e}");
    c.timezone = "Europe".into();
    let e = run(&f, &c).unwrap_err().to_string();
    assert!(e.contains("names a directory of zones"), "{e}");
    assert!(e.contains("e.g. `Europe/Paris`"), "{e}");
    c.timezone = "Broken".into();
    let e = run(&f, &c).unwrap_err();
    assert!(matches!(e, SelectError::NotTzif { .. }), "{e}");
}

#[test]
fn abbreviation_sets_follow_includes() {
    let f = fixture(17);
    let mut c = choices(17);
    c.timezone_abbreviations = "Australia".into();
    let s = run(&f, &c).unwrap();
    let sets: Vec<_> = listing(&s)
        .into_iter()
        .filter(|(p, _)| p.contains("/timezonesets/"))
        .collect();
    assert_eq!(
        sets,
        [
            (
                "/usr/local/pgsql/share/timezonesets/Australia".to_owned(),
                "timezonesets/Australia (timezone_abbreviations, loaded at start)".to_owned()
            ),
            (
                "/usr/local/pgsql/share/timezonesets/Default".to_owned(),
                "timezonesets/Default (included by timezonesets/Australia)".to_owned()
            ),
        ]
    );
    // A set that includes itself is selected once, not followed forever.
    c.timezone_abbreviations = "Loop".into();
    assert!(
        paths(&run(&f, &c).unwrap()).contains(&"/usr/local/pgsql/share/timezonesets/Loop".into())
    );
    c.timezone_abbreviations = "India".into();
    let e = run(&f, &c).unwrap_err().to_string();
    assert!(e.contains("abbreviation set `India` is not in"), "{e}");
}

#[test]
fn extensions_bring_their_scripts_and_requirements() {
    let f = fixture(17);
    let mut c = choices(17);
    c.extensions = vec!["earthdistance".into(), "hstore".into(), "plpgsql".into()];
    let s = run(&f, &c).unwrap();
    let ext: Vec<_> = listing(&s)
        .into_iter()
        .filter(|(p, _)| p.contains("/extension/"))
        .map(|(p, r)| (p.rsplit('/').next().unwrap().to_owned(), r))
        .collect();
    let want = [
        (
            "cube--1.2--1.3.sql",
            "extension cube (required by earthdistance): update script cube--1.2--1.3.sql",
        ),
        (
            "cube--1.2.sql",
            "extension cube (required by earthdistance): install script cube--1.2.sql",
        ),
        (
            "cube.control",
            "extension cube (required by earthdistance): control file cube.control",
        ),
        (
            "earthdistance--1.1.sql",
            "extension earthdistance: install script earthdistance--1.1.sql",
        ),
        (
            "earthdistance.control",
            "extension earthdistance: control file earthdistance.control",
        ),
        (
            "hstore--1.4--1.5.sql",
            "extension hstore: update script hstore--1.4--1.5.sql",
        ),
        (
            "hstore--1.4.sql",
            "extension hstore: install script hstore--1.4.sql",
        ),
        (
            "hstore--1.7--1.8.sql",
            "extension hstore: update script hstore--1.7--1.8.sql",
        ),
        (
            "hstore.control",
            "extension hstore: control file hstore.control",
        ),
        (
            "plpgsql--1.0.sql",
            "extension plpgsql: install script plpgsql--1.0.sql",
        ),
        (
            "plpgsql.control",
            "extension plpgsql: control file plpgsql.control",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(ext, want);
    // Listed and required: reported as listed.
    c.extensions = vec!["cube".into(), "earthdistance".into()];
    let s = run(&f, &c).unwrap();
    assert!(s.entries.iter().any(|e| e.reason
        == Reason::Extension {
            extension: "cube".into(),
            file: "cube.control".into(),
            role: ExtensionFile::Control,
            needed_by: None
        }));
}

#[test]
fn extension_script_directory() {
    let f = fixture(17);
    let mut c = choices(17);
    c.extensions = vec!["moved".into()];
    let s = run(&f, &c).unwrap();
    let p = paths(&s);
    for want in [
        "/usr/local/pgsql/share/extension/moved.control",
        "/usr/local/pgsql/share/moved_scripts/moved--2.0.sql",
        "/usr/local/pgsql/share/moved_scripts/moved--2.0.control",
    ] {
        assert!(p.contains(&want.to_owned()), "{want} missing from {p:#?}");
    }
}

#[test]
fn bad_extensions() {
    let f = fixture(17);
    let mut c = choices(17);
    c.extensions = vec!["ltree".into()];
    let e = run(&f, &c).unwrap_err().to_string();
    assert!(e.contains("extension `ltree` is not installed"), "{e}");
    assert!(e.contains("ltree.control does not exist"), "{e}");
    c.extensions = vec!["broken".into()];
    let e = run(&f, &c).unwrap_err().to_string();
    assert!(
        e.contains("extension `broken` has no install script"),
        "{e}"
    );
}

#[test]
fn text_search_files_only_when_asked() {
    let f = fixture(17);
    let mut c = choices(17);
    assert!(
        !paths(&run(&f, &c).unwrap())
            .iter()
            .any(|p| p.contains("tsearch_data"))
    );
    c.text_search = true;
    let ts: Vec<_> = listing(&run(&f, &c).unwrap())
        .into_iter()
        .filter(|(p, _)| p.contains("tsearch_data"))
        .collect();
    assert_eq!(
        ts,
        [
            (
                "/usr/local/pgsql/share/tsearch_data/english.stop".to_owned(),
                "text search: tsearch_data/english.stop".to_owned()
            ),
            (
                "/usr/local/pgsql/share/tsearch_data/synonym_sample.syn".to_owned(),
                "text search: tsearch_data/synonym_sample.syn".to_owned()
            ),
        ]
    );
}

#[test]
fn initdb_at_first_boot_ships_the_file_its_sql_reads_instead_of_a_cluster() {
    for major in [15, 17, 18] {
        let f = fixture(major);
        let mut c = choices(major);
        c.preinit = false;
        c.extensions = vec![];
        let s = run(&f, &c).unwrap();
        assert_eq!(s.data_dir, None);
        let p = paths(&s);
        assert!(!p.iter().any(|p| p.starts_with("/data")), "{p:#?}");
        // initdb's SQL copies this one by path at first boot; the rest of
        // its inputs are in the first-boot plan the build adds.
        assert!(p.contains(&"/usr/local/pgsql/share/sql_features.txt".to_owned()));
        for f in [
            "postgres.bki",
            "postgresql.conf.sample",
            "system_views.sql",
            "information_schema.sql",
            "system_functions.sql",
        ] {
            assert!(!p.contains(&format!("/usr/local/pgsql/share/{f}")), "{f}");
        }
        assert!(
            !p.iter()
                .any(|p| p.ends_with("errcodes.txt") || p.ends_with("psqlrc.sample"))
        );
        // initdb creates plpgsql, so its files come along.
        assert!(listing(&s).contains(&(
            "/usr/local/pgsql/share/extension/plpgsql.control".to_owned(),
            "extension plpgsql (required by initdb): control file plpgsql.control".to_owned()
        )));
    }
}

#[test]
fn cluster_must_match_preinit() {
    let f = fixture(17);
    let c = choices(17);
    let layout = Layout::default();
    let e = select::select(&SelectInput {
        install: &f.install,
        data_dir: None,
        layout: &layout,
        choices: &c,
    })
    .unwrap_err();
    assert!(matches!(e, SelectError::NoDataDir), "{e}");
    let mut c2 = c.clone();
    c2.preinit = false;
    let e = select::select(&SelectInput {
        install: &f.install,
        data_dir: Some(&f.data),
        layout: &layout,
        choices: &c2,
    })
    .unwrap_err();
    assert!(e.to_string().contains("cluster.preinit is false"), "{e}");
    // A cluster of another major version.
    let e = run(&f, &choices(15)).unwrap_err().to_string();
    assert!(
        e.contains("made by PostgreSQL 17, and the recipe builds 15"),
        "{e}"
    );
}

#[test]
fn cluster_keeps_its_modes_and_leaves_out_run_leftovers() {
    let f = fixture(17);
    let s = run(&f, &choices(17)).unwrap();
    for e in s.entries.iter().filter(|e| e.path.starts_with("/data")) {
        assert_eq!(e.mode, None, "{}", e.path.display());
    }
    let p = paths(&s);
    assert!(!p.iter().any(|p| p.contains("postmaster")));
    assert!(
        p.contains(&"/data/pg_tblspc".to_owned()),
        "empty directories are kept"
    );
}

#[test]
fn cluster_symlinks_must_stay_inside() {
    let f = fixture(17);
    symlink("/var/lib/wal", f.data.join("pg_wal_elsewhere")).unwrap();
    let e = run(&f, &choices(17)).unwrap_err().to_string();
    assert!(e.contains("outside the data directory"), "{e}");
    fs::remove_file(f.data.join("pg_wal_elsewhere")).unwrap();
    symlink("global/pg_control", f.data.join("control_link")).unwrap();
    let s = run(&f, &choices(17)).unwrap();
    assert!(paths(&s).contains(&"/data/control_link".to_owned()));
}

#[test]
fn share_dir_under_postgresql_and_custom_layout() {
    // A prefix naming neither pgsql nor postgres: the makefiles append
    // /postgresql to the share directory (Debian-like layouts).
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        prefix: PathBuf::from("/usr"),
        data_dir: PathBuf::from("/var/lib/pg"),
    };
    let install = layout.installed_under(dir.path());
    assert_eq!(install, dir.path().join("usr"));
    install_tree(&install, "share/postgresql", 15);
    let data = dir.path().join("cluster");
    data_dir(&data, 15);
    let c = choices(15);
    let s = select::select(&SelectInput {
        install: &install,
        data_dir: Some(&data),
        layout: &layout,
        choices: &c,
    })
    .unwrap();
    assert_eq!(s.share_dir, Path::new("/usr/share/postgresql"));
    assert_eq!(s.data_dir.as_deref(), Some(Path::new("/var/lib/pg")));
    let p = paths(&s);
    assert!(p.contains(&"/usr/share/postgresql/timezone/UTC".to_owned()));
    assert!(p.contains(&"/var/lib/pg/PG_VERSION".to_owned()));

    // The tree uses the other convention than the prefix implies: follow it.
    let dir2 = tempfile::tempdir().unwrap();
    let install2 = dir2.path().join("pgsql");
    install_tree(&install2, "share/postgresql", 17);
    let mut c = choices(17);
    c.preinit = false;
    let s = select::select(&SelectInput {
        install: &install2,
        data_dir: None,
        layout: &Layout::default(),
        choices: &c,
    })
    .unwrap();
    assert_eq!(s.share_dir, Path::new("/usr/local/pgsql/share/postgresql"));

    let e = select::select(&SelectInput {
        install: dir2.path(),
        data_dir: None,
        layout: &Layout::default(),
        choices: &c,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no PostgreSQL share directory"), "{e}");
    assert!(e.contains("looked for"), "{e}");
}

#[test]
fn bad_layouts() {
    let f = fixture(17);
    let c = choices(17);
    for (prefix, data) in [
        ("usr/local/pgsql", "/data"),
        ("/usr/local/pgsql", "/"),
        ("/usr/local/pgsql", "/usr/local/pgsql/share/data"),
    ] {
        let layout = Layout {
            prefix: prefix.into(),
            data_dir: data.into(),
        };
        let e = select::select(&SelectInput {
            install: &f.install,
            data_dir: Some(&f.data),
            layout: &layout,
            choices: &c,
        })
        .unwrap_err();
        assert!(matches!(e, SelectError::Layout(_)), "{prefix} {data}: {e}");
    }
}

#[test]
fn choices_from_the_default_recipe() {
    let r = pgkraft::recipe::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/postgres-17.yaml"),
    )
    .unwrap();
    let pgkraft::recipe::Kind::Postgres(spec) = &r.kind else {
        panic!()
    };
    let c = Choices::from_spec(spec);
    // The default recipe ships the whole tz database.
    assert_eq!(
        c,
        Choices {
            timezones: None,
            ..choices(17)
        }
    );
}

/// The closure through the archive: what the image would hold.
#[test]
fn selection_archives_with_image_modes() {
    let f = fixture(17);
    // Share files as a restrictive umask would have installed them.
    chmod(&f.install.join("share/extension/plpgsql.control"), 0o600);
    let s = run(&f, &choices(17)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let made = rootfs::write(
        &s.entries,
        &RootfsOptions {
            compression: Compression::None,
            mtime: 0,
        },
        &out.path().join("rootfs.tar"),
    )
    .unwrap();
    let mut ar = tar::Archive::new(fs::File::open(&made.path).unwrap());
    let got: Vec<(String, u32)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            )
        })
        .collect();
    let mode = |p: &str| got.iter().find(|(q, _)| q == p).map(|(_, m)| *m);
    assert_eq!(got.first().map(|(p, _)| p.as_str()), Some("data"));
    assert_eq!(mode("data"), Some(0o700));
    assert_eq!(mode("data/global/pg_control"), Some(0o600));
    assert_eq!(mode("usr"), Some(0o755));
    assert_eq!(mode("usr/local/pgsql/share"), Some(0o755));
    assert_eq!(
        mode("usr/local/pgsql/share/extension/plpgsql.control"),
        Some(0o644)
    );
    assert_eq!(mode("usr/local/pgsql/share/timezone/UTC"), Some(0o644));
    assert_eq!(got.len(), made.entries);
    assert_eq!(made.files[0].path, Path::new("/data/base/1/1259"));
    assert_eq!(made.files[0].bytes, 8192);
    assert_eq!(made.files[0].reason, "cluster: data directory");
}

#[test]
fn the_whole_tz_database_by_default_or_the_zones_listed() {
    let f = fixture(17);
    let zones = |c: &Choices| -> Vec<String> {
        let mut v: Vec<String> = run(&f, c)
            .unwrap()
            .entries
            .iter()
            .filter_map(|e| {
                e.path
                    .to_str()?
                    .strip_prefix("/usr/local/pgsql/share/timezone/")
                    .map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    };
    let mut c = choices(17);
    c.timezones = None;
    // Every zone file, links and hard links under their own names; a file
    // that is not a zone (`Broken`) is left out.
    assert_eq!(
        zones(&c),
        [
            "America/Argentina/Buenos_Aires",
            "America/New_York",
            "Etc/UTC",
            "Europe/Paris",
            "UTC",
            "Zulu"
        ]
    );
    c.timezones = Some(vec!["europe/paris".into()]);
    assert_eq!(zones(&c), ["Europe/Paris", "UTC"]);
    c.timezones = Some(vec!["Mars/Olympus".into()]);
    assert!(matches!(
        run(&f, &c),
        Err(SelectError::TimeZoneNotFound { .. })
    ));
}
