//! PostgreSQL's single-user mode (`postgres --single -j`) spoken as a
//! protocol: the arguments, the input for a list of queries, and the output
//! cut back into one answer per query. The image's runner and the native
//! runner (smoke tests, benchmarks) both use it, so they compare like with
//! like.
//!
//! What the server does, as read in `postgres.c` (InteractiveBackend) and
//! `printtup.c` (debugStartup, debugtup) and checked against the real output
//! of PostgreSQL 15, 17 and 18:
//!
//! - At start it prints `\nPostgreSQL stand-alone backend <version>\n`.
//! - Before reading each query it prints the prompt `backend> ` and flushes
//!   stdout. The prompt is therefore the boundary between answers: what comes
//!   between prompt k and prompt k+1 is the answer to query k. At end of input
//!   it has printed one prompt more than it got queries; it then shuts down
//!   (LOGging its shutdown checkpoint) and exits with status 0.
//! - With `-j`, a query ends at a `;` that is followed by an empty line, so a
//!   query may span lines; without it every newline ends a query.
//! - A statement that returns rows prints a header, one line per column
//!   (`\t 1: name\t(typeid = 23, len = 4, typmod = -1, byval = t)`), then
//!   `\t----`; then each row as one line per non-NULL column
//!   (`\t 1: name = "value"\t(typeid = ...)`) and `\t----`. A NULL is simply
//!   not printed, so columns are known by number. Values are printed as they
//!   are, newlines included. Statements without rows print nothing.
//! - Server messages (NOTICE, WARNING, ERROR, FATAL, PANIC and their DETAIL,
//!   CONTEXT, STATEMENT lines) go to stderr, unbuffered, while the rows sit
//!   in stdout's buffer until the next prompt flushes it. With both on one
//!   stream (the guest's console; natively, one pipe for both) a query's
//!   messages come after its own prompt and before the next, and so belong to
//!   its answer. An ERROR ends the statement but not the session: the next
//!   query runs.

/// What the server prints before reading each query.
pub const PROMPT: &str = "backend> ";

/// The line that ends a header and each row.
const END_OF_TUPLE: &str = "\t----\n";

/// The server's arguments (argv[1..]) for `-j` mode, from the image's own:
/// a server's (`-D /data`) become `--single -j -D /data postgres`; single-
/// user arguments (`--single -D /data postgres`) get `-j` right after
/// `--single`. `None` if they are neither.
pub fn args_with_j(image_args: &[String]) -> Option<Vec<String>> {
    let Some(at) = image_args.iter().position(|a| a == "--single") else {
        return match image_args {
            [d, dir] if d == "-D" => Some(native_args(dir, "postgres")),
            _ => None,
        };
    };
    let mut args = image_args.to_vec();
    if !args.iter().any(|a| a == "-j") {
        args.insert(at + 1, "-j".to_string());
    }
    Some(args)
}

/// The arguments of a native single-user server on `data_dir`.
pub fn native_args(data_dir: &str, database: &str) -> Vec<String> {
    ["--single", "-j", "-D", data_dir, database]
        .map(str::to_string)
        .to_vec()
}

/// One query as `-j` mode reads it. Trailing blanks and a trailing `;` are
/// normalised, and blank lines inside the query are dropped: `-j` would end
/// the query at any `;` followed by an empty line, and nothing else in the
/// query may look like that. (A string literal that needs an empty line can
/// spell it `E'\n\n'`.)
pub fn encode_query(sql: &str) -> String {
    let lines: Vec<&str> = sql
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let mut text = lines.join("\n");
    if !text.ends_with(';') {
        text.push(';');
    }
    text.push_str("\n\n");
    text
}

/// The server's whole input for these queries, in order; end of input then
/// ends the session.
pub fn stdin_for<'a>(queries: impl IntoIterator<Item = &'a str>) -> String {
    queries.into_iter().map(encode_query).collect()
}

/// One result set: the column names and the rows, each value as the server
/// printed it (`None` for NULL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// The server's answer to one query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Every result set, in statement order (statements without rows have none).
    pub result_sets: Vec<ResultSet>,
    /// Lines that are not result lines: NOTICEs, ERRORs and the like.
    pub messages: Vec<String>,
    /// Byte offset in the output just past this answer (where the next
    /// prompt ends): by then the answer was complete.
    pub end: usize,
}

const SEVERE: [&str; 3] = ["ERROR:  ", "FATAL:  ", "PANIC:  "];

/// Whether a message line reports an ERROR, FATAL or PANIC (whatever
/// log_line_prefix puts before the level).
pub fn is_error_line(line: &str) -> bool {
    SEVERE.iter().any(|s| line.contains(s))
}

/// Whether a message line reports a FATAL or PANIC: the session is over.
pub fn is_fatal_line(line: &str) -> bool {
    SEVERE[1..].iter().any(|s| line.contains(s))
}

