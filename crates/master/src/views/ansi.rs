//! ANSI colour sequences in log lines, as HTML: SGR colours and bold become
//! `<span class="ansi-…">`; every other escape sequence is dropped; all text
//! is escaped. The output is safe to put in a page as it is.

/// Escapes text for HTML.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
}

impl Style {
    fn classes(&self) -> String {
        let mut c = Vec::new();
        if self.bold {
            c.push("ansi-bold".to_string());
        }
        if let Some(f) = self.fg {
            c.push(format!("ansi-fg{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("ansi-bg{b}"));
        }
        c.join(" ")
    }

    fn apply(&mut self, params: &str) {
        let codes: Vec<u16> =
            if params.is_empty() { vec![0] } else { params.split(';').map(|p| p.parse().unwrap_or(0)).collect() };
        let mut i = 0;
        while i < codes.len() {
            match codes[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                c @ 30..=37 => self.fg = Some((c - 30) as u8),
                c @ 90..=97 => self.fg = Some((c - 90 + 8) as u8),
                39 => self.fg = None,
                c @ 40..=47 => self.bg = Some((c - 40) as u8),
                c @ 100..=107 => self.bg = Some((c - 100 + 8) as u8),
                49 => self.bg = None,
                // 256-colour and true-colour forms: skip their arguments.
                38 | 48 => {
                    i += match codes.get(i + 1) {
                        Some(5) => 2,
                        Some(2) => 4,
                        _ => 0,
                    };
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// One line of log text as HTML.
pub fn to_html(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut style = Style::default();
    let mut open = false;
    let mut rest = line;
    while let Some(pos) = rest.find('\x1b') {
        escape(&rest[..pos], &mut out);
        let after = &rest[pos + 1..];
        if let Some(csi) = after.strip_prefix('[') {
            // Parameters, then one final byte in @..~.
            let end = csi.find(|c: char| ('@'..='~').contains(&c));
            match end {
                Some(e) => {
                    if csi.as_bytes()[e] == b'm' {
                        style.apply(&csi[..e]);
                        if open {
                            out.push_str("</span>");
                            open = false;
                        }
                        if style != Style::default() {
                            out.push_str(&format!("<span class=\"{}\">", style.classes()));
                            open = true;
                        }
                    }
                    rest = &csi[e + 1..];
                }
                None => rest = "",
            }
        } else if let Some(osc) = after.strip_prefix(']') {
            // A terminal title and the like: up to BEL or ESC \.
            rest = match osc.find(['\x07', '\x1b']) {
                Some(e) if osc.as_bytes()[e] == 0x07 => &osc[e + 1..],
                Some(e) => osc[e + 1..].strip_prefix('\\').unwrap_or(&osc[e + 1..]),
                None => "",
            };
        } else {
            // A lone escape or another kind of sequence: drop the escape.
            rest = after;
        }
    }
    escape(rest, &mut out);
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_text_is_escaped() {
        assert_eq!(to_html("plain <b> & \"q\""), "plain &lt;b&gt; &amp; &quot;q&quot;");
        assert_eq!(
            to_html("\x1b[1;31mFAIL\x1b[0m: test_os"),
            "<span class=\"ansi-bold ansi-fg1\">FAIL</span>: test_os"
        );
        assert_eq!(to_html("\x1b[32mok\x1b[39m done"), "<span class=\"ansi-fg2\">ok</span> done");
        assert_eq!(to_html("\x1b[38;5;208mamber\x1b[m"), "amber");
        assert_eq!(to_html("\x1b[2Kcleared\x1b]0;title\x07!"), "cleared!");
        assert_eq!(to_html("\x1b[31m<script>"), "<span class=\"ansi-fg1\">&lt;script&gt;</span>");
        assert_eq!(to_html("cut \x1b[3"), "cut ");
    }
}
