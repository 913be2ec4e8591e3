//! The image's software bill of materials: `<name>.spdx.json`, SPDX 2.3
//! JSON, written next to the image and its manifest by `pgkraft build`.
//!
//! Made from the build manifest alone (plus the two Cargo.lock files and
//! the source URLs), so it says exactly what the manifest recorded: the
//! image and its sha256; PostgreSQL with its version and source tarball;
//! each patch applied; the statically linked modules and extensions; musl;
//! the libOS and the crates linked into it; pgkraft itself and its crates
//! as the build tool; any other input (kernel config, program sources,
//! host files). No clock and no host paths: two builds of one recipe give
//! the same bytes (the time is SOURCE_DATE_EPOCH's, the namespace the
//! image's sha256). docs/ARCHITECTURE.md, "Release artifacts".

pub mod crates;
pub mod spdx;

use super::manifest::Manifest;
use crates::{Closure, Crate};
use spdx::{Checksum, Document, ExternalRef, NOASSERTION, Package, Relationship};
use std::collections::BTreeMap;

/// The SBOM's file name for an image named `name`.
pub fn file_name(name: &str) -> String {
    format!("{name}.spdx.json")
}

/// Everything the SBOM says beyond the manifest.
pub struct SbomInput<'a> {
    pub manifest: &'a Manifest,
    /// Where the PostgreSQL source tarball came from, if from a URL.
    pub postgres_url: Option<&'a str>,
    /// libos/Cargo.lock as the libOS was built with it.
    pub libos_lock: &'a str,
    /// pgkraft's own Cargo.lock ([`crates::HOST_LOCK`]).
    pub host_lock: &'a str,
    /// RFC 3339, from [`crate::source_date`].
    pub created: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("SBOM: {0}")]
    Crates(#[from] crates::CratesError),
}

/// The libOS's package name in libos/Cargo.lock.
const LIBOS_CRATE: &str = "pgkraft-libos";
const HOST_CRATE: &str = "pgkraft";
/// The SPDX id of the image itself (`pgkraft package` finds its hash there).
pub const IMAGE_ID: &str = "SPDXRef-image";
const POSTGRES_ID: &str = "SPDXRef-postgresql";
const MUSL_ID: &str = "SPDXRef-musl";

