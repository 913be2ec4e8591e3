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

#[cfg(test)]
mod tests {
    use super::split;

    fn words(line: &str) -> Vec<String> {
        split(line.as_bytes())
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn whitespace_separates_words() {
        assert_eq!(
            words("  -D  /data\tpostgres\n"),
            ["-D", "/data", "postgres"]
        );
        assert!(words(" \t\n ").is_empty());
        assert!(words("").is_empty());
    }

    #[test]
    fn single_quotes_are_literal() {
        // As in sh: no escape inside '...', a backslash is itself.
        assert_eq!(words(r#"'a b\"c' d"#), [r#"a b\"c"#, "d"]);
    }

    #[test]
    fn double_quotes_take_backslash_quote_and_backslash_backslash() {
        // \" and \\ are escapes; any other backslash stays, as sh keeps
        // "\n" as backslash-n.
        assert_eq!(words(r#""say \"hi\" \\ \n""#), [r#"say "hi" \ \n"#]);
    }

    #[test]
    fn quoted_and_bare_parts_join_into_one_word() {
        assert_eq!(words(r#"a'b c'"d e"f g"#), ["ab cd ef", "g"]);
        // An escaped blank does not split.
        assert_eq!(words(r"one\ word two"), ["one word", "two"]);
    }

    #[test]
    fn empty_quotes_are_an_empty_argument() {
        assert_eq!(words(r#"-c '' """#), ["-c", "", ""]);
    }

    #[test]
    fn an_unterminated_quote_runs_to_the_end() {
        assert_eq!(words("a 'b c"), ["a", "b c"]);
        assert_eq!(words("trailing\\"), ["trailing\\"]);
    }
}
