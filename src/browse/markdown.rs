//! Markdown (release notes, product notes) to HTML that is safe to put in the catalog
//! page: raw HTML in the source is shown as text, and links and images keep only
//! `http:`, `https:`, `mailto:` or in-page addresses.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Whether a link target may appear in the page (no `javascript:` or `data:` URLs).
fn safe_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon after a slash, `?` or `#` is inside a path, not a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Renders Markdown to HTML, raw HTML escaped and unsafe link targets dropped.
pub fn to_html(markdown: &str) -> String {
    let events =
        Parser::new_ext(markdown, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|event| match event {
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            Event::Start(Tag::Link { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
                Event::Start(Tag::Link { link_type, dest_url: CowStr::Borrowed("#"), title, id })
            }
            Event::Start(Tag::Image { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
                Event::Start(Tag::Image { link_type, dest_url: CowStr::Borrowed("#"), title, id })
            }
            other => other,
        });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_lists_and_code_render() {
        let html =
            to_html("# debian 12.8.0\n\n## Security\n\n- **CFSA-1** (Important): fix — CVE-2026-1\n\n`sha256:ab`\n");
        assert!(html.contains("<h1>debian 12.8.0</h1>"), "{html}");
        assert!(html.contains("<li><strong>CFSA-1</strong> (Important): fix — CVE-2026-1</li>"), "{html}");
        assert!(html.contains("<code>sha256:ab</code>"), "{html}");
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = to_html("Hello <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n");
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    }

    #[test]
    fn only_safe_link_targets_are_kept() {
        let html = to_html(
            "[a](javascript:alert(1)) [b](JavaScript:x) [c](data:text/html,x) [d](https://example.com/a:b) [e](#top) [f](docs/x:y) ![g](data:image/png;base64,AA)",
        );
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains(r#"href="https://example.com/a:b""#), "{html}");
        assert!(html.contains(r##"href="#top""##), "{html}");
        assert!(html.contains(r#"href="docs/x:y""#), "{html}");
    }
}
