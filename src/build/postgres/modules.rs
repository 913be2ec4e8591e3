//! Loadable modules as part of the executable (docs/ARCHITECTURE.md §2: no
//! dlopen; extensions are found through a table pgkraft generates).
//!
//! Each module arrives as one relocatable object (compile made it with
//! `cc -r`). Every module defines `Pg_magic_func` and most define
//! `_PG_init`; and since nothing forced module authors to keep their other
//! global names apart, any two modules may collide. So every symbol a
//! module defines globally is renamed to `pgkraft_<module>__<name>`:
//! inside the object, references share the symbol-table entry with the
//! definition, so they follow; references to the server stay undefined and
//! resolve against it.
//!
//! The renaming rewrites the ELF file directly, using the `object` crate to
//! read it: the new names are appended as a fresh string table at the end of
//! the file, the symbol entries are pointed at them, and the string-table
//! section header is pointed at the new table. Nothing else moves, so
//! relocations, section contents and symbol indices stay valid. (`object`'s
//! own ELF rewriter needs its `build` feature, which this crate does not
//! enable; objcopy --redefine-syms would do the same in a second process
//! and tool dependency.) The result is parsed again and checked.
//!
//! The table (`pgkraft_static_modules[]`, declared by the dfmgr.c patch in
//! postgres-patches/) maps each module's name to its global functions
//! under their original names, which is what dlsym() would have found.

use std::fmt::Write as _;
use std::path::Path;

use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, LittleEndian};

/// A module's linkable object after renaming, and the functions the table
/// lists for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenamedModule {
    pub object: Vec<u8>,
    /// Original names of the global functions, sorted (strcmp order).
    pub functions: Vec<String>,
}

/// The prefix for module `name`'s symbols, or why the name is unusable.
pub fn symbol_prefix(name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "module name `{name}` is not a C identifier, so its symbols cannot be prefixed with it"
        ));
    }
    Ok(format!("pgkraft_{name}__"))
}

/// Renames every globally defined symbol of the relocatable ELF64 object
/// `data` to `prefix` + its name.
pub fn rename_globals(data: &[u8], prefix: &str) -> Result<RenamedModule, String> {
    let header = elf::FileHeader64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if endian != Endianness::Little || header.e_type(endian) != elf::ET_REL {
        return Err("not a little-endian ELF64 relocatable object".into());
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| format!("section headers: {e}"))?;
    let symbols = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(|e| format!("symbol table: {e}"))?;
    if symbols.is_empty() {
        return Err("no symbol table".into());
    }
    let symtab_offset = sections
        .section(symbols.section())
        .map_err(|e| format!("symbol table: {e}"))?
        .sh_offset(endian);
    let strtab_index = symbols.string_section();
    let strtab = sections
        .section(strtab_index)
        .map_err(|e| format!("string table: {e}"))?;
    let old_strings = strtab
        .data(endian, data)
        .map_err(|e| format!("string table: {e}"))?;

    let mut new_strings = old_strings.to_vec();
    let mut edits: Vec<(usize, u32)> = Vec::new();
    let mut functions = Vec::new();
    for (i, sym) in symbols.iter().enumerate() {
        let bind = sym.st_bind();
        if !(bind == elf::STB_GLOBAL || bind == elf::STB_WEAK) || sym.is_undefined(endian) {
            continue;
        }
        let name = sym
            .name(endian, symbols.strings())
            .map_err(|e| format!("symbol {i}: {e}"))?;
        let name =
            std::str::from_utf8(name).map_err(|_| format!("symbol {i}: name is not UTF-8"))?;
        if sym.st_type() == elf::STT_FUNC {
            functions.push(name.to_string());
        }
        let offset = u32::try_from(new_strings.len()).map_err(|_| "string table too large")?;
        new_strings.extend_from_slice(prefix.as_bytes());
        new_strings.extend_from_slice(name.as_bytes());
        new_strings.push(0);
        edits.push((i, offset));
    }
    functions.sort();
    functions.dedup();

    let mut out = data.to_vec();
    let sym_size = std::mem::size_of::<elf::Sym64<LittleEndian>>() as u64;
    for (i, name_offset) in edits {
        // st_name is the first field of an ELF64 symbol.
        let at = usize::try_from(symtab_offset + i as u64 * sym_size)
            .map_err(|_| "symbol table offset overflows")?;
        out[at..at + 4].copy_from_slice(&name_offset.to_le_bytes());
    }
    let table_offset = out.len() as u64;
    out.extend_from_slice(&new_strings);
    let shdr = usize::try_from(
        header.e_shoff(endian) + strtab_index.0 as u64 * u64::from(header.e_shentsize(endian)),
    )
    .map_err(|_| "section header offset overflows")?;
    // sh_offset and sh_size of an ELF64 section header.
    let put64 = |out: &mut Vec<u8>, at: usize, v: u64| {
        out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    };
    put64(&mut out, shdr + 24, table_offset);
    put64(&mut out, shdr + 32, new_strings.len() as u64);

    check_renamed(&out, prefix, &functions)?;
    Ok(RenamedModule {
        object: out,
        functions,
    })
}

