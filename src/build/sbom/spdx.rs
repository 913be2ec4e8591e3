//! The part of SPDX 2.3's JSON form (https://spdx.github.io/spdx-spec/v2.3/)
//! an image's SBOM uses: a document of packages and the relationships
//! between them. Plain serde structs rather than a crate: the Rust SPDX
//! crates model the license-list and tag-value side, not writing 2.3 JSON,
//! and these few fields are all the document needs. Field order is the
//! struct order, so equal inputs give equal bytes.

use serde::{Deserialize, Serialize};

pub const SPDX_VERSION: &str = "SPDX-2.3";
/// The license of SPDX documents themselves (the spec requires CC0-1.0).
pub const DATA_LICENSE: &str = "CC0-1.0";
pub const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
/// What the spec says where a value is not asserted.
pub const NOASSERTION: &str = "NOASSERTION";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// RFC 3339 UTC, from SOURCE_DATE_EPOCH (never the clock).
    pub created: String,
    /// `Tool: name-version`, `Organization: ...`, `Person: ...`.
    pub creators: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub name: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    /// The file the checksums are of (a source tarball, a patch, the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_file_name: Option<String>,
    /// A URL, or NOASSERTION (a local path is no download location).
    pub download_location: String,
    /// False: the SBOM lists packages, not the files inside them.
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    /// pgkraft reports licenses as the packages declare them and concludes
    /// nothing itself: this is always NOASSERTION.
    pub license_concluded: String,
    /// An SPDX license expression, or NOASSERTION.
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// `SHA256`.
    pub algorithm: String,
    pub checksum_value: String,
}

impl Checksum {
    pub fn sha256(hex: &str) -> Checksum {
        Checksum {
            algorithm: "SHA256".into(),
            checksum_value: hex.into(),
        }
    }
}

/// A package URL (https://github.com/package-url/purl-spec), which
/// scanners match against vulnerability databases.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

impl ExternalRef {
    pub fn purl(locator: String) -> ExternalRef {
        ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: locator,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

/// `SPDXRef-<kind>-<name>`, with every character SPDX ids do not allow
/// (anything but letters, digits, `.` and `-`) as `-`.
pub fn id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

/// A Cargo `license` field as an SPDX license expression: Cargo once
/// allowed `/` for OR (`MIT/Apache-2.0`), which SPDX does not know.
pub fn cargo_license(declared: &str) -> String {
    let declared = declared.trim();
    if declared.is_empty() {
        return NOASSERTION.into();
    }
    declared
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_licenses() {
        assert_eq!(
            id("crate", "toml-1.2.2+spec-1.1.0"),
            "SPDXRef-crate-toml-1.2.2-spec-1.1.0"
        );
        assert_eq!(cargo_license("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(
            cargo_license("(MIT OR Apache-2.0) AND Unicode-3.0"),
            "(MIT OR Apache-2.0) AND Unicode-3.0"
        );
        assert_eq!(cargo_license(""), NOASSERTION);
    }
}