/// Builds the document: packages in a fixed order, each once, and the
/// relationships between them.
pub fn document(input: &SbomInput) -> Result<Document, SbomError> {
    let m = input.manifest;
    let b = &m.build;
    let mut doc = Doc::default();

    doc.package(Package {
        comment: Some(format!(
            "pgkraft unikernel image (one ELF: libOS, musl, program and rootfs), built by \
             pgkraft {} from recipe {} (sha256 {})",
            b.pgkraft_version,
            b.recipe_file.display(),
            b.recipe_sha256
        )),
        package_file_name: Some(m.image.path.display().to_string()),
        checksums: vec![Checksum::sha256(&m.image.sha256)],
        primary_package_purpose: Some("OPERATING-SYSTEM".into()),
        ..package(IMAGE_ID, &b.name, None, NOASSERTION)
    });
    doc.relate(spdx::DOCUMENT_ID, "DESCRIBES", IMAGE_ID);

    let mut generic = 0;
    for f in &b.inputs.files {
        let file = f.path.display().to_string();
        match f.role.as_str() {
            "postgres source" => {
                let version = b.postgres.as_ref().map(|p| p.version.clone());
                doc.package(Package {
                    package_file_name: Some(file),
                    download_location: input.postgres_url.unwrap_or(NOASSERTION).into(),
                    checksums: vec![Checksum::sha256(&f.sha256)],
                    homepage: Some("https://www.postgresql.org/".into()),
                    external_refs: version
                        .iter()
                        .map(|v| ExternalRef {
                            reference_category: "SECURITY".into(),
                            reference_type: "cpe23Type".into(),
                            reference_locator: format!(
                                "cpe:2.3:a:postgresql:postgresql:{v}:*:*:*:*:*:*:*"
                            ),
                        })
                        .chain(
                            version
                                .iter()
                                .map(|v| ExternalRef::purl(format!("pkg:generic/postgresql@{v}"))),
                        )
                        .collect(),
                    primary_package_purpose: Some("APPLICATION".into()),
                    comment: Some(
                        "the server, built from this source tarball with the patches applied \
                         to it"
                            .into(),
                    ),
                    ..package(POSTGRES_ID, "PostgreSQL", version, "PostgreSQL")
                });
                doc.relate(IMAGE_ID, "CONTAINS", POSTGRES_ID);
            }
            // The patch order, not a patch: its patches are listed.
            "postgres patch" if file == "series" => {}
            "postgres patch" => {
                let id = spdx::id("patch", &file);
                doc.package(Package {
                    package_file_name: Some(file.clone()),
                    checksums: vec![Checksum::sha256(&f.sha256)],
                    primary_package_purpose: Some("SOURCE".into()),
                    comment: Some("pgkraft's patch to PostgreSQL (postgres-patches/)".into()),
                    ..package(&id, &file, None, NOASSERTION)
                });
                doc.relate(&id, "PATCH_APPLIED", POSTGRES_ID);
            }
            "musl source" => {
                let pin = super::musl::MUSL_PIN;
                // The pinned release unless the hash says otherwise.
                let pinned = f.sha256 == pin.sha256;
                doc.package(Package {
                    package_file_name: Some(file),
                    download_location: if pinned { pin.url } else { NOASSERTION }.into(),
                    checksums: vec![Checksum::sha256(&f.sha256)],
                    homepage: Some("https://musl.libc.org/".into()),
                    external_refs: pinned
                        .then(|| ExternalRef::purl(format!("pkg:generic/musl@{}", pin.version)))
                        .into_iter()
                        .collect(),
                    primary_package_purpose: Some("LIBRARY".into()),
                    comment: Some(
                        "the C library, linked statically; patched at build time (build::musl) \
                         so that system calls are function calls into the libOS"
                            .into(),
                    ),
                    ..package(MUSL_ID, "musl", pinned.then(|| pin.version.into()), "MIT")
                });
                doc.relate(IMAGE_ID, "CONTAINS", MUSL_ID);
            }
            // Listed with its crates below; the key goes in its comment.
            "libOS" => {}
            role => {
                generic += 1;
                let name = if file.is_empty() { role.into() } else { file };
                let id = spdx::id("input", &format!("{generic}-{name}"));
                doc.package(Package {
                    package_file_name: Some(name.clone()),
                    checksums: vec![Checksum::sha256(&f.sha256)],
                    primary_package_purpose: Some("FILE".into()),
                    comment: Some(format!("build input: {role}")),
                    ..package(&id, &name, None, NOASSERTION)
                });
                doc.relate(IMAGE_ID, "GENERATED_FROM", &id);
            }
        }
    }

    if let Some(pg) = &b.postgres {
        // A module (a shared library upstream) linked into the server; an
        // extension is what CREATE EXTENSION installs, often one module.
        let mut parts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for m in &pg.modules {
            parts.entry(m).or_default().push("module");
        }
        for e in &pg.extensions {
            parts.entry(e).or_default().push("extension");
        }
        for (name, kinds) in parts {
            let id = spdx::id("postgresql", name);
            doc.package(Package {
                source_info: Some(format!("built from PostgreSQL {}'s source", pg.version)),
                primary_package_purpose: Some("LIBRARY".into()),
                comment: Some(format!(
                    "PostgreSQL {}, statically linked into the server",
                    kinds.join(" and ")
                )),
                ..package(&id, name, Some(pg.version.clone()), "PostgreSQL")
            });
            doc.relate(POSTGRES_ID, "STATIC_LINK", &id);
        }
    }

    let libos_key = b
        .inputs
        .files
        .iter()
        .find(|f| f.role == "libOS")
        .map(|f| f.sha256.clone());
    let libos = crates::closure("libos/Cargo.lock", input.libos_lock, LIBOS_CRATE)?;
    let all_libos = crates::crates("libos/Cargo.lock", input.libos_lock)?;
    if let Some(root) = all_libos.iter().find(|c| c.name == LIBOS_CRATE) {
        let id = doc.krate(root);
        if let Some(p) = doc.packages.get_mut(&id) {
            p.comment = Some(format!(
                "pgkraft's library OS, linked into the image{}",
                libos_key
                    .as_ref()
                    .map(|k| format!(" (build key {k})"))
                    .unwrap_or_default()
            ));
            p.primary_package_purpose = Some("OPERATING-SYSTEM".into());
        }
        doc.relate(IMAGE_ID, "CONTAINS", &id);
        let Closure { linked, build_only } = &libos;
        for c in linked {
            let dep = doc.krate(c);
            doc.relate(&id, "STATIC_LINK", &dep);
        }
        for c in build_only {
            let dep = doc.krate(c);
            doc.relate(&dep, "BUILD_DEPENDENCY_OF", &id);
        }
    }

    let host = crates::crates("Cargo.lock", input.host_lock)?;
    if let Some(root) = host.iter().find(|c| c.name == HOST_CRATE) {
        let id = doc.krate(root);
        if let Some(p) = doc.packages.get_mut(&id) {
            p.comment = Some("the build tool that made the image (pgkraft build)".into());
            p.primary_package_purpose = Some("APPLICATION".into());
        }
        doc.relate(&id, "BUILD_TOOL_OF", IMAGE_ID);
        for c in host.iter().filter(|c| c.name != HOST_CRATE) {
            let dep = doc.krate(c);
            doc.relate(&id, "DEPENDS_ON", &dep);
        }
    }

    Ok(Document {
        spdx_version: spdx::SPDX_VERSION.into(),
        data_license: spdx::DATA_LICENSE.into(),
        spdx_id: spdx::DOCUMENT_ID.into(),
        name: format!("{} (pgkraft image)", b.name),
        // Unique per image, as SPDX asks, and the same for the same image.
        // `.invalid` (RFC 2606): pgkraft owns no domain, and this must
        // never resolve to someone else's.
        document_namespace: format!(
            "https://pgkraft.invalid/spdx/{}/{}",
            url_segment(&b.name),
            m.image.sha256
        ),
        creation_info: spdx::CreationInfo {
            created: input.created.into(),
            creators: vec![format!("Tool: pgkraft-{}", b.pgkraft_version)],
        },
        packages: doc
            .order
            .iter()
            .map(|id| doc.packages[id].clone())
            .collect(),
        relationships: doc.relationships,
    })
}