impl Answer {
    /// The ERROR, FATAL and PANIC lines.
    pub fn errors(&self) -> Vec<&str> {
        self.messages
            .iter()
            .map(String::as_str)
            .filter(|l| is_error_line(l))
            .collect()
    }
    /// The last result set: what a check compares with.
    pub fn last(&self) -> Option<&ResultSet> {
        self.result_sets.last()
    }
}

/// A whole session's output, cut at the prompts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Before the first prompt: the banner, and the reason if the server
    /// stopped before it was ready.
    pub banner: String,
    /// One per query the server read and answered, in order.
    pub answers: Vec<Answer>,
    /// Output after the last prompt: the server's shutdown messages at end
    /// of input, or the partial answer of a query it never finished.
    pub after_last: String,
}

impl Transcript {
    /// FATAL and PANIC lines anywhere in the output.
    pub fn fatal_lines(&self) -> Vec<&str> {
        self.banner
            .lines()
            .chain(
                self.answers
                    .iter()
                    .flat_map(|a| a.messages.iter().map(|s| s.as_str())),
            )
            .chain(self.after_last.lines())
            .filter(|l| is_fatal_line(l))
            .collect()
    }
}

/// Cuts `output` into answers. A segment between two prompts is an answer;
/// the text after the last prompt is not (the session ended, or the query
/// never finished).
pub fn parse(output: &str) -> Transcript {
    let mut t = Transcript::default();
    let mut starts = output.match_indices(PROMPT).map(|(i, _)| i);
    let Some(first) = starts.next() else {
        t.banner = output.to_string();
        return t;
    };
    t.banner = output[..first].to_string();
    let mut from = first + PROMPT.len();
    for next in starts {
        let mut answer = parse_answer(&output[from..next]);
        answer.end = next + PROMPT.len();
        t.answers.push(answer);
        from = next + PROMPT.len();
    }
    t.after_last = output[from..].to_string();
    t
}

/// One column of a result set's header, with the text that ends each of its
/// lines (type id, length, typmod, by-value), which is the same in the header
/// and in every row.
struct Column {
    name: String,
    suffix: String,
}

/// A `\t%2d: ` line start: the attribute number and where the rest begins.
fn attribute_start(s: &str) -> Option<(usize, usize)> {
    let rest = s.strip_prefix('\t')?;
    let colon = rest.find(": ")?;
    let n: usize = rest[..colon].trim_start().parse().ok()?;
    Some((n, 1 + colon + 2))
}

/// A header line after its `\t N: `: the name and the line's ending.
fn header_attribute(s: &str) -> Option<(String, String, usize)> {
    let eol = s.find('\n')?;
    let line = &s[..eol];
    let at = line.rfind("\t(typeid = ")?;
    Some((line[..at].to_string(), s[at..=eol].to_string(), eol + 1))
}