/// Reads the rewritten object back: every global definition carries the
/// prefix, and every function the table will name is there.
fn check_renamed(data: &[u8], prefix: &str, functions: &[String]) -> Result<(), String> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(data).map_err(|e| format!("rewritten object: {e}"))?;
    let mut seen = 0;
    for s in file.symbols() {
        if !s.is_global() || s.is_undefined() {
            continue;
        }
        let name = s.name().map_err(|e| format!("rewritten object: {e}"))?;
        let Some(orig) = name.strip_prefix(prefix) else {
            return Err(format!("rewritten object: {name} was not renamed"));
        };
        if s.kind() == object::SymbolKind::Text && functions.iter().any(|f| f == orig) {
            seen += 1;
        }
    }
    if seen < functions.len() {
        return Err("rewritten object: functions went missing".into());
    }
    Ok(())
}

/// C escaping for a symbol name inside a string literal (names are C
/// identifiers, so this is belt and braces).
fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let _ = write!(out, "\\{:03o}", c as u32 & 0xff);
            }
        }
    }
    out.push('"');
    out
}

/// The C source of `pgkraft_static_modules[]` for `modules` (name, the
/// original names of its functions sorted in strcmp order), in the order
/// given.
pub fn table_source(modules: &[(String, Vec<String>)]) -> Result<String, String> {
    let mut c = String::from(
        "/* Generated by pgkraft (build::postgres::modules): the modules linked into\n \
         * this postgres, for dfmgr.c. Do not edit. */\n\
         #include <stddef.h>\n\
         #include \"pgkraft_static_modules.h\"\n\n",
    );
    for (m, (name, functions)) in modules.iter().enumerate() {
        let prefix = symbol_prefix(name)?;
        // Byte order is strcmp() order, which the lookup's bsearch needs.
        let mut sorted = functions.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for f in &sorted {
            let _ = writeln!(c, "extern void {prefix}{f}(void);");
        }
        let _ = writeln!(c, "static const PgkraftStaticSymbol module{m}[] = {{");
        for f in &sorted {
            let _ = writeln!(c, "\t{{{}, (void *) {prefix}{f}}},", c_string(f));
        }
        if sorted.is_empty() {
            c.push_str("\t{NULL, NULL},\n");
        }
        c.push_str("};\n\n");
    }
    c.push_str("const PgkraftStaticModule pgkraft_static_modules[] = {\n");
    for (m, (name, functions)) in modules.iter().enumerate() {
        let _ = writeln!(
            c,
            "\t{{{}, module{m}, {}}},",
            c_string(name),
            functions.len()
        );
    }
    c.push_str("\t{NULL, NULL, 0}\n};\n");
    Ok(c)
}

/// Renames the module in the file `path` into `dest`.
pub fn rename_file(path: &Path, name: &str, dest: &Path) -> Result<Vec<String>, String> {
    let prefix = symbol_prefix(name)?;
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let renamed = rename_globals(&data, &prefix)?;
    std::fs::write(dest, &renamed.object).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(renamed.functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_prefixed() {
        let src = table_source(&[(
            "pg_trgm".into(),
            vec![
                "similarity".into(),
                "Pg_magic_func".into(),
                "_PG_init".into(),
            ],
        )])
        .unwrap();
        let a = src.find("\"Pg_magic_func\"").unwrap();
        let b = src.find("\"_PG_init\"").unwrap();
        let c = src.find("\"similarity\"").unwrap();
        assert!(a < b && b < c, "{src}");
        assert!(src.contains("(void *) pgkraft_pg_trgm__similarity"));
        assert!(src.contains("{\"pg_trgm\", module0, 3}"));
    }

    #[test]
    fn bad_module_names_are_refused() {
        assert!(symbol_prefix("uuid-ossp").is_err());
        assert_eq!(symbol_prefix("plpgsql").unwrap(), "pgkraft_plpgsql__");
    }
}
