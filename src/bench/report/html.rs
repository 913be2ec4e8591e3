//! The report page: one self-contained HTML file, each chart an inline
//! `<svg id=...>` with a `<title>`, each followed by a table of the
//! figures it draws (the same numbers `report.json` carries), and a list
//! of the benchmarks left out, with why.

use super::charts::{self, Chart, ChartError, short};
use super::{Report, Runs};

/// HTML-escaped text.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart as the page inlines it: plotters writes a bare `<svg ...>`;
/// the page names it (`id`, `role`, a `<title>`) so that readers and tests
/// can find it.
fn figure(chart: &Chart, note: &str, table: &str) -> String {
    let svg = chart.svg.replacen(
        "<svg ",
        &format!(
            "<svg id=\"{}\" class=\"chart\" role=\"img\" aria-label=\"{}\" ",
            chart.id,
            esc(&chart.title)
        ),
        1,
    );
    // The title goes right after the opening tag, as SVG wants it.
    let svg = match svg.find('>') {
        Some(end) => format!(
            "{}<title>{}</title>{}",
            &svg[..=end],
            esc(&chart.title),
            &svg[end + 1..]
        ),
        None => svg,
    };
    format!(
        "<section>\n<h2>{}</h2>\n<p>{}</p>\n{svg}\n{table}</section>\n",
        esc(&chart.title),
        esc(note)
    )
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table>\n<tr>");
    for h in head {
        t += &format!("<th>{}</th>", esc(h));
    }
    t += "</tr>\n";
    for r in rows {
        t += "<tr>";
        for (i, c) in r.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"num\"" };
            t += &format!("<td{class}>{}</td>", esc(c));
        }
        t += "</tr>\n";
    }
    t + "</table>\n"
}

const RUNS_HEAD: &[&str] = &["", "runs", "median ms", "min ms", "max ms"];

fn runs_row(name: &str, r: &Runs) -> Vec<String> {
    vec![
        name.to_string(),
        r.runs.to_string(),
        short(r.median_ms),
        short(r.min_ms),
        short(r.max_ms),
    ]
}

/// A distributions chart and its table, from `(label, runs)` rows.
fn runs_figure(
    id: &'static str,
    title: &str,
    note: &str,
    rows: &[(&str, &Runs)],
) -> Result<String, ChartError> {
    let chart = charts::distributions(
        id,
        title,
        "milliseconds (each dot one run)",
        &rows
            .iter()
            .map(|(name, r)| (name.to_string(), r.samples_ms.clone()))
            .collect::<Vec<_>>(),
    )?;
    let t = table(
        RUNS_HEAD,
        &rows.iter().map(|(n, r)| runs_row(n, r)).collect::<Vec<_>>(),
    );
    Ok(figure(&chart, note, &t))
}