fn parse_answer(seg: &str) -> Answer {
    let mut answer = Answer::default();
    // Columns of the result set being read, if its header is complete.
    let mut columns: Option<Vec<Column>> = None;
    // The block (header or row) being read: attribute lines until `\t----`.
    let mut header: Vec<Column> = Vec::new();
    let mut row: Vec<(usize, String)> = Vec::new();
    // Just after a message line: the server log indents a message's further
    // lines (a multi-line STATEMENT, say) with a tab, and one such line can
    // read `\t----` (an SQL comment). With nothing pending it is taken as
    // the message's; rows only follow messages when stdout's buffer filled
    // up mid-query.
    let mut in_message = false;
    let mut pos = 0;
    while pos < seg.len() {
        let rest = &seg[pos..];
        let nothing_pending = header.is_empty() && row.is_empty();
        if in_message
            && nothing_pending
            && rest.starts_with('\t')
            && attribute_start(rest).is_none_or(|(n, _)| n != 1)
        {
            let eol = rest.find('\n').map_or(rest.len(), |i| i + 1);
            if let Some(last) = answer.messages.last_mut() {
                last.push('\n');
                last.push_str(rest[..eol].trim_end_matches('\n'));
            }
            pos += eol;
            continue;
        }
        in_message = false;
        if rest.starts_with(END_OF_TUPLE) {
            pos += END_OF_TUPLE.len();
            match &columns {
                Some(cols) if header.is_empty() => {
                    let mut values = vec![None; cols.len()];
                    for (n, v) in row.drain(..) {
                        if let Some(slot) = values.get_mut(n - 1) {
                            *slot = Some(v);
                        }
                    }
                    if let Some(set) = answer.result_sets.last_mut() {
                        set.rows.push(values);
                    }
                }
                _ => {
                    let cols = std::mem::take(&mut header);
                    answer.result_sets.push(ResultSet {
                        columns: cols.iter().map(|c| c.name.clone()).collect(),
                        rows: Vec::new(),
                    });
                    columns = Some(cols);
                    row.clear();
                }
            }
            continue;
        }
        if let Some((n, skip)) = attribute_start(rest) {
            let body = &rest[skip..];
            // A row of the current result set: `name = "value"` and the
            // column's own line ending; the value may span lines.
            if header.is_empty()
                && let Some(col) = columns.as_ref().and_then(|c| c.get(n.wrapping_sub(1)))
                && let Some(v) = body.strip_prefix(&format!("{} = \"", col.name))
                && let Some(end) = v.find(&format!("\"{}", col.suffix))
            {
                row.push((n, v[..end].to_string()));
                pos += skip + (body.len() - v.len()) + end + 1 + col.suffix.len();
                continue;
            }
            // Otherwise the header of a new result set.
            if row.is_empty()
                && n == header.len() + 1
                && let Some((name, suffix, used)) = header_attribute(body)
            {
                header.push(Column { name, suffix });
                pos += skip + used;
                continue;
            }
        }
        let eol = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = rest[..eol].trim_end_matches('\n');
        if !line.trim().is_empty() {
            answer.messages.push(line.to_string());
            in_message = true;
        }
        pos += eol;
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE_INT: &str = "\t(typeid = 23, len = 4, typmod = -1, byval = t)\n";
    const TYPE_TEXT: &str = "\t(typeid = 25, len = -1, typmod = -1, byval = f)\n";

    #[test]
    fn queries_end_at_semicolon_and_a_blank_line() {
        assert_eq!(encode_query("SELECT 1"), "SELECT 1;\n\n");
        assert_eq!(
            encode_query("SELECT 1;\n\nSELECT 2;  \n"),
            "SELECT 1;\nSELECT 2;\n\n"
        );
        assert_eq!(stdin_for(["a;", "b"]), "a;\n\nb;\n\n");
    }

    #[test]
    fn j_goes_after_single() {
        let image: Vec<String> = ["--single", "-D", "/data", "postgres"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            args_with_j(&image).unwrap(),
            ["--single", "-j", "-D", "/data", "postgres"]
        );
        assert!(args_with_j(&["-D".to_string()]).is_none());
        // A server image's arguments give the same session.
        let server: Vec<String> = ["-D", "/data"].map(String::from).to_vec();
        assert_eq!(
            args_with_j(&server).unwrap(),
            ["--single", "-j", "-D", "/data", "postgres"]
        );
    }

    #[test]
    fn answers_are_cut_at_prompts_and_nulls_are_kept_by_position() {
        let out = format!(
            "\nPostgreSQL stand-alone backend 17.11\n{PROMPT}\
             \t 1: a{TYPE_INT}\t 2: b{TYPE_TEXT}\t----\n\
             \t 1: a = \"1\"{TYPE_INT}\t 2: b = \"x\ny\"{TYPE_TEXT}\t----\n\
             \t 2: b = \"only b\"{TYPE_TEXT}\t----\n\
             \t----\n\
             {PROMPT}{PROMPT}2026-01-01 00:00:00.000 UTC [7] ERROR:  division by zero\n\
             2026-01-01 00:00:00.000 UTC [7] STATEMENT:  SELECT 1/0;\n\
             {PROMPT}\n"
        );
        let t = parse(&out);
        assert!(t.banner.contains("stand-alone"));
        assert_eq!(t.answers.len(), 3);
        let set = t.answers[0].last().unwrap();
        assert_eq!(set.columns, ["a", "b"]);
        assert_eq!(
            set.rows,
            vec![
                vec![Some("1".into()), Some("x\ny".into())],
                vec![None, Some("only b".into())],
                vec![None, None],
            ]
        );
        assert!(t.answers[0].messages.is_empty());
        assert!(t.answers[1].result_sets.is_empty());
        assert_eq!(t.answers[2].errors().len(), 1);
        assert_eq!(t.after_last, "\n");
        assert!(t.fatal_lines().is_empty());
    }

    #[test]
    fn a_logged_statement_continues_on_tab_lines() {
        let out = format!(
            "{PROMPT}2026 UTC [7] ERROR:  boom\n2026 UTC [7] STATEMENT:  SELECT x\n\t----\n\
             \t FROM t;\n\t\n{PROMPT}"
        );
        let t = parse(&out);
        let a = &t.answers[0];
        assert!(a.result_sets.is_empty(), "{a:?}");
        assert_eq!(a.messages.len(), 2);
        assert!(a.messages[1].ends_with("\t FROM t;\n\t"));
        assert_eq!(a.errors(), ["2026 UTC [7] ERROR:  boom"]);
    }

    #[test]
    fn several_statements_give_several_result_sets() {
        let out = format!(
            "{PROMPT}\t 1: x{TYPE_INT}\t----\n\t 1: x = \"1\"{TYPE_INT}\t----\n\
             \t 1: y{TYPE_TEXT}\t----\n\t 1: y = \"z\"{TYPE_TEXT}\t----\n{PROMPT}"
        );
        let t = parse(&out);
        let a = &t.answers[0];
        assert_eq!(a.result_sets.len(), 2);
        assert_eq!(a.last().unwrap().columns, ["y"]);
        assert_eq!(a.last().unwrap().rows, vec![vec![Some("z".into())]]);
    }
}
