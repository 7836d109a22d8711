//! Tokens of the filter language, each with its byte offset so errors can point at it.

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// Column or label name: letters, digits, `_`, `.`, `@`, and an optional `[k]` suffix.
    Ident(String),
    Number(f64),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    DotDot,
    End,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
    pub len: usize,
}

/// A problem at a place in the query text.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryError {
    pub pos: usize,
    pub len: usize,
    pub message: String,
}

impl QueryError {
    pub fn at(pos: usize, len: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            pos,
            len: len.max(1),
            message: message.into(),
        }
    }

    /// The message with the query and a caret line under the offending token.
    pub fn render(&self, query: &str) -> String {
        let col = query[..self.pos.min(query.len())].chars().count();
        format!(
            "{}\n  {query}\n  {}{}",
            self.message,
            " ".repeat(col),
            "^".repeat(self.len)
        )
    }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '@'
}

pub fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let start = i;
        let push = |out: &mut Vec<Token>, tok, len| out.push(Token { tok, pos: start, len });
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => push(&mut out, Tok::LParen, 1),
            ')' => push(&mut out, Tok::RParen, 1),
            '[' => push(&mut out, Tok::LBracket, 1),
            ']' => push(&mut out, Tok::RBracket, 1),
            ',' => push(&mut out, Tok::Comma, 1),
            '.' if bytes.get(i + 1) == Some(&b'.') => {
                push(&mut out, Tok::DotDot, 2);
                i += 2;
                continue;
            }
            '=' | '!' | '<' | '>' => {
                let two = text.get(i..i + 2).unwrap_or("");
                let (op, len) = match two {
                    "==" => ("=", 2),
                    "!=" => ("!=", 2),
                    "<=" => ("<=", 2),
                    ">=" => (">=", 2),
                    "<>" => ("!=", 2),
                    _ => match c {
                        '=' => ("=", 1),
                        '<' => ("<", 1),
                        '>' => (">", 1),
                        _ => return Err(QueryError::at(i, 1, "unexpected '!': use != or not")),
                    },
                };
                push(&mut out, Tok::Op(op), len);
                i += len;
                continue;
            }
            '\'' | '"' => {
                let close = text[i + 1..]
                    .find(c)
                    .ok_or_else(|| QueryError::at(i, text.len() - i, "unterminated string"))?;
                let value = text[i + 1..i + 1 + close].to_string();
                push(&mut out, Tok::Str(value), close + 2);
                i += close + 2;
                continue;
            }
            _ if c.is_ascii_digit() || (c == '-' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit())) => {
                let mut j = i + 1;
                while j < bytes.len() {
                    let d = bytes[j] as char;
                    let exp_sign = (d == '-' || d == '+') && matches!(bytes[j - 1], b'e' | b'E');
                    let dot = d == '.' && bytes.get(j + 1) != Some(&b'.');
                    if d.is_ascii_digit() || dot || d == 'e' || d == 'E' || exp_sign {
                        j += 1;
                    } else {
                        break;
                    }
                }
                let n = text[i..j]
                    .parse::<f64>()
                    .map_err(|_| QueryError::at(i, j - i, format!("{:?} is not a number", &text[i..j])))?;
                push(&mut out, Tok::Number(n), j - i);
                i = j;
                continue;
            }
            _ if ident_char(c) => {
                let mut j = i;
                while j < bytes.len()
                    && (ident_char(bytes[j] as char) || (bytes[j] == b'.' && bytes.get(j + 1) != Some(&b'.')))
                {
                    j += 1;
                }
                // `pixel_spacing[1]`: an element of a vector column.
                if bytes.get(j) == Some(&b'[') {
                    if let Some(close) = text[j..].find(']') {
                        if text[j + 1..j + close].chars().all(|d| d.is_ascii_digit()) && close > 1 {
                            j += close + 1;
                        }
                    }
                }
                push(&mut out, Tok::Ident(text[i..j].to_string()), j - i);
                i = j;
                continue;
            }
            _ => return Err(QueryError::at(i, 1, format!("unexpected character {c:?}"))),
        }
        i += 1;
    }
    out.push(Token {
        tok: Tok::End,
        pos: text.len(),
        len: 1,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_positions() {
        let t = lex("slice_thickness <= 1.5 and lidc.nodule in [1, 2] or x in 1..3").unwrap();
        let toks: Vec<Tok> = t.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(toks[0], Tok::Ident("slice_thickness".into()));
        assert_eq!(toks[1], Tok::Op("<="));
        assert_eq!(toks[2], Tok::Number(1.5));
        assert_eq!(t[4].pos, 27);
        assert_eq!(toks[4], Tok::Ident("lidc.nodule".into()));
        assert!(toks.contains(&Tok::DotDot));
        assert_eq!(lex("pixel_spacing[1] > -2e-1").unwrap()[2].tok, Tok::Number(-0.2));
        assert_eq!(lex("a = 'x").unwrap_err().pos, 4);
        assert_eq!(lex("a ! b").unwrap_err().pos, 2);
    }
}