pub fn page(r: &Report) -> Result<String, ChartError> {
    let mut body = String::new();

    let kib = |b: u64| b as f64 / 1024.0;
    let size = charts::bars(
        "chart-size",
        "Image size by part",
        "KiB in the image file",
        &r.size_by_part
            .iter()
            .map(|p| (p.part.clone(), kib(p.bytes)))
            .collect::<Vec<_>>(),
        |v| format!("{} KiB", short(v)),
    )?;
    let rows: Vec<Vec<String>> = r
        .size_by_part
        .iter()
        .map(|p| vec![p.part.clone(), p.bytes.to_string()])
        .collect();
    body += &figure(
        &size,
        &format!(
            "{} bytes in all, as `pgkraft inspect` splits them; the rootfs archive's compressed \
             bytes are shared among its directories by their files' sizes.",
            r.image_bytes
        ),
        &table(&["part", "bytes"], &rows),
    );

    if let Some(t) = &r.timeline {
        let chart = charts::spans(
            "chart-timeline",
            "Boot timeline by phase",
            "milliseconds since the runner started (median over the runs)",
            &t.phases
                .iter()
                .map(|p| (p.phase.clone(), p.start_ms, p.end_ms))
                .collect::<Vec<_>>(),
        )?;
        let rows: Vec<Vec<String>> = t
            .phases
            .iter()
            .map(|p| vec![p.phase.clone(), short(p.start_ms), short(p.end_ms)])
            .collect();
        body += &figure(
            &chart,
            &format!(
                "When each phase was reached, median of {} runs ({}).",
                t.runs, t.source
            ),
            &table(&["phase", "from ms", "reached ms"], &rows),
        );
    }

    if let Some(b) = &r.boot {
        body += &runs_figure(
            "chart-boot",
            "Boot to exit: pgkraft vs QEMU microvm",
            &format!(
                "Each a fresh process, alternating; QEMU microvm / pgkraft (medians): {:.2}x.",
                b.qemu_over_pgkraft_ratio
            ),
            &[
                ("pgkraft run (process)", &b.pgkraft_run_process),
                (
                    "pgkraft runner start -> exit",
                    &b.pgkraft_runner_start_to_exit,
                ),
                ("qemu microvm (process)", &b.qemu_microvm_process),
            ],
        )?;
    }

    if let Some(f) = &r.first_answer {
        body += &runs_figure(
            "chart-first-answer",
            "First answer: pgkraft vs native postgres --single",
            &format!(
                "{:?}, alternating; guest / native (medians): {:.2}x. Guest memory at exit: {} \
                 bytes holding data, {} bytes resident.",
                f.query,
                f.guest_over_native_ratio,
                f.guest_memory_data_bytes,
                f.guest_memory_resident_bytes
            ),
            &[
                (
                    "pgkraft: boot -> first answer",
                    &f.guest_boot_to_first_answer,
                ),
                ("pgkraft: boot -> main", &f.guest_boot_to_main),
                (
                    "native postgres --single: spawn -> answer",
                    &f.native_spawn_to_first_answer,
                ),
            ],
        )?;
    }

    if let Some(s) = &r.resume {
        let mut rows: Vec<(&str, &Runs)> = vec![
            (
                "runner: cold boot -> first answer",
                &s.cold_boot_to_first_answer,
            ),
            (
                "runner: resume -> first sign of life",
                &s.resume_to_first_sign_of_life,
            ),
            ("runner: resume -> first answer", &s.resume_to_first_answer),
            (
                "runner: resume -> answer, --prefault read",
                &s.resume_to_first_answer_prefault_read,
            ),
            (
                "pgkraft resume (process) -> answer",
                &s.pgkraft_resume_process_to_answer,
            ),
        ];
        if let Some(q) = &s.qemu_incoming_process_to_answer {
            rows.push(("qemu -incoming (process) -> answer", q));
        }
        let qemu = match (&s.qemu_over_pgkraft_resume_ratio, &s.qemu_note) {
            (Some(x), _) => format!("QEMU / pgkraft resume process (medians): {x:.2}x."),
            (None, Some(why)) => format!("QEMU's resume was not measured: {why}."),
            (None, None) => String::new(),
        };
        body += &runs_figure(
            "chart-resume",
            "Resume vs cold boot, and QEMU's own resume",
            &format!(
                "A snapshot at the first prompt ({} bytes of data) answering {:?}; cold / resume \
                 (first answer, medians): {:.2}x; the learning resume took {} ms. {qemu} \
                 Integrity check: {} ms on first use, {} ms cached.",
                s.snapshot_data_bytes,
                s.query,
                s.cold_over_resume_ratio,
                short(s.learning_resume_to_first_answer_ms),
                short(s.verify_first_use_ms),
                short(s.verify_cached_ms)
            ),
            &rows,
        )?;
    }

    if let Some(d) = &r.density {
        let chart = charts::distributions(
            "chart-density",
            &format!("Density: memory per instance, {} instances", d.instances),
            "KiB per instance (each dot one instance)",
            &[
                ("PSS".to_string(), &d.pss),
                ("private".to_string(), &d.private),
                ("RSS".to_string(), &d.rss),
            ]
            .map(|(n, k)| (n, k.per_instance_kib.iter().map(|&v| v as f64).collect())),
        )?;
        let row = |n: &str, k: &super::InstancesKib| {
            vec![
                n.to_string(),
                k.median_kib.to_string(),
                k.min_kib.to_string(),
                k.max_kib.to_string(),
                k.total_kib.to_string(),
            ]
        };
        body += &figure(
            &chart,
            &format!(
                "{} resumed instances of one snapshot ({} MiB guests, --prefault {}), idle after \
                 one answer each; MemAvailable fell {} KiB per instance; all started and \
                 answered in {} ms; {} of {} stopped cleanly.",
                d.instances,
                d.memory_mib,
                d.prefault,
                d.mem_available_drop_per_instance_kib,
                short(d.start_all_ms),
                d.stopped_cleanly,
                d.instances
            ),
            &table(
                &["", "median KiB", "min KiB", "max KiB", "total KiB"],
                &[
                    row("PSS", &d.pss),
                    row("private", &d.private),
                    row("RSS", &d.rss),
                ],
            ),
        );
    }

    if !r.omitted.is_empty() {
        body += "<section id=\"omitted\">\n<h2>Not measured for this image</h2>\n<ul>\n";
        for o in &r.omitted {
            body += &format!(
                "<li><strong>{}</strong>: {}</li>\n",
                esc(o.benchmark),
                esc(&o.why)
            );
        }
        body += "</ul>\n</section>\n";
    }

    let name = r
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>pgkraft bench report: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>pgkraft bench report: {name}</h1>\n<p>{} ({} bytes), {} runs per measurement, \
         pgkraft {}. Every figure is also in report.json.</p>\n{body}</body>\n</html>\n",
        esc(&r.image.display().to_string()),
        r.image_bytes,
        r.runs,
        r.pgkraft_version,
        name = esc(&name),
    ))
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}\
table{border-collapse:collapse;margin:.5em 0 2em}td,th{border:1px solid #ccc;padding:2px 8px}\
td.num{text-align:right;font-variant-numeric:tabular-nums}svg.chart{display:block}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_named_and_titled_and_text_is_escaped() {
        let chart = Chart {
            id: "chart-x",
            title: "a < b".into(),
            svg: "<svg width=\"1\" height=\"1\"><rect/></svg>".into(),
        };
        let html = figure(&chart, "n & m", "");
        assert!(
            html.contains(
                "<svg id=\"chart-x\" class=\"chart\" role=\"img\" aria-label=\"a &lt; b\" \
                 width=\"1\" height=\"1\"><title>a &lt; b</title><rect/></svg>"
            ),
            "{html}"
        );
        assert!(html.contains("<p>n &amp; m</p>"), "{html}");
    }
}