/// `doc` as the bytes of `<name>.spdx.json`.
pub fn to_json(doc: &Document) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(doc).expect("SPDX document serializes");
    v.push(b'\n');
    v
}

/// A package with what every one needs; the rest is filled in by the caller.
fn package(id: &str, name: &str, version: Option<String>, license: &str) -> Package {
    Package {
        name: name.into(),
        spdx_id: id.into(),
        version_info: version,
        package_file_name: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        checksums: Vec::new(),
        homepage: None,
        source_info: None,
        license_concluded: NOASSERTION.into(),
        license_declared: license.into(),
        copyright_text: NOASSERTION.into(),
        comment: None,
        external_refs: Vec::new(),
        primary_package_purpose: None,
    }
}

/// An image name as a URL path segment (recipe names are tame, but the
/// namespace must be a valid URI whatever they are).
fn url_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The document being assembled: packages by id in first-seen order
/// (crates shared by the libOS and pgkraft appear once), relationships
/// each once.
#[derive(Default)]
struct Doc {
    order: Vec<String>,
    packages: BTreeMap<String, Package>,
    relationships: Vec<Relationship>,
}

impl Doc {
    fn package(&mut self, p: Package) {
        if !self.packages.contains_key(&p.spdx_id) {
            self.order.push(p.spdx_id.clone());
            self.packages.insert(p.spdx_id.clone(), p);
        }
    }

    fn relate(&mut self, a: &str, kind: &str, b: &str) {
        let r = Relationship {
            spdx_element_id: a.into(),
            relationship_type: kind.into(),
            related_spdx_element: b.into(),
        };
        if !self.relationships.contains(&r) {
            self.relationships.push(r);
        }
    }

    /// The package of crate `c`, added if new; returns its id.
    fn krate(&mut self, c: &Crate) -> String {
        let id = spdx::id("crate", &format!("{}-{}", c.name, c.version));
        let license = if c.known {
            spdx::cargo_license(&c.license)
        } else {
            NOASSERTION.into()
        };
        let (location, refs) = if c.registry {
            (
                format!(
                    "https://crates.io/api/v1/crates/{}/{}/download",
                    c.name, c.version
                ),
                // purl percent-encodes a version's `+` (build metadata).
                vec![ExternalRef::purl(format!(
                    "pkg:cargo/{}@{}",
                    c.name,
                    c.version.replace('+', "%2B")
                ))],
            )
        } else {
            // A path crate of pgkraft's own source tree.
            (NOASSERTION.into(), Vec::new())
        };
        self.package(Package {
            download_location: location,
            external_refs: refs,
            package_file_name: c
                .checksum
                .as_ref()
                .map(|_| format!("{}-{}.crate", c.name, c.version)),
            checksums: c.checksum.iter().map(|h| Checksum::sha256(h)).collect(),
            primary_package_purpose: Some("LIBRARY".into()),
            source_info: (!c.registry).then(|| "part of pgkraft's source tree".into()),
            ..package(&id, &c.name, Some(c.version.clone()), &license)
        });
        id
    }
}
