//! The boot command line carries the program's arguments, shell-quoted so
//! that one string works for our runner and for `qemu -append` alike:
//! whitespace separates words; '...' is literal; "..." allows \" and \\;
//! a backslash outside quotes escapes the next byte.

use alloc::vec::Vec;

pub fn split(line: &[u8]) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        i += 1;
        match c {
            b' ' | b'\t' | b'\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                while i < line.len() && line[i] != b'\'' {
                    w.push(line[i]);
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                while i < line.len() && line[i] != b'"' {
                    if line[i] == b'\\' && i + 1 < line.len() && matches!(line[i + 1], b'"' | b'\\')
                    {
                        i += 1;
                    }
                    w.push(line[i]);
                    i += 1;
                }
                i += 1;
            }
            b'\\' if i < line.len() => {
                word.get_or_insert_with(Vec::new).push(line[i]);
                i += 1;
            }
            _ => word.get_or_insert_with(Vec::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    words
}
