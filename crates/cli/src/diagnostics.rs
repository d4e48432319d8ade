//! Planner problems as miette diagnostics: source snippet, label at the value, help.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use plan::{Problem, Problems, Severity};

/// Longest source line shown whole; longer lines are cut to a window around the
/// problem (or to their start), so a manifest with a 20 MB line cannot flood the
/// terminal.
const MAX_LINE: usize = 400;
/// Bytes shown on each side of a problem on a cut line.
const WINDOW_SIDE: usize = 150;

/// One problem, carrying the (possibly shortened) source for the snippet and the
/// problem's span in it.
#[derive(Debug)]
struct ProblemDiagnostic<'a> {
    problem: &'a Problem,
    source: NamedSource<String>,
    span: (usize, usize),
}

impl std::fmt::Display for ProblemDiagnostic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A message may quote the manifest (an unknown key): as long as the key.
        f.write_str(&clip(&self.problem.kind.to_string()))
    }
}

/// `text` if it is at most [`MAX_LINE`] bytes, else its start and end around a `…`.
fn clip(text: &str) -> String {
    if text.len() <= MAX_LINE {
        return text.to_owned();
    }
    let mut head = WINDOW_SIDE;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - WINDOW_SIDE;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &text[..head], &text[tail..])
}

impl std::error::Error for ProblemDiagnostic<'_> {}

impl Diagnostic for ProblemDiagnostic<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.problem.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(clip(&h.to_string())) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = LabeledSpan::new(Some("here".to_owned()), self.span.0, self.span.1);
        Some(Box::new(std::iter::once(label)))
    }
}

/// Renders every problem of a manifest as text (with ANSI colours if `color`).
/// Deterministic without colour: tests snapshot it.
pub fn render_problems(name: &str, source: &str, problems: &Problems, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for problem in &problems.0 {
        let span = problem.span.fit(source);
        let (text, span) = shorten(source, span.offset, span.len);
        let diagnostic = ProblemDiagnostic {
            problem,
            source: NamedSource::new(name, text),
            span,
        };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &diagnostic);
        out.push('\n');
    }
    out
}

/// `source` with every line longer than [`MAX_LINE`] cut: the line holding the span
/// (`offset`, `len`) to a window around it, the others to their start, each cut
/// marked with `…`. Lines stay lines, so line numbers hold. Returns the new text
/// and the span in it.
fn shorten(source: &str, offset: usize, len: usize) -> (String, (usize, usize)) {
    if source.lines().all(|l| l.len() <= MAX_LINE) {
        return (source.to_owned(), (offset, len));
    }
    let floor = |text: &str, mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut out = String::new();
    let mut span = (0, 0);
    let mut line_start = 0;
    for piece in source.split_inclusive('\n') {
        let line = piece.strip_suffix('\n').unwrap_or(piece);
        let newline = &piece[line.len()..];
        let line_end = line_start + line.len();
        let holds_span = (line_start..=line_end).contains(&offset);
        if line.len() <= MAX_LINE {
            if holds_span {
                span = (out.len() + offset - line_start, len);
            }
            out.push_str(piece);
        } else if holds_span {
            let at = offset - line_start;
            let from = floor(line, at.saturating_sub(WINDOW_SIDE));
            let to = floor(line, at + len.min(WINDOW_SIDE) + WINDOW_SIDE);
            if from > 0 {
                out.push('…');
            }
            span = (out.len() + at - from, len.min(to.saturating_sub(at)));
            out.push_str(&line[from..to]);
            if to < line.len() {
                out.push('…');
            }
            out.push_str(newline);
        } else {
            out.push_str(&line[..floor(line, MAX_LINE)]);
            out.push('…');
            out.push_str(newline);
        }
        line_start += piece.len();
    }
    (out, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sources_are_left_alone() {
        let (text, span) = shorten("a: 1\nb: 2\n", 6, 1);
        assert_eq!((text.as_str(), span), ("a: 1\nb: 2\n", (6, 1)));
    }

    #[test]
    fn a_long_line_is_cut_to_a_window_around_the_problem() {
        let long = format!("key: {}BAD{}", "x".repeat(10_000), "y".repeat(10_000));
        let source = format!("first: 1\n{long}\nlast: {}\n", "z".repeat(5_000));
        let offset = source.find("BAD").unwrap();
        let (text, (at, len)) = shorten(&source, offset, 3);
        assert!(text.len() < 1_500, "{}", text.len());
        assert_eq!(&text[at..at + len], "BAD");
        assert_eq!(text.lines().count(), 3, "line numbers hold");
        assert!(text.lines().nth(1).unwrap().starts_with('…'));
        assert!(text.lines().nth(2).unwrap().ends_with('…'));
    }

    #[test]
    fn long_messages_keep_their_ends() {
        let message = format!(
            "unknown field `{}`, expected one of cpus",
            "k".repeat(5_000)
        );
        let clipped = clip(&message);
        assert!(clipped.len() < 2 * WINDOW_SIDE + 4);
        assert!(clipped.starts_with("unknown field `k") && clipped.ends_with("one of cpus"));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let long = "é".repeat(1_000);
        let source = format!("{long}\n");
        let (text, (at, len)) = shorten(&source, 600, 2);
        assert!(text.is_char_boundary(at) && text.is_char_boundary(at + len));
    }
}
