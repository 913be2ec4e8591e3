//! The test-module catalogue: C modules of PostgreSQL's own test suites
//! that a recipe can link into the server (`postgres.test_modules`), so
//! that the regression schedule's `CREATE FUNCTION ... AS :'regresslib'`
//! finds its functions in an image that loads no libraries.
//!
//! They are not extensions: the regression SQL creates their functions
//! itself, and no control file or install script goes into the image.
//! A module is looked up by the base name the SQL loads (`regress.so`
//! -> `regress`), so the catalogue's names are those file names.

use super::SUPPORTED_MAJORS;

/// One module: the library name the tests load, and the source directory
/// whose build leaves `<name>.so` in it (relative to the source root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestModule {
    pub name: &'static str,
    pub dir: &'static str,
}

/// The same set for 15, 17 and 18: what `src/test/regress/sql` loads through
/// `:libdir` (`regress`, and contrib/spi's `autoinc` and `refint` for the
/// triggers test), and the two other modules contrib/spi builds beside
/// them.
const TEST_MODULES: &[TestModule] = &[
    TestModule {
        name: "autoinc",
        dir: "contrib/spi",
    },
    TestModule {
        name: "insert_username",
        dir: "contrib/spi",
    },
    TestModule {
        name: "moddatetime",
        dir: "contrib/spi",
    },
    TestModule {
        name: "refint",
        dir: "contrib/spi",
    },
    TestModule {
        name: "regress",
        dir: "src/test/regress",
    },
];

/// Every test module of `major` (empty for an unsupported major), sorted
/// by name.
pub fn all(major: u32) -> &'static [TestModule] {
    if SUPPORTED_MAJORS.contains(&major) {
        TEST_MODULES
    } else {
        &[]
    }
}

/// The names a recipe may list for `major`.
pub fn names(major: u32) -> Vec<&'static str> {
    all(major).iter().map(|m| m.name).collect()
}

pub fn find(major: u32, name: &str) -> Option<&'static TestModule> {
    all(major).iter().find(|m| m.name == name)
}

/// The source directories that build them, each once, in catalogue order.
pub fn dirs(major: u32) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for m in all(major) {
        if !out.contains(&m.dir) {
            out.push(m.dir);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unique() {
        let names = names(17);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn dirs_once_each() {
        assert_eq!(dirs(15), ["contrib/spi", "src/test/regress"]);
        assert!(all(16).is_empty());
    }

    #[test]
    fn no_name_is_also_an_extension() {
        // An extension's modules and a test module of the same name would
        // be two objects for one entry of the module table.
        for m in all(17) {
            assert!(
                super::super::extensions::find(17, m.name).is_none(),
                "{}",
                m.name
            );
        }
    }
}
