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
