//! Grammar (precedence low to high):
//! ```text
//! expr    := and ('or' and)*
//! and     := unary ('and' unary)*
//! unary   := 'not' unary | primary
//! primary := '(' expr ')' | 'true' | name test?
//! test    := op value | 'in' '[' value (',' value)* ']' | 'in' value '..' value
//!          | 'is' ('present' | 'absent' | 'unknown')
//! op      := '=' | '!=' | '<' | '<=' | '>' | '>='
//! value   := number | 'string' | true | false
//! ```
//! A bare name (no test) means `name = true` (boolean labels).

use super::lexer::{lex, QueryError, Tok, Token};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Text(String),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    Unknown,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Cmp(&'static str, Value),
    In(Vec<Value>),
    Range(Value, Value),
    Is(Presence),
}

/// A name as written, with its place in the query.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub text: String,
    pub pos: usize,
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    All,
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Atom(Name, Test),
}

/// Parentheses and `not` nest at most this deep (the parser, the evaluator and dropping the tree
/// recurse once per level; real queries nest a handful).
pub const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Open parentheses and `not`s around the current token.
    depth: usize,
}

fn keyword(tok: &Tok, word: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn next(&mut self) -> Token {
        let t = self.tokens[self.at].clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn error(&self, message: impl Into<String>) -> QueryError {
        let t = self.peek();
        let what = match &t.tok {
            Tok::End => "end of query".to_string(),
            _ => "this token".to_string(),
        };
        QueryError::at(t.pos, t.len, format!("{} (at {what})", message.into()))
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), QueryError> {
        if self.peek().tok == tok {
            self.next();
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while keyword(&self.peek().tok, "or") {
            self.next();
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        while keyword(&self.peek().tok, "and") {
            self.next();
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.depth > MAX_NESTING {
            return Err(self.error(format!(
                "parentheses and 'not' nest deeper than {MAX_NESTING} levels"
            )));
        }
        self.depth += 1;
        let e = if keyword(&self.peek().tok, "not") {
            self.next();
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        e
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::LParen => {
                self.next();
                let e = self.or()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(e)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => {
                self.next();
                Ok(Expr::All)
            }
            Tok::Ident(s)
                if ["and", "or", "in", "is"]
                    .iter()
                    .any(|k| s.eq_ignore_ascii_case(k)) =>
            {
                Err(self.error("expected a column or label name"))
            }
            Tok::Ident(s) => {
                self.next();
                let name = Name {
                    text: s.clone(),
                    pos: t.pos,
                    len: t.len,
                };
                let test = self.test()?;
                Ok(Expr::Atom(name, test))
            }
            _ => Err(self.error("expected a column or label name, 'not' or '('")),
        }
    }

    fn test(&mut self) -> Result<Test, QueryError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Op(op) => {
                self.next();
                Ok(Test::Cmp(op, self.value()?))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("in") => {
                self.next();
                if self.peek().tok == Tok::LBracket {
                    self.next();
                    let mut values = vec![self.value()?];
                    while self.peek().tok == Tok::Comma {
                        self.next();
                        values.push(self.value()?);
                    }
                    self.expect(Tok::RBracket, "',' or ']'")?;
                    Ok(Test::In(values))
                } else {
                    let lo = self.value()?;
                    self.expect(Tok::DotDot, "'..' of a range such as 1..2.5")?;
                    Ok(Test::Range(lo, self.value()?))
                }
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("is") => {
                self.next();
                let w = self.peek().clone();
                let p = match &w.tok {
                    Tok::Ident(x) if x.eq_ignore_ascii_case("present") => Presence::Present,
                    Tok::Ident(x) if x.eq_ignore_ascii_case("absent") => Presence::Absent,
                    Tok::Ident(x) if x.eq_ignore_ascii_case("unknown") => Presence::Unknown,
                    _ => return Err(self.error("expected present, absent or unknown")),
                };
                self.next();
                Ok(Test::Is(p))
            }
            _ => Ok(Test::Cmp("=", Value::Bool(true))),
        }
    }

    fn value(&mut self) -> Result<Value, QueryError> {
        let t = self.peek().clone();
        let v = match &t.tok {
            Tok::Number(n) => Value::Num(*n),
            Tok::Str(s) => Value::Text(s.clone()),
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            Tok::Ident(s) => {
                return Err(QueryError::at(
                    t.pos,
                    t.len,
                    format!("expected a value; quote text values: '{s}'"),
                ))
            }
            _ => return Err(self.error("expected a value (number, 'text', true or false)")),
        };
        self.next();
        Ok(v)
    }
}

/// Parses a filter; an empty filter selects everything.
pub fn parse(text: &str) -> Result<Expr, QueryError> {
    let tokens = lex(text)?;
    if tokens.len() == 1 {
        return Ok(Expr::All);
    }
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let e = p.or()?;
    if p.peek().tok != Tok::End {
        return Err(p.error("expected 'and', 'or' or the end of the query"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_errors() {
        let e = parse("a = 1 or b = 2 and not c").unwrap();
        match e {
            Expr::Or(_, right) => assert!(matches!(*right, Expr::And(_, _))),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("").unwrap(), Expr::All);
        let err = parse("a = 1 and and b = 2").unwrap_err();
        assert_eq!(err.pos, 10);
        let err = parse("(a = 1").unwrap_err();
        assert_eq!(err.pos, 6);
        let err = parse("modality = CT").unwrap_err();
        assert_eq!((err.pos, err.len), (11, 2));
        assert!(parse("x in [1, 2,]").is_err());
        assert!(matches!(
            parse("x in 1..2").unwrap(),
            Expr::Atom(_, Test::Range(_, _))
        ));
        assert!(matches!(
            parse("x is unknown").unwrap(),
            Expr::Atom(_, Test::Is(Presence::Unknown))
        ));
    }

    #[test]
    fn nesting_is_bounded_with_an_error_not_a_stack_overflow() {
        let nested = |n: usize| format!("{}modality = 'CT'{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nested(MAX_NESTING)).is_ok());
        for deep in [
            nested(100_000),
            format!("{}modality = 'CT'", "not ".repeat(100_000)),
        ] {
            let e = parse(&deep).unwrap_err();
            assert!(e.message.contains("nest deeper than 64 levels"), "{e:?}");
        }
    }
}
