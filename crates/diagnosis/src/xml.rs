//! Just enough XML for JUnit files: elements, attributes, text, CDATA,
//! the five named entities and numeric ones; comments, declarations and
//! processing instructions are skipped. No DTDs, so no entity expansion
//! attacks; nesting depth is capped.

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    /// `<name a="v">` (or `<name/>`, then `End` follows at once).
    Start(String, Vec<(String, String)>),
    /// `</name>`.
    End(String),
    /// Text or CDATA, entities decoded.
    Text(String),
}

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// Where and why the XML could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// A pull reader over a whole document.
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
    stack: Vec<String>,
    pending_end: Option<String>,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader { text, at: 0, stack: Vec::new(), pending_end: None }
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, XmlError> {
        Err(XmlError { at: self.at, what })
    }

    /// The next token; `None` at the end of the document.
    pub fn next_token(&mut self) -> Result<Option<Token>, XmlError> {
        if let Some(name) = self.pending_end.take() {
            return Ok(Some(Token::End(name)));
        }
        loop {
            let rest = &self.text[self.at..];
            if rest.is_empty() {
                return if self.stack.is_empty() { Ok(None) } else { self.fail("the document ends inside an element") };
            }
            if !rest.starts_with('<') {
                let end = rest.find('<').unwrap_or(rest.len());
                let raw = &rest[..end];
                self.at += end;
                if self.stack.is_empty() {
                    if raw.trim().is_empty() {
                        continue;
                    }
                    return self.fail("text outside the root element");
                }
                return Ok(Some(Token::Text(decode(raw).ok_or(XmlError { at: self.at, what: "a bad entity" })?)));
            }
            if let Some(skipped) = self.skip_markup(rest)? {
                self.at += skipped;
                continue;
            }
            if let Some(body) = rest.strip_prefix("<![CDATA[") {
                let Some(end) = body.find("]]>") else { return self.fail("an unclosed CDATA section") };
                self.at += 9 + end + 3;
                return Ok(Some(Token::Text(body[..end].to_string())));
            }
            return self.tag(rest).map(Some);
        }
    }

    /// Comments, `<?…?>` and `<!DOCTYPE…>`: how many bytes to skip, if the markup is one.
    fn skip_markup(&self, rest: &str) -> Result<Option<usize>, XmlError> {
        let (open, close) = if rest.starts_with("<!--") {
            ("<!--", "-->")
        } else if rest.starts_with("<?") {
            ("<?", "?>")
        } else if rest.starts_with("<!") && !rest.starts_with("<![CDATA[") {
            ("<!", ">")
        } else {
            return Ok(None);
        };
        match rest[open.len()..].find(close) {
            Some(end) => Ok(Some(open.len() + end + close.len())),
            None => self.fail("unclosed markup"),
        }
    }

    fn tag(&mut self, rest: &str) -> Result<Token, XmlError> {
        let Some(end) = find_tag_end(rest) else { return self.fail("an unclosed tag") };
        let inner = &rest[1..end];
        self.at += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim();
            return match self.stack.pop() {
                Some(open) if open == name => Ok(Token::End(open)),
                _ => self.fail("a closing tag that does not match"),
            };
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let name_end = inner.find(|c: char| c.is_whitespace()).unwrap_or(inner.len());
        let name = &inner[..name_end];
        if name.is_empty() {
            return self.fail("a tag without a name");
        }
        let attrs = attributes(&inner[name_end..]).ok_or(XmlError { at: self.at, what: "bad attributes" })?;
        if empty {
            self.pending_end = Some(name.to_string());
        } else if self.stack.len() >= MAX_DEPTH {
            return self.fail("elements nested too deep");
        } else {
            self.stack.push(name.to_string());
        }
        Ok(Token::Start(name.to_string(), attrs))
    }
}

/// The `>` that ends a tag, skipping any inside quoted attribute values.
fn find_tag_end(rest: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in rest.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

fn attributes(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        text = text.trim_start();
        if text.is_empty() {
            return Some(out);
        }
        let (name, rest) = text.split_once('=')?;
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = &rest[1..];
        let end = body.find(quote)?;
        out.push((name.trim().to_string(), decode(&body[..end])?));
        text = &body[end + 1..];
    }
}

/// Text with its entities decoded; `None` for an unknown or broken one.
fn decode(raw: &str) -> Option<String> {
    if !raw.contains('&') {
        return Some(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').filter(|&s| s <= 10)?;
        let entity = &after[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            e => {
                let code = match e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => e.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Result<Vec<Token>, XmlError> {
        let mut r = Reader::new(text);
        let mut out = Vec::new();
        while let Some(t) = r.next_token()? {
            out.push(t);
        }
        Ok(out)
    }

    #[test]
    fn elements_attributes_text_and_entities() {
        let t = tokens("<?xml version='1.0'?><!-- c --><a x=\"1 &gt; 0\" y='&#10;'><b/>t&amp;u<![CDATA[<raw>]]></a>")
            .expect("valid");
        assert_eq!(
            t,
            vec![
                Token::Start("a".into(), vec![("x".into(), "1 > 0".into()), ("y".into(), "\n".into())]),
                Token::Start("b".into(), vec![]),
                Token::End("b".into()),
                Token::Text("t&u".into()),
                Token::Text("<raw>".into()),
                Token::End("a".into()),
            ]
        );
    }

    #[test]
    fn broken_documents_are_errors() {
        for bad in ["<a>", "<a></b>", "<a x=1/>", "<a>&nope;</a>", "text", "<a><![CDATA[x</a>", "<a"] {
            assert!(tokens(bad).is_err(), "{bad}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(tokens(&deep).map_err(|e| e.what), Err("elements nested too deep"));
    }
}
