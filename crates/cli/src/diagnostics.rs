//! Planner problems as miette diagnostics: source snippet, label at the value, help.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use plan::{Problem, Problems, Severity};

/// One problem, carrying the manifest source for the snippet.
#[derive(Debug)]
struct ProblemDiagnostic<'a> {
    problem: &'a Problem,
    source: &'a NamedSource<String>,
}

impl std::fmt::Display for ProblemDiagnostic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.problem.kind, f)
    }
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
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.problem.span.fit(self.source.inner());
        let label = LabeledSpan::new(Some("here".to_owned()), span.offset, span.len);
        Some(Box::new(std::iter::once(label)))
    }
}

/// Renders every problem of a manifest as text (with ANSI colours if `color`).
/// Deterministic without colour: tests snapshot it.
pub fn render_problems(name: &str, source: &str, problems: &Problems, color: bool) -> String {
    let source = NamedSource::new(name, source.to_owned());
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for problem in &problems.0 {
        let diagnostic = ProblemDiagnostic {
            problem,
            source: &source,
        };
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &diagnostic);
        out.push('\n');
    }
    out
}
