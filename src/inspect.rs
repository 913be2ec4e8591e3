//! `pgkraft inspect`'s human-readable form.

use crate::image_info::ImageInfo;

pub fn human(info: &ImageInfo) -> String {
    let mut s = format!(
        "image: {} bytes on disk, {} bytes of guest memory; 64-bit entry {:#x}; PVH entry: {}\n\nsections:\n",
        info.file_bytes,
        info.memory_bytes,
        info.entry64,
        if info.pvh_entry { "yes" } else { "no" }
    );
    for sec in &info.sections {
        s += &format!(
            "  {:<20} {:>#12x} {:>10} bytes{}\n",
            sec.name,
            sec.address,
            sec.bytes,
            if sec.loaded { "" } else { "  (not loaded)" }
        );
    }
    s += "\nsize by part:\n";
    for p in &info.size_by_part {
        s += &format!("  {:>10} bytes  {}\n", p.bytes, p.part);
    }
    s += &format!(
        "\nwithout the pre-initialized cluster: ~{} bytes\n",
        info.file_bytes_without_cluster
    );
    if !info.largest_objects.is_empty() {
        s += "\nlargest objects (from the manifest):\n";
        for o in info.largest_objects.iter().take(15) {
            s += &format!("  {:>10}  {}\n", o.bytes, o.object);
        }
    }
    s += "\nlargest symbols:\n";
    for sym in info.largest_symbols.iter().take(15) {
        s += &format!("  {:>10}  {}\n", sym.bytes, sym.name);
    }
    if let Some(r) = &info.rootfs {
        s += &format!(
            "\nrootfs: {} bytes ({}), {} files; cluster (/data) {} bytes, other files {} bytes\n",
            r.bytes,
            r.compression,
            r.files.len(),
            r.cluster_file_bytes,
            r.other_file_bytes
        );
        for f in r.files.iter().take(20) {
            s += &format!("  {:>10}  {}\n", f.bytes, f.path);
        }
    }
    match &info.build {
        Some(b) => {
            s += &format!(
                "\nbuilt by pgkraft {} from {} (sha256 {})\n",
                b.pgkraft_version,
                b.recipe_file.display(),
                b.recipe_sha256
            );
            s += &format!("  memory: {} MiB\n  inputs:\n", b.memory_mib);
            for f in &b.inputs.files {
                s += &format!("    {:<16} {} {}\n", f.role, f.sha256, f.path.display());
            }
        }
        None => s += "\nno embedded build manifest\n",
    }
    s
}
